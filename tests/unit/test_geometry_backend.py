"""Geometry conversions and the array backend."""

from __future__ import annotations

import numpy as np
import pytest

from ptychompi.backends import select_backend
from ptychompi.errors import ConfigError
from ptychompi.model.geometry import (
    farfield_pixel_size,
    fresnel_scaling,
    joules_from_kev,
    kev_from_joules,
    kev_from_wavelength,
    object_shape,
    positions_to_pixels,
    wavelength_from_kev,
)


def test_energy_wavelength_round_trips_and_hand_values():
    assert wavelength_from_kev(12.398419843320026) == pytest.approx(1e-10, rel=1e-9)
    assert kev_from_wavelength(wavelength_from_kev(8.8)) == pytest.approx(8.8)
    assert kev_from_joules(joules_from_kev(12.658)) == pytest.approx(12.658)
    assert kev_from_joules(2.0280385e-15) == pytest.approx(12.658, rel=1e-4)  # the P25 file
    with pytest.raises(ConfigError):
        wavelength_from_kev(0)


def test_farfield_pixel_size_hand_computed():
    # λ = 1e-10 m, z = 2 m, 256 px of 75 µm: dx = 2e-10 / 0.0192 = 10.4167 nm
    assert farfield_pixel_size(1e-10, 2.0, 256, 75e-6) == pytest.approx(1.0416667e-8)


def test_fresnel_scaling_of_the_p25_setup():
    near = fresnel_scaling(55e-6, 1.12, 3.65e-3)
    assert near.magnification == pytest.approx(307.849, rel=1e-4)
    assert near.pixel_size_m == pytest.approx(178.66e-9, rel=1e-3)
    assert near.distance_m == pytest.approx(3.638e-3, rel=1e-3)
    parallel = fresnel_scaling(55e-6, 1.12, None)
    assert (parallel.magnification, parallel.distance_m) == (1.0, 1.12)


def test_positions_to_pixels_flips_transposes_and_margins():
    pos = np.array([[0.0, 0.0], [1e-6, 2e-6], [3e-6, -1e-6]])
    pix = positions_to_pixels(pos, 1e-7, margin_px=4)
    assert pix.min(axis=0).tolist() == [4.0, 4.0]
    assert np.allclose(pix[1] - pix[0], [10, 20])
    flipped = positions_to_pixels(pos, 1e-7, flip=(True, False))
    assert np.allclose(flipped[:, 0], [30, 20, 0])
    swapped = positions_to_pixels(pos, 1e-7, transpose=True)
    assert np.allclose(swapped[1] - swapped[0], [20, 10])
    assert object_shape(pix, (64, 64), 4) == (int(pix[:, 0].max()) + 69,
                                               int(pix[:, 1].max()) + 69)


def test_backend_cpu_fft_is_unitary_and_env_overrides(monkeypatch):
    a = np.random.default_rng(0).standard_normal((3, 16, 16)).astype(np.complex64)
    with select_backend("cpu", workers=2) as be, select_backend("cpu", double=True) as double:
        assert np.isclose(np.linalg.norm(be.fft2(a)), np.linalg.norm(a), rtol=1e-5)
        assert np.allclose(be.ifft2(be.fft2(a)), a, atol=1e-5)
        assert be.complex_dtype == np.complex64 and double.double
    monkeypatch.setenv("PTYCHOMPI_DEVICE", "cpu")
    assert select_backend("gpu").name == "cpu"
    monkeypatch.setenv("PTYCHOMPI_DEVICE", "tpu")
    with pytest.raises(ConfigError, match="PTYCHOMPI_DEVICE"):
        select_backend("auto")


def test_asking_for_a_gpu_where_there_is_none_is_an_error(monkeypatch):
    import ptychompi.backends as backend  # noqa: PLC0415

    monkeypatch.delenv("PTYCHOMPI_DEVICE", raising=False)
    monkeypatch.setattr(backend, "_import_cupy", lambda: None)
    with pytest.raises(ConfigError, match="no.*usable|none is usable"):
        select_backend("gpu")
    assert select_backend("auto").name == "cpu"
