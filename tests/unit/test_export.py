"""Exports: TIFF, PNG previews with a scale bar, ptychopy CSV in and out."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from ptychompi.errors import DataError, PtychompiError
from ptychompi.io.export import (
    export_arrays,
    export_result,
    format_length,
    read_ptychopy_csv,
    scale_bar_length,
    scale_to_uint8,
    split_probe_modes,
    write_ptychopy_csv,
)
from ptychompi.io.results import ResultData, write_result


def _arrays(h: int = 120, w: int = 160, k: int = 2, m: int = 32):
    y, x = np.mgrid[:h, :w]
    obj = ((0.5 + 0.3 * np.sin(x / 7.0)) * np.exp(1j * (0.8 * np.cos(y / 9.0) + 2.0)))
    yy, xx = np.mgrid[:m, :m] - m / 2
    gauss = np.exp(-(xx**2 + yy**2) / 40.0)
    probe = np.stack([gauss * np.exp(1j * xx / 5.0) * (i + 1) for i in range(k)])
    return obj.astype(np.complex64), probe.astype(np.complex64)


def test_tiff(tmp_path):
    obj, probe = _arrays()
    paths = export_arrays(obj, probe, 1e-8, "tiff", tmp_path)
    names = sorted(p.split("/")[-1] for p in paths)
    assert names == sorted(f"result_{a}_{b}{c}.tif" for a in ("object", "probe")
                           for b in ("amplitude", "phase") for c in ("", "_8bit"))
    amp = tifffile.imread(tmp_path / "result_object_amplitude.tif")
    assert amp.dtype == np.float32 and amp.shape == obj.shape
    np.testing.assert_allclose(amp, np.abs(obj), rtol=1e-6)
    phase = tifffile.imread(tmp_path / "result_object_phase.tif")
    # the global phase (about 2 rad here) is removed; the structure is kept
    assert abs(np.median(phase)) < 0.5
    np.testing.assert_allclose(np.ptp(phase), np.ptp(np.angle(obj)), atol=0.05)
    a8 = tifffile.imread(tmp_path / "result_object_amplitude_8bit.tif")
    assert a8.dtype == np.uint8 and a8.min() == 0 and a8.max() == 255
    pages = tifffile.imread(tmp_path / "result_probe_amplitude.tif")
    assert pages.shape == (2, 32, 32)
    np.testing.assert_allclose(pages, np.abs(probe), rtol=1e-6)
    with tifffile.TiffFile(tmp_path / "result_object_amplitude.tif") as t:
        num, den = t.pages[0].tags["XResolution"].value
        assert num / den == pytest.approx(100.0)  # 10 nm pixels = 100 px per µm
        assert t.imagej_metadata["unit"] == "um"


def test_scale_to_uint8_percentiles():
    a = np.linspace(0, 1, 10001)
    a[0], a[-1] = -1000.0, 1000.0  # outliers are clipped, not stretched over
    a8 = scale_to_uint8(a)
    assert a8[0] == 0 and a8[-1] == 255
    assert 120 <= a8[5000] <= 135
    assert scale_to_uint8(np.full((3, 3), 2.0)).max() == 128  # flat image: mid-grey
    assert scale_to_uint8(np.array([np.nan, 1.0, 2.0])).dtype == np.uint8


@pytest.mark.parametrize(("width", "expected"), [
    (1e-5, 2e-6), (8e-6, 2e-6), (2.6e-5, 5e-6), (6e-6, 1e-6), (3e-7, 5e-8), (1.0, 0.2)])
def test_scale_bar_length(width, expected):
    assert scale_bar_length(width) == pytest.approx(expected)


def test_format_length():
    assert format_length(2e-6) == "2 µm"
    assert format_length(5e-7) == "500 nm"
    assert format_length(1e-3) == "1 mm"
    assert format_length(0.2) == "200 mm"


def test_png(tmp_path):
    obj, probe = _arrays(h=300, w=500)
    paths = export_arrays(obj, probe, 1e-8, "png", tmp_path, stem="scan7")
    assert [p.split("/")[-1] for p in paths] == [
        "scan7_object_amplitude.png", "scan7_object_phase.png", "scan7_probe.png"]
    img = np.asarray(Image.open(paths[0]))
    assert img.shape == (300, 500) and img.dtype == np.uint8
    # 500 px of 10 nm = 5 µm wide -> a 1 µm bar of 100 px, white, in the bottom-left corner
    bottom = img[-40:, :]
    rows_with_bar = [r for r in range(bottom.shape[0])
                     if (bottom[r] == 255).sum() >= 95 and (bottom[r, 200:] == 255).sum() < 50]
    assert rows_with_bar, "no white scale bar in the bottom-left corner"
    row = bottom[rows_with_bar[len(rows_with_bar) // 2]]
    start = int(np.flatnonzero(row == 255)[0])
    run = int(np.argmin(row[start:] == 255))  # contiguous white run = the bar
    assert start < 20 and 95 <= run <= 105
    # the right part of the image is unchanged (scaled data, no drawing)
    expected = scale_to_uint8(np.abs(obj))
    np.testing.assert_array_equal(img[:, 300:], expected[:, 300:])
    probe_img = np.asarray(Image.open(paths[2]))
    assert probe_img.shape == (32, 2 * 32 + 2)


def test_png_without_pixel_size_has_no_bar(tmp_path):
    obj, probe = _arrays()
    paths = export_arrays(obj, probe, 0.0, "png", tmp_path)
    img = np.asarray(Image.open(paths[0]))
    np.testing.assert_array_equal(img, scale_to_uint8(np.abs(obj)))


def test_csv_format_and_genfromtxt(tmp_path):
    obj, probe = _arrays(h=10, w=12, k=3, m=6)
    obj[0, 0] = 1.5 - 0.25j
    obj[0, 1] = complex(-2.0, -0.0)
    paths = export_arrays(obj, probe, 1e-8, "csv", tmp_path)
    assert [p.split("/")[-1] for p in paths] == ["result_object_0.csv", "result_probes_0.csv"]
    lines = (tmp_path / "result_object_0.csv").read_text().splitlines()
    assert len(lines) == 10
    first = lines[0].split(", ")
    assert len(first) == 12
    assert first[0] == "1.5-0.25j" and first[1] == "-2+0j"
    back = np.genfromtxt(tmp_path / "result_object_0.csv", delimiter=",", dtype=complex)
    assert back.shape == (10, 12)
    np.testing.assert_allclose(back, obj, rtol=1e-5, atol=1e-6)
    stacked = np.genfromtxt(tmp_path / "result_probes_0.csv", delimiter=",", dtype=complex)
    assert stacked.shape == (18, 6)  # K*M rows x M columns
    np.testing.assert_allclose(split_probe_modes(read_ptychopy_csv(paths[1])), probe,
                               rtol=1e-5, atol=1e-6)


def test_csv_six_significant_digits(tmp_path):
    write_ptychopy_csv(tmp_path / "a.csv", np.array([[np.pi + 1e-7j, 123456789.0 - 2j]]))
    assert (tmp_path / "a.csv").read_text().strip() == "3.14159+1e-07j, 1.23457e+08-2j"


def test_read_ptychopy_variants(tmp_path):
    p = tmp_path / "guess.csv"
    p.write_text("(1+2j), 3-4i, 5\n"
                 "-1.5e-3+2.5E+2i,(0-1j) ,  -7.25-0j,\n")
    a = read_ptychopy_csv(p)
    np.testing.assert_array_equal(a, [[1 + 2j, 3 - 4j, 5], [-1.5e-3 + 250j, -1j, -7.25]])
    assert a.dtype == np.complex128


def test_read_ptychopy_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_ptychopy_csv(tmp_path / "nope.csv")
    (tmp_path / "ragged.csv").write_text("1+1j, 2\n3\n")
    with pytest.raises(DataError, match="line 2 has 1 values"):
        read_ptychopy_csv(tmp_path / "ragged.csv")
    (tmp_path / "junk.csv").write_text("1+1j, hello\n")
    with pytest.raises(DataError, match="not a ptychopy complex CSV"):
        read_ptychopy_csv(tmp_path / "junk.csv")
    with pytest.raises(DataError, match="multiple of the columns"):
        split_probe_modes(np.zeros((7, 3)))


def test_export_result_beside_the_file(tmp_path):
    obj, probe = _arrays()
    write_result(tmp_path / "run1.h5", ResultData(obj, probe, np.zeros((1, 2)), np.zeros(1),
                                                  2e-8))
    paths = export_result(tmp_path / "run1.h5", "csv")
    assert sorted(p.split("/")[-1] for p in paths) == ["run1_object_0.csv", "run1_probes_0.csv"]
    assert all(p.startswith(str(tmp_path)) for p in paths)
    out = export_result(tmp_path / "run1.h5", "png", tmp_path / "pngs")
    assert all("/pngs/" in p for p in out) and len(out) == 3
    with pytest.raises(PtychompiError, match="not one of"):
        export_result(tmp_path / "run1.h5", "jpeg")
    with pytest.raises(DataError, match="not found"):
        export_result(tmp_path / "missing.h5", "png")
