"""``inspect_file``: CXI scans (real and simulated), MDA files, result files, bad input."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptychompi.app.summary import inspect_file
from ptychompi.errors import DataError
from ptychompi.io.cxi import write_cxi
from ptychompi.sim.simulate import simulate_to_files


def test_real_cxi(shared_data: Path) -> None:
    text = inspect_file(shared_data / "petra3-p25-nearfield" / "PETRAIII_P25_Near_Field_Ptycho.cxi")
    assert "200 x 100 x 100" in text
    assert "12.658" in text and "keV" in text  # 2.028e-15 J
    assert "gzip" in text
    assert "1.12 m" in text and "55 µm" in text
    assert "5 masked pixels" in text
    assert "extent 19.05 x 20.16 µm" in text  # rows = y range, cols = x range
    assert "mean 9.6" in text  # frame sums ~9.67e6
    assert len(text.splitlines()) <= 24


def test_simulated_cxi(tmp_path: Path) -> None:
    cxi, _ = simulate_to_files(tmp_path / "s.cxi", frame=64, grid=4, photons=1e5)
    text = inspect_file(cxi)
    assert "16 x 64 x 64" in text
    assert "8.8000 keV" in text
    assert "2 m" in text and "75 µm" in text
    assert "0 masked pixels" in text
    step = re.search(r"median nearest-neighbour .* = ([0-9.]+) px", text)
    assert step and 12.0 < float(step.group(1)) <= 16.5  # 15 px raster, jitter 1.5 px


def test_cxi_with_illumination_reports_overlap(tmp_path: Path) -> None:
    m = 32
    yy, xx = np.mgrid[:m, :m] - m / 2
    # |P|^2 = exp(-r^2 / 25) is above 10 % of its peak for r < 5 sqrt(ln 10) = 7.6 px
    probe = np.exp(-(yy**2 + xx**2) / 50.0).astype(np.complex64)
    r, c = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    pixel = 1e-10 * 1.0 / (m * 75e-6)
    pos_m = np.stack([r.ravel(), c.ravel()], 1) * 7.0 * pixel
    path = write_cxi(tmp_path / "p.cxi", np.ones((16, m, m), np.float32), pos_m,
                     wavelength_m=1e-10, distance_m=1.0, pixel_size_m=75e-6,
                     illumination=probe)
    text = inspect_file(path)
    assert "= 7.0 px" in text
    ratio = re.search(r"~(\d+) px wide, overlap ([0-9.]+)", text)
    assert ratio and 14 <= int(ratio.group(1)) <= 16
    assert float(ratio.group(2)) == pytest.approx(1 - 7 / 15.2, abs=0.04)


def test_mda(shared_data: Path) -> None:
    text = inspect_file(shared_data / "mda" / "xrfmaps_2ide_2xfm_0011.mda")
    assert "11 x 11" in text
    text = inspect_file(shared_data / "mda" / "mdaviz_29idKappa_Kappa_0009.mda")
    assert "21 x 21" in text and "7 x 21" in text


def test_result_file(tmp_path: Path) -> None:
    path = tmp_path / "result.h5"
    with h5py.File(path, "w") as f:
        f["object"] = np.ones((50, 60), np.complex64)
        f["probe"] = np.ones((2, 16, 16), np.complex64)
        f["positions"] = np.zeros((9, 2))
        f["error"] = np.array([0.5, 0.2, 0.123456])
        f["pixel_size"] = 2.5e-8
        f.attrs["config"] = "algorithm:\n  name: dm\n"
        prov = f.create_group("provenance")
        prov.attrs["ranks"] = 4
        prov.attrs["algorithm"] = "dm"
    text = inspect_file(path)
    assert "(50, 60) complex64" in text
    assert "(2, 16, 16)" in text
    assert "3 iterations, final 0.12346" in text
    assert "25 nm" in text
    assert "provenance ranks = 4" in text and "provenance algorithm = dm" in text


def test_unknown_formats(tmp_path: Path) -> None:
    txt = tmp_path / "notes.txt"
    txt.write_text("hello\n")
    with pytest.raises(DataError) as exc:
        inspect_file(txt)
    assert "\n" not in str(exc.value) and str(txt) in str(exc.value)
    h5 = tmp_path / "other.h5"
    with h5py.File(h5, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DataError, match="neither") as exc:
        inspect_file(h5)
    assert "\n" not in str(exc.value)
    with pytest.raises(DataError, match="no such file"):
        inspect_file(tmp_path / "missing.cxi")
