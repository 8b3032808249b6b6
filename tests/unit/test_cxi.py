"""CXI reader and writer: the real PETRA III file, round trips, conventions, bad input."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptychompi.errors import DataError
from ptychompi.io.cxi import CXIScan, _runs, read_cxi, write_cxi
from ptychompi.model.geometry import joules_from_kev, wavelength_from_kev

BAD_PIXELS = {(17, 39), (21, 76), (62, 9), (76, 23), (85, 81)}


@pytest.fixture(scope="module")
def petra(shared_data: Path) -> Path:
    return shared_data / "petra3-p25-nearfield" / "PETRAIII_P25_Near_Field_Ptycho.cxi"


def test_petra_metadata(petra: Path) -> None:
    with read_cxi(petra) as scan:
        assert isinstance(scan, CXIScan)
        assert scan.n_frames == 200
        assert scan.frame_shape == (100, 100)
        assert np.dtype(scan.dtype) == np.int32
        assert scan.compression == "gzip"
        assert scan.geometry.wavelength_m == pytest.approx(9.79e-11, rel=1e-3)
        assert scan.geometry.distance_m == pytest.approx(1.12, rel=1e-6)
        assert scan.geometry.detector_pixel_m == pytest.approx(55e-6, rel=1e-6)
        assert scan.mask is not None and scan.mask.dtype == bool
        assert {tuple(int(v) for v in rc) for rc in np.argwhere(~scan.mask)} == BAD_PIXELS
        assert scan.illumination is None


def test_petra_positions_rows_are_y_cols_are_x(petra: Path) -> None:
    with h5py.File(petra, "r") as f:
        t = f["/entry_1/sample_1/geometry_1/translation"][()].astype(np.float64)
    scan = read_cxi(petra)
    assert scan.positions_m.shape == (200, 2)
    np.testing.assert_array_equal(scan.positions_m[:, 0], t[:, 1])
    np.testing.assert_array_equal(scan.positions_m[:, 1], t[:, 0])


@pytest.mark.parametrize("indices", [
    [5, 3, 3, 199, 0, 26, 27, 28, 100],  # unsorted, repeated, across chunk boundaries
    list(range(20, 80)),                  # one contiguous run spanning several chunks
    [199, 0],
    [7, 7, 7],
])
def test_petra_subset_reads_match_h5py(petra: Path, indices: list[int]) -> None:
    with h5py.File(petra, "r") as f:
        ds = f["/entry_1/instrument_1/detector_1/data"]
        expect = np.stack([ds[i] for i in indices]).astype(np.float32)
    with read_cxi(petra) as scan:
        got = scan.read(indices)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expect)


def test_petra_out_of_range_read(petra: Path) -> None:
    with read_cxi(petra) as scan, pytest.raises(DataError, match="out of range"):
        scan.read([0, 200])


def test_scan_pickles_after_read(petra: Path) -> None:
    scan = read_cxi(petra)
    first = scan.read([3])
    clone = pickle.loads(pickle.dumps(scan))
    np.testing.assert_array_equal(clone.read([3]), first)
    scan.close()
    clone.close()


def test_runs_are_contiguous_slices() -> None:
    idx = np.array([0, 1, 2, 5, 6, 40, 41, 90])
    # chunk of 1 frame along the scan axis: only consecutive indices share a read
    assert _runs(idx, 1, 100) == [(0, 3), (5, 7), (40, 42), (90, 91)]
    # chunks of 25 frames: indices in the same chunk are read as one span
    assert _runs(idx, 25, 100) == [(0, 7), (40, 42), (90, 91)]
    # a run never exceeds the span cap: each index is read alone if one frame is huge
    assert _runs(np.array([0, 1]), 1, 1 << 40) == [(0, 1), (1, 2)]


def _example(n: int = 7, m: int = 16, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    mask = np.ones((m, m), bool)
    mask[2, 3] = mask[10, 0] = False
    return dict(
        frames=rng.poisson(50.0, (n, m, m)).astype(np.uint16),
        positions_m=rng.uniform(-5e-6, 5e-6, (n, 2)),
        mask=mask,
        illumination=(rng.normal(size=(2, m, m)) + 1j * rng.normal(size=(2, m, m))
                      ).astype(np.complex64),
    )


@pytest.mark.parametrize("compression", ["gzip", "lz4", None])
def test_write_read_round_trip(tmp_path: Path, compression: str | None) -> None:
    ex = _example()
    energy_j = joules_from_kev(9.1)
    out = tmp_path / "sub" / "scan.cxi"
    ret = write_cxi(out, ex["frames"], ex["positions_m"], energy_j=energy_j, distance_m=3.5,
                    pixel_size_m=172e-6, mask=ex["mask"], illumination=ex["illumination"],
                    compression=compression)
    assert ret == str(out)
    assert not Path(str(out) + ".tmp").exists()
    with h5py.File(out, "r") as f:
        assert int(f["cxi_version"][()]) == 160
        assert int(f["number_of_entries"][()]) == 1
        assert f["/entry_1/data_1"].get("data", getlink=True).path == \
            "/entry_1/instrument_1/detector_1/data"
        assert f["/entry_1/data_1"].get("translation", getlink=True).path == \
            "/entry_1/sample_1/geometry_1/translation"
        bits = f["/entry_1/instrument_1/detector_1/mask"][()]
        assert bits.dtype == np.uint32 and bits[2, 3] == 1 and bits[0, 0] == 0
    with read_cxi(out) as scan:
        assert scan.compression == (compression or "none")
        assert scan.n_frames == 7 and scan.frame_shape == (16, 16)
        np.testing.assert_array_equal(scan.read(np.arange(7)), ex["frames"].astype(np.float32))
        np.testing.assert_allclose(scan.positions_m, ex["positions_m"], rtol=0, atol=1e-20)
        np.testing.assert_array_equal(scan.mask, ex["mask"])
        np.testing.assert_array_equal(scan.illumination, ex["illumination"])
        assert scan.geometry.wavelength_m == pytest.approx(wavelength_from_kev(9.1), rel=1e-12)
        assert scan.metadata["energy_j"] == pytest.approx(energy_j, rel=1e-12)
        assert scan.geometry.distance_m == pytest.approx(3.5)
        assert scan.geometry.detector_pixel_m == pytest.approx(172e-6)


def test_write_with_wavelength_only(tmp_path: Path) -> None:
    ex = _example()
    out = write_cxi(tmp_path / "w.cxi", ex["frames"], ex["positions_m"], wavelength_m=1e-10,
                    distance_m=1.0, pixel_size_m=75e-6)
    scan = read_cxi(out)
    assert scan.geometry.wavelength_m == pytest.approx(1e-10, rel=1e-12)
    assert scan.mask is None and scan.illumination is None


def _overwrite(path: Path, name: str, data: np.ndarray) -> None:
    with h5py.File(path, "a") as f:
        del f[name]
        f[name] = data


def test_basis_vectors_flip_transpose_and_storage(tmp_path: Path) -> None:
    ex = _example()
    pos = ex["positions_m"]
    p = 75e-6
    path = tmp_path / "b.cxi"
    write_cxi(path, ex["frames"], pos, energy_j=1e-15, distance_m=1.0, pixel_size_m=p)
    bv = "/entry_1/instrument_1/detector_1/basis_vectors"
    tr = "/entry_1/sample_1/geometry_1/translation"
    with h5py.File(path, "r") as f:
        t = f[tr][()]
        np.testing.assert_allclose(f[bv][()], [[0, -p, 0], [-p, 0, 0]])
    np.testing.assert_allclose(t[:, 0], pos[:, 1], atol=1e-20)  # x = col
    np.testing.assert_allclose(t[:, 1], pos[:, 0], atol=1e-20)  # y = row
    np.testing.assert_array_equal(t[:, 2], 0)

    # the same vectors stored as (3, 2), as in the PETRA III file
    _overwrite(path, bv, np.array([[0, -p], [-p, 0], [0, 0]]))
    np.testing.assert_allclose(read_cxi(path).positions_m, pos, atol=1e-20)
    # rows along +y: the row axis flips sign
    _overwrite(path, bv, np.array([[0, p, 0], [-p, 0, 0]]))
    got = read_cxi(path).positions_m
    np.testing.assert_allclose(got[:, 0], -pos[:, 0], atol=1e-20)
    np.testing.assert_allclose(got[:, 1], pos[:, 1], atol=1e-20)
    # transposed: rows along -x, columns along -y
    _overwrite(path, bv, np.array([[-p, 0, 0], [0, -p, 0]]))
    got = read_cxi(path).positions_m
    np.testing.assert_allclose(got, pos[:, ::-1], atol=1e-20)
    # no basis vectors at all means the default
    with h5py.File(path, "a") as f:
        del f[bv]
    np.testing.assert_allclose(read_cxi(path).positions_m, pos, atol=1e-20)

    # writing with a non-default basis round-trips too
    flipped = np.array([[0, p, 0], [p, 0, 0]])
    path2 = write_cxi(tmp_path / "b2.cxi", ex["frames"], pos, energy_j=1e-15,
                      distance_m=1.0, pixel_size_m=p, basis_vectors=flipped)
    np.testing.assert_allclose(read_cxi(path2).positions_m, pos, atol=1e-20)


def _assert_one_line(exc: pytest.ExceptionInfo, path: Path) -> None:
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(path) in msg


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.cxi"
    with pytest.raises(DataError, match="no such file") as exc:
        read_cxi(path)
    _assert_one_line(exc, path)


def test_text_file_is_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "notes.cxi"
    path.write_text("this is not HDF5\n")
    with pytest.raises(DataError, match="not an HDF5 file") as exc:
        read_cxi(path)
    _assert_one_line(exc, path)


def test_missing_data_dataset(tmp_path: Path) -> None:
    path = tmp_path / "empty.cxi"
    with h5py.File(path, "w") as f:
        f.create_group("/entry_1/instrument_1/detector_1")
        f["/entry_1/sample_1/geometry_1/translation"] = np.zeros((3, 3))
    with pytest.raises(DataError, match="detector_1/data") as exc:
        read_cxi(path)
    _assert_one_line(exc, path)


def test_dangling_soft_link_counts_as_missing(tmp_path: Path) -> None:
    path = tmp_path / "dangling.cxi"
    with h5py.File(path, "w") as f:
        f["/entry_1/data_1/data"] = h5py.SoftLink("/nowhere")
    with pytest.raises(DataError, match="no frames") as exc:
        read_cxi(path)
    _assert_one_line(exc, path)


def test_frames_not_3d(tmp_path: Path) -> None:
    path = tmp_path / "flat.cxi"
    with h5py.File(path, "w") as f:
        f["/entry_1/instrument_1/detector_1/data"] = np.zeros((4, 16))
        f["/entry_1/sample_1/geometry_1/translation"] = np.zeros((4, 3))
    with pytest.raises(DataError, match="3-D") as exc:
        read_cxi(path)
    _assert_one_line(exc, path)


def test_frames_translations_length_mismatch(tmp_path: Path) -> None:
    ex = _example()
    path = write_cxi(tmp_path / "mis.cxi", ex["frames"], ex["positions_m"], energy_j=1e-15,
                     distance_m=1.0, pixel_size_m=75e-6)
    _overwrite(Path(path), "/entry_1/sample_1/geometry_1/translation", np.zeros((5, 3)))
    with pytest.raises(DataError, match="7 frames .* 5 translations") as exc:
        read_cxi(path)
    _assert_one_line(exc, Path(path))


def test_mask_shape_mismatch(tmp_path: Path) -> None:
    ex = _example()
    path = write_cxi(tmp_path / "m.cxi", ex["frames"], ex["positions_m"], energy_j=1e-15,
                     distance_m=1.0, pixel_size_m=75e-6)
    with h5py.File(path, "a") as f:
        f["/entry_1/instrument_1/detector_1/mask"] = np.zeros((4, 4), np.uint32)
    with pytest.raises(DataError, match="mask shape") as exc:
        read_cxi(path)
    _assert_one_line(exc, Path(path))


def test_missing_translation(tmp_path: Path) -> None:
    path = tmp_path / "notrans.cxi"
    with h5py.File(path, "w") as f:
        f["/entry_1/instrument_1/detector_1/data"] = np.zeros((4, 8, 8))
    with pytest.raises(DataError, match="translation") as exc:
        read_cxi(path)
    _assert_one_line(exc, path)


def test_write_rejects_mismatch(tmp_path: Path) -> None:
    ex = _example()
    with pytest.raises(DataError, match="positions"):
        write_cxi(tmp_path / "x.cxi", ex["frames"], ex["positions_m"][:3], energy_j=1e-15,
                  distance_m=1.0, pixel_size_m=75e-6)
    assert not (tmp_path / "x.cxi").exists()
    with pytest.raises(DataError, match="mask shape"):
        write_cxi(tmp_path / "y.cxi", ex["frames"], ex["positions_m"], energy_j=1e-15,
                  distance_m=1.0, pixel_size_m=75e-6, mask=np.ones((3, 3), bool))
    assert not (tmp_path / "y.cxi").exists() and not (tmp_path / "y.cxi.tmp").exists()
