"""Tests for the APS layout reader/writer and the scan position generators."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptychompi.config import DataConfig
from ptychompi.data.scan import ScanGeometry
from ptychompi.errors import ConfigError, DataError
from ptychompi.io.aps import (
    APSScan,
    mda_positions,
    open_aps,
    raster_positions,
    read_position_file,
    resolve_pattern,
    spiral_positions,
    write_aps,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SCAN235 = DATA / "aps-scan235-truncated" / "test235_truncated.npz"
XFM = DATA / "mda" / "xrfmaps_2ide_2xfm_0011.mda"

PATTERN = "scan152_data_%06d.h5"


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    rng = np.random.default_rng(152)
    return rng.poisson(rng.uniform(0, 50, size=(12, 32, 32))).astype(np.int32)


def _cfg(directory: Path, **kw) -> DataConfig:
    kw.setdefault("path", str(directory / PATTERN))
    kw.setdefault("format", "aps")
    kw.setdefault("scan_dims", [3, 4])
    kw.setdefault("step_m", [1e-7, 2e-7])
    return DataConfig(**kw)


@pytest.mark.parametrize("compression", ["none", "lz4", "bitshuffle", "zlib"])
def test_round_trip_each_compression(tmp_path, frames, compression):
    paths = write_aps(tmp_path, PATTERN, frames, frames_per_file=4, compression=compression)
    assert [os.path.basename(p) for p in paths] == [PATTERN % i for i in (1, 2, 3)]
    with h5py.File(paths[0]) as f:
        plist = f["/entry/data/data"].id.get_create_plist()
        filters = {plist.get_filter(i)[0] for i in range(plist.get_nfilters())}
    expected_filter = {"none": None, "lz4": 32004, "bitshuffle": 32008, "zlib": 1}[compression]
    assert (expected_filter in filters) if expected_filter else not filters
    scan = open_aps(_cfg(tmp_path))
    assert isinstance(scan, APSScan)
    assert scan.n_frames == 12 and scan.frame_shape == (32, 32)
    assert scan.frames_per_file == 4 and scan.n_files == 3
    assert scan.compression == compression
    assert scan.dtype == np.int32
    out = scan.read(np.arange(12))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, frames)


def test_subset_reads_unsorted_and_repeated(tmp_path, frames):
    write_aps(tmp_path, PATTERN, frames, frames_per_file=4, compression="lz4")
    scan = open_aps(_cfg(tmp_path))
    idx = [11, 0, 5, 5, 4, 3, 7, 0, 9]
    np.testing.assert_array_equal(scan.read(idx), frames[idx])
    np.testing.assert_array_equal(scan.read([6]), frames[[6]])
    assert scan.read([]).shape == (0, 32, 32)


def test_rank_subset_opens_only_its_files(tmp_path, frames):
    paths = write_aps(tmp_path, PATTERN, frames, frames_per_file=4, compression="lz4")
    scan = open_aps(_cfg(tmp_path))
    os.remove(paths[1])  # frames 4..7
    idx = [0, 3, 8, 11, 2]
    np.testing.assert_array_equal(scan.read(idx), frames[idx])
    with pytest.raises(DataError, match=PATTERN % 2):
        scan.read([1, 6])
    # a missing middle file does not change the frame count found from the files
    again = open_aps(_cfg(tmp_path, scan_dims=None, positions="spiral"))
    assert again.n_frames == 12


def test_frame_count_rules(tmp_path, frames):
    write_aps(tmp_path, PATTERN, frames[:10], frames_per_file=4)  # files of 4, 4, 2
    spiral = {"positions": "spiral", "scan_dims": None}
    scan = open_aps(_cfg(tmp_path, **spiral))
    assert scan.n_frames == 10 and scan.metadata["files_found"] == 3
    np.testing.assert_array_equal(scan.read([9, 8, 0]), frames[[9, 8, 0]])
    assert open_aps(_cfg(tmp_path, n_frames=6, **spiral)).n_frames == 6
    assert open_aps(_cfg(tmp_path, scan_dims=[2, 4])).n_frames == 8
    # scan_dims asks for more frames than the files hold -> the read names the file
    scan = open_aps(_cfg(tmp_path, scan_dims=[3, 4]))
    with pytest.raises(DataError, match=PATTERN % 3):
        scan.read([11])


def test_two_d_one_frame_per_file(tmp_path, frames):
    write_aps(tmp_path, "row_%03d.h5", frames[:6], frames_per_file=1, ndim=2,
              compression="lz4", first_index=0)
    with h5py.File(tmp_path / "row_000.h5") as f:
        assert f["/entry/data/data"].ndim == 2
    cfg = DataConfig(path=str(tmp_path / "row_%03d.h5"), first_index=0, scan_dims=[2, 3],
                     step_m=[1e-7, 1e-7])
    scan = open_aps(cfg)
    assert scan.frames_per_file == 1 and scan.n_frames == 6
    np.testing.assert_array_equal(scan.read([5, 0, 2]), frames[[5, 0, 2]])


def test_three_d_one_frame_per_file_and_custom_dataset(tmp_path, frames):
    write_aps(tmp_path, "f_%d.h5", frames[:4], frames_per_file=1, dataset="/dp")
    cfg = DataConfig(path=str(tmp_path / "f_%d.h5"), dataset="/dp", n_frames=4,
                     positions="spiral", step_m=[5e-8, 5e-8])
    scan = open_aps(cfg)
    np.testing.assert_array_equal(scan.read(range(4)), frames[:4])
    with pytest.raises(DataError, match="/entry/data/data"):
        open_aps(DataConfig(path=str(tmp_path / "f_%d.h5"), n_frames=4, positions="spiral",
                            step_m=[5e-8, 5e-8]))


def test_ptychopy_hash_pattern_and_first_file_path(tmp_path, frames):
    write_aps(tmp_path, "scan152_data_#06d.h5", frames, frames_per_file=4)
    assert (tmp_path / "scan152_data_000001.h5").is_file()
    scan = open_aps(_cfg(tmp_path, path=str(tmp_path / "scan152_data_#06d.h5")))
    np.testing.assert_array_equal(scan.read(range(12)), frames)
    # the first row file itself: its number becomes the first index
    scan = open_aps(_cfg(tmp_path, path=str(tmp_path / "scan152_data_000001.h5")))
    assert scan.pattern.endswith("scan152_data_%06d.h5") and scan.first_index == 1
    np.testing.assert_array_equal(scan.read([11, 4]), frames[[11, 4]])
    assert resolve_pattern("/d/x_#04d.h5") == ("/d/x_%04d.h5", 1)
    # files that merely look alike do not count
    (tmp_path / "scan152_data_1.h5").write_bytes(b"")
    (tmp_path / "scan152_data_0000099.h5").write_bytes(b"")
    assert open_aps(_cfg(tmp_path, positions="spiral", scan_dims=None)).n_frames == 12


def test_first_index_offsets_files(tmp_path, frames):
    write_aps(tmp_path, PATTERN, frames, frames_per_file=6, first_index=5)
    scan = open_aps(_cfg(tmp_path, first_index=5))
    assert scan.file_of(7).endswith(PATTERN % 6)
    np.testing.assert_array_equal(scan.read([7, 1]), frames[[7, 1]])
    with pytest.raises(DataError, match="no files match"):
        open_aps(_cfg(tmp_path, first_index=7))


@pytest.mark.parametrize("shape", [(16,), (2, 2, 8, 8)])
def test_wrong_rank_dataset(tmp_path, shape):
    path = tmp_path / (PATTERN % 1)
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=np.zeros(shape, np.float32))
    with pytest.raises(DataError) as err:
        open_aps(_cfg(tmp_path, n_frames=1, scan_dims=None, positions="spiral"))
    msg = str(err.value)
    assert str(path) in msg and "/entry/data/data" in msg and f"rank {len(shape)}" in msg
    assert "\n" not in msg


def test_wrong_rank_in_a_later_file(tmp_path, frames):
    write_aps(tmp_path, PATTERN, frames, frames_per_file=4)
    bad = tmp_path / (PATTERN % 3)
    with h5py.File(bad, "w") as f:
        f.create_dataset("/entry/data/data", data=np.zeros((1, 4, 32, 32), np.int32))
    scan = open_aps(_cfg(tmp_path))
    with pytest.raises(DataError, match=PATTERN % 3):
        scan.read([10])


def test_missing_scan_and_bad_positions_config(tmp_path, frames):
    with pytest.raises(DataError, match="no files match"):
        open_aps(_cfg(tmp_path))
    write_aps(tmp_path, PATTERN, frames, frames_per_file=4)
    with pytest.raises(DataError, match="scan_dims"):
        open_aps(_cfg(tmp_path, scan_dims=None, step_m=None))
    with pytest.raises(ConfigError, match="step_m"):
        open_aps(_cfg(tmp_path, positions="raster", step_m=None))
    with pytest.raises(DataError, match="12 frames"):
        open_aps(_cfg(tmp_path, scan_dims=[2, 3], n_frames=12))


def test_geometry_passed_through(tmp_path, frames):
    write_aps(tmp_path, PATTERN, frames, frames_per_file=4)
    geo = ScanGeometry(wavelength_m=1e-10, distance_m=2.0, detector_pixel_m=75e-6)
    assert open_aps(_cfg(tmp_path), geo).geometry is geo


# --------------------------------------------------------------------------- positions


def test_raster_row_major_values(tmp_path, frames):
    pos = raster_positions([3, 4], [1e-7, 2e-7])
    assert pos.shape == (12, 2)
    # frame k = row * 4 + col; row coordinate from the row index, centred on 0
    np.testing.assert_allclose(pos[0], [-1e-7, -3e-7])
    np.testing.assert_allclose(pos[1], [-1e-7, -1e-7])
    np.testing.assert_allclose(pos[4], [0.0, -3e-7])
    np.testing.assert_allclose(pos[11], [1e-7, 3e-7])
    np.testing.assert_allclose(pos.mean(axis=0), [0, 0], atol=1e-20)
    write_aps(tmp_path, PATTERN, frames, frames_per_file=4)
    scan = open_aps(_cfg(tmp_path))
    assert scan.metadata["positions"] == "raster"
    np.testing.assert_array_equal(scan.positions_m, pos)


def test_raster_mirror_swap_drift_jitter():
    base = raster_positions([3, 4], [1e-7, 2e-7])
    mr = raster_positions([3, 4], [1e-7, 2e-7], mirror_rows=True)
    np.testing.assert_allclose(mr[:, 0], -base[:, 0])
    np.testing.assert_allclose(mr[:, 1], base[:, 1])
    mc = raster_positions([3, 4], [1e-7, 2e-7], mirror_cols=True)
    np.testing.assert_allclose(mc[0], [-1e-7, 3e-7])
    sw = raster_positions([3, 4], [1e-7, 2e-7], swap=True)
    np.testing.assert_array_equal(sw, base[:, ::-1])
    dr = raster_positions([3, 4], [1e-7, 2e-7], drift_m=(1e-9, 2e-9))
    np.testing.assert_allclose(dr[11] - base[11], [2e-9, 6e-9])
    with pytest.raises(ConfigError, match="pixel"):
        raster_positions([3, 4], 1e-7, jitter_px=1)
    j1 = raster_positions([3, 4], 1e-7, jitter_px=2, pixel_m=1e-8, seed=3)
    j2 = raster_positions([3, 4], 1e-7, jitter_px=2, pixel_m=1e-8, seed=3)
    np.testing.assert_array_equal(j1, j2)
    d = np.abs(j1 - raster_positions([3, 4], 1e-7))
    assert d.max() <= 2e-8 and d.max() > 0


def test_spiral_formula():
    pos = spiral_positions(5, [1e-7, 2e-7])
    k = np.arange(5)
    s = np.sqrt(k)
    np.testing.assert_allclose(pos[:, 0], s * np.cos(4 * s) * 1e-7)
    np.testing.assert_allclose(pos[:, 1], s * np.sin(4 * s) * 2e-7)
    np.testing.assert_allclose(pos[1], [np.cos(4) * 1e-7, np.sin(4) * 2e-7])
    np.testing.assert_allclose(pos[4], [2 * np.cos(8) * 1e-7, 2 * np.sin(8) * 2e-7])
    assert np.all(pos[0] == 0)


def test_position_file(tmp_path, frames):
    csv = tmp_path / "pos.csv"
    rng = np.random.default_rng(0)
    expected = rng.uniform(-1e-6, 1e-6, size=(14, 2))
    csv.write_text("\n".join(f"{a:.17g},{b:.17g}" for a, b in expected) + "\n")
    np.testing.assert_array_equal(read_position_file(csv, 12), expected[:12])
    write_aps(tmp_path, PATTERN, frames, frames_per_file=4)
    scan = open_aps(_cfg(tmp_path, position_file=str(csv)))  # auto -> file
    assert scan.metadata["positions"] == "file"
    np.testing.assert_array_equal(scan.positions_m, expected[:12])
    short = tmp_path / "short.csv"
    short.write_text("1e-7,2e-7\n3e-7,4e-7\n")
    with pytest.raises(DataError) as err:
        read_position_file(short, 12)
    assert str(short) in str(err.value) and "2" in str(err.value) and "12" in str(err.value)
    with pytest.raises(DataError, match="short.csv"):
        open_aps(_cfg(tmp_path, position_file=str(short)))
    bad = tmp_path / "bad.csv"
    bad.write_text("1e-7,2e-7\nabc,4\n")
    with pytest.raises(DataError, match="line 2"):
        read_position_file(bad, 2)


def test_real_scan235_position_file():
    csv = DATA / "aps-scan235-truncated" / "pos235_full_scan.csv"
    if not (csv.is_file() and SCAN235.is_file()):
        pytest.skip("scan 235 data not present")
    pos = read_position_file(csv, 20)
    np.testing.assert_array_equal(pos, np.load(SCAN235)["position"])


def test_mda_positions(tmp_path, frames):
    pytest.importorskip("ptychompi.io.mda")
    if not XFM.is_file():
        pytest.skip(f"no MDA test file at {XFM}")

    pos, params = mda_positions(XFM)
    assert pos.shape == (121, 2)
    slow = np.linspace(3.25, 3.75, 11) * 1e-3  # rows: Sample Y [mm]
    fast = np.linspace(-1.5, -1.0, 11) * 1e-3  # columns: fly axis, mm
    np.testing.assert_allclose(pos[:, 0], np.repeat(slow, 11), rtol=1e-6)
    np.testing.assert_allclose(pos[:, 1], np.tile(fast, 11), rtol=1e-6)
    # through open_aps (auto -> mda): the 12 frames take the first 12 positions
    write_aps(tmp_path, PATTERN, frames, frames_per_file=4)
    scan = open_aps(_cfg(tmp_path, scan_dims=None, mda_file=str(XFM)))
    assert scan.metadata["positions"] == "mda"
    np.testing.assert_array_equal(scan.positions_m, pos[:12])


# --------------------------------------------------------------------------- real frames


def test_real_scan235_frames_round_trip(tmp_path):
    if not SCAN235.is_file():
        pytest.skip(f"no scan 235 data at {SCAN235}")
    raw = np.load(SCAN235)["reciprocal"]
    write_aps(tmp_path, "scan235_data_%06d.h5", raw, frames_per_file=5, compression="lz4")
    cfg = DataConfig(path=str(tmp_path / "scan235_data_%06d.h5"),
                     position_file=str(DATA / "aps-scan235-truncated" / "pos235_full_scan.csv"))
    scan = open_aps(cfg)
    assert scan.n_frames == 20 and scan.frame_shape == (512, 512) and scan.n_files == 4
    assert scan.compression == "lz4"
    np.testing.assert_array_equal(scan.read(range(20)), raw)
    np.testing.assert_array_equal(scan.read([19, 0, 7]), raw[[19, 0, 7]])
