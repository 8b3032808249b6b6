"""Simulated scans: physics of the forward model, geometry, seeds, probe modes, the CLI."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from ptychompi.app.cli import main
from ptychompi.errors import ConfigError
from ptychompi.io.cxi import read_cxi
from ptychompi.model.geometry import farfield_pixel_size, positions_to_pixels, wavelength_from_kev
from ptychompi.sim.simulate import PAD_PX, forward, make_probe, simulate

SMALL = dict(frame=64, grid=5, step_px=12.0, probe_diameter_px=24.0, photons=1e5)


@pytest.fixture(scope="module")
def clean():
    return simulate(**SMALL, poisson=False)


def _direct_exit_wave(sim, j: int, mode: int = 0) -> np.ndarray:
    """P shifted by the sub-pixel remainder times the object window, with numpy.fft."""
    m = sim.probe.shape[-1]
    pos = sim.positions_px[j]
    n = np.floor(pos).astype(int)
    f = pos - n
    q = np.fft.fftfreq(m)
    ramp = np.exp(-2j * np.pi * (q[:, None] * f[0] + q[None, :] * f[1]))
    p_shift = np.fft.ifft2(np.fft.fft2(sim.probe[mode].astype(np.complex128)) * ramp)
    return p_shift * sim.object[n[0]:n[0] + m, n[1]:n[1] + m]


def test_parseval_and_model(clean) -> None:
    m = clean.probe.shape[-1]
    totals = clean.frames.sum(axis=(1, 2), dtype=np.float64)
    assert np.all(totals <= clean.photons * (1 + 1e-5))
    for j in (0, 7, len(clean.frames) - 1):
        psi = _direct_exit_wave(clean, j)
        assert totals[j] == pytest.approx(np.sum(np.abs(psi) ** 2), rel=1e-4)
        expect = np.fft.fftshift(np.abs(np.fft.fft2(psi, norm="ortho")) ** 2)
        np.testing.assert_allclose(clean.frames[j], expect, rtol=1e-3,
                                   atol=1e-4 * expect.max())
        # centred: the zero frequency (total field) sits at (M/2, M/2)
        assert clean.frames[j][m // 2, m // 2] == pytest.approx(
            abs(psi.sum()) ** 2 / m**2, rel=1e-3)


def test_subpixel_shift_moves_probe_by_plus_f() -> None:
    """On an object with |O|^2 = a + b*col, total counts grow by b*photons*f_col."""
    m, photons, b = 64, 1e4, 0.002
    probe = make_probe(m, 12.0, 1, photons)
    cols = np.arange(100, dtype=np.float64)
    obj = np.sqrt(0.5 + b * cols)[None, :].repeat(100, axis=0).astype(np.complex64)
    pos = np.array([[10.0, 10.0], [10.0, 10.3], [10.25, 10.0]])
    tot = forward(obj, probe, pos).sum(axis=(1, 2), dtype=np.float64)
    # 5 %: the probe's weak tails wrap around the periodic window
    assert tot[1] - tot[0] == pytest.approx(b * photons * 0.3, rel=5e-2)
    assert tot[2] == pytest.approx(tot[0], rel=1e-5)  # no change along rows


def test_mean_counts_match_photons_times_object_power() -> None:
    sim = simulate(**SMALL, seed=3)
    m = sim.probe.shape[-1]
    weight = (np.abs(sim.probe) ** 2).sum(axis=0) / sim.photons  # sums to 1
    power = []
    for r, c in np.floor(sim.positions_px).astype(int):
        power.append(np.sum(weight * np.abs(sim.object[r:r + m, c:c + m]) ** 2))
    expect = sim.photons * np.mean(power)  # photons x illumination-weighted mean |O|^2
    got = sim.frames.sum(axis=(1, 2), dtype=np.float64).mean()
    assert got == pytest.approx(expect, rel=0.02)
    assert 0.3 * sim.photons < got < sim.photons
    assert np.all(sim.frames == np.rint(sim.frames))  # Poisson counts
    assert sim.frames.dtype == np.float32


def test_geometry_positions_and_object(clean) -> None:
    n, m = SMALL["grid"] ** 2, SMALL["frame"]
    assert clean.frames.shape == (n, m, m)
    assert clean.probe.shape == (1, m, m) and clean.probe.dtype == np.complex64
    assert clean.object.dtype == np.complex64
    pos = clean.positions_px
    assert pos.shape == (n, 2)
    np.testing.assert_array_equal(pos.min(axis=0), [PAD_PX, PAD_PX])
    corner = np.floor(pos).astype(int)
    assert np.all(corner >= PAD_PX)
    assert np.all(corner + m + PAD_PX <= np.array(clean.object.shape))  # every window fits
    # row-major raster with jitter of at most 0.1 step
    step = SMALL["step_px"]
    assert np.all(np.abs(np.diff(pos[:5, 1]) - step) <= 0.2 * step + 1e-9)
    assert np.all(np.abs(pos[5:10, 0] - pos[0:5, 0] - step) <= 0.2 * step + 1e-9)
    wl = wavelength_from_kev(8.8)
    assert clean.pixel_size_m == pytest.approx(farfield_pixel_size(wl, 2.0, m, 75e-6))
    np.testing.assert_allclose(clean.positions_m, pos * clean.pixel_size_m)
    amp, ph = np.abs(clean.object), np.angle(clean.object)
    assert 0.25 < amp.min() < 0.5 and amp.max() <= 1.0 + 1e-6  # no gain
    assert 0.5 < np.ptp(ph) < 3.5  # rich phase, within about +/- 1.5 rad


def test_object_is_band_limited(clean) -> None:
    """Beyond 0.35 cycles/pixel (Nyquist 0.5 minus the probe's pupil 0.15) the object holds
    under 1e-3 of its non-constant power (the unfiltered procedural object: ~2e-2)."""
    obj = clean.object - clean.object.mean()
    q = np.hypot(np.fft.fftfreq(obj.shape[0])[:, None], np.fft.fftfreq(obj.shape[1])[None, :])
    power = np.abs(np.fft.fft2(obj)) ** 2
    assert power[q > 0.35].sum() < 1e-3 * power.sum()


def test_probe_size_and_power() -> None:
    m, d = 128, 40.0
    p = make_probe(m, d, 1, 1e6)[0]
    inten = np.abs(p.astype(np.complex128)) ** 2
    assert inten.sum() == pytest.approx(1e6, rel=1e-5)
    r = np.hypot(*np.mgrid[-m // 2:m // 2, -m // 2:m // 2])
    assert 0.6 < inten[r <= d / 2].sum() / 1e6 < 0.97
    assert inten[r <= d].sum() / 1e6 > 0.93
    assert np.ptp(np.angle(p[r <= d / 2])) > 1.0  # not a flat-phase blob


def test_seed_reproducibility() -> None:
    a = simulate(**SMALL, seed=5)
    b = simulate(**SMALL, seed=5)
    c = simulate(**SMALL, seed=6)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.positions_px, b.positions_px)
    np.testing.assert_array_equal(a.object, b.object)
    assert not np.array_equal(a.frames, c.frames)
    assert not np.array_equal(a.positions_px, c.positions_px)


def test_two_probe_modes() -> None:
    sim = simulate(**SMALL, probe_modes=2, poisson=False)
    p = sim.probe.astype(np.complex128)
    assert p.shape == (2, 64, 64)
    power = (np.abs(p) ** 2).sum(axis=(1, 2))
    assert power.sum() == pytest.approx(sim.photons, rel=1e-5)
    assert power[1] / power.sum() == pytest.approx(0.25, abs=0.02)
    assert abs(np.vdot(p[0], p[1])) < 1e-3 * power[0]  # orthogonal modes
    # intensities add incoherently: Σ_k |F(P_k O)|^2
    for j in (0, 12):
        expect = sum(np.abs(np.fft.fft2(_direct_exit_wave(sim, j, k), norm="ortho")) ** 2
                     for k in range(2))
        np.testing.assert_allclose(sim.frames[j], np.fft.fftshift(expect), rtol=1e-3,
                                   atol=1e-4 * expect.max())


def test_rejects_probe_larger_than_frame() -> None:
    with pytest.raises(ConfigError, match="probe_diameter_px"):
        simulate(frame=32, grid=2, probe_diameter_px=40.0)


def test_cli_writes_scan_and_truth(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "tmp" / "scan.cxi"
    assert main(["simulate", "--out", str(out), "--frame", "64", "--grid", "6"]) == 0
    truth = tmp_path / "tmp" / "scan.truth.h5"
    assert out.is_file() and truth.is_file()
    assert str(out) in capsys.readouterr().out
    with h5py.File(truth, "r") as f:
        obj, probe = f["object"][()], f["probe"][()]
        truth_px = f["positions_px"][()]
        pixel = float(f["pixel_size_m"][()])
        np.testing.assert_allclose(f["positions_m"][()], truth_px * pixel)
    assert obj.dtype == np.complex64 and probe.shape == (1, 64, 64)
    with read_cxi(out) as scan:
        assert scan.n_frames == 36 and scan.frame_shape == (64, 64)
        assert scan.illumination is None  # never hand the truth to a reconstruction
        assert scan.compression == "gzip"
        g = scan.geometry
        file_pixel = farfield_pixel_size(g.wavelength_m, g.distance_m, 64, g.detector_pixel_m)
        assert file_pixel == pytest.approx(pixel, rel=1e-9)
        px = positions_to_pixels(scan.positions_m, file_pixel)
        offset = truth_px - px
        np.testing.assert_allclose(offset, offset[0][None, :].repeat(36, 0), atol=1e-6)
        frames = scan.read(np.arange(36))
        assert np.all(frames >= 0) and np.all(frames == np.rint(frames))
        assert frames.sum(axis=(1, 2)).mean() > 0.3e6
