"""LSQML's noise models (ptychompi.engines.noise) on small waves with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from ptychompi.backends import select_backend
from ptychompi.engines.noise import GaussianNoise, PoissonNoise, noise_model


@pytest.fixture(scope="module")
def be():
    with select_backend("cpu", workers=1) as backend:
        yield backend


def waves(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((3, 1, 8, 8)) + 1j * rng.standard_normal((3, 1, 8, 8))).astype(
        np.complex64)


@pytest.mark.parametrize("model", [GaussianNoise(), PoissonNoise(6)])
def test_consistent_data_keep_the_wave(be, model):
    wave = waves(0)
    amplitude = np.sqrt((np.abs(wave) ** 2).sum(axis=1)).astype(np.float32)
    target, err = model.target(be, wave.copy(), amplitude)
    assert err == pytest.approx(0.0, abs=1e-8)
    np.testing.assert_allclose(target, wave, rtol=1e-5, atol=1e-6)


def test_gaussian_target_has_the_measured_modulus_and_masked_pixels_stay(be):
    wave = waves(1)
    amplitude = np.random.default_rng(2).random((3, 8, 8)).astype(np.float32)
    amplitude[0, :2] = -1  # masked
    target, err = GaussianNoise().target(be, wave.copy(), amplitude)
    valid = amplitude >= 0
    modulus = np.sqrt((np.abs(target) ** 2).sum(axis=1))
    np.testing.assert_allclose(modulus[valid], amplitude[valid], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(target[0, :, :2], wave[0, :, :2])
    expected = ((np.sqrt((np.abs(wave) ** 2).sum(axis=1)) - amplitude) ** 2)[valid].sum()
    assert err == pytest.approx(expected, rel=1e-5)


def test_poisson_step_lowers_the_likelihood_and_more_steps_converge(be):
    wave = waves(3)
    model_i = (np.abs(wave) ** 2).sum(axis=1)
    counts = np.random.default_rng(4).poisson(model_i * 3.0).astype(np.float32)
    amplitude = np.sqrt(counts)

    def nll(t):  # Σ Î − I log Î per position
        i = (np.abs(t) ** 2).sum(axis=1).astype(np.float64)
        return (i - counts * np.log(i + 1e-12)).sum(axis=(1, 2))

    one, _ = PoissonNoise(1).target(be, wave.copy(), amplitude)
    many, _ = PoissonNoise(12).target(be, wave.copy(), amplitude)
    assert np.all(nll(one) < nll(wave)) and np.all(nll(many) <= nll(one) + 1e-3)
    assert isinstance(noise_model("poisson", 3), PoissonNoise)
    assert noise_model("gaussian", 3).fused and not noise_model("poisson", 3).fused
