"""LSQML's noise models (Odstrčil et al. 2018, section 3): each turns the far-field exit waves
Ψ of a batch into the detector-space targets Ψ' that maximise the likelihood of the measured
amplitudes, and gives the amplitude misfit Σ(|Ψ| − √I)² over the valid pixels.

The Gaussian model is the modulus projection (the maximum of the amplitude likelihood); the
Poisson model scales each position's wave towards its projection by the step α that maximises
the Poisson likelihood along that line, found by Newton steps. Masked pixels (amplitude < 0)
keep their wave.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends import Backend
from ..model.physics import EPS, model_intensity


class GaussianNoise:
    """Amplitudes with Gaussian noise: the target is the modulus projection."""

    name = "gaussian"
    fused = True  # the compiled per-position pipelines implement this model

    def target(self, be: Backend, wave: Any, amplitude: Any) -> tuple[Any, float]:
        """Ψ' and the batch's misfit; ``wave`` is a fresh array (it may be overwritten)."""
        return be.ops.modulus_project(wave, amplitude)


class PoissonNoise:
    """Photon counts: Ψ(α) = Ψ (1 − α (1 − R)) with R = I / |Ψ|², α per position minimising
    ``L(α) = Σ Î s² − I log(Î s²)`` (``s = 1 − α (1 − R)``) by ``newton_steps`` steps from
    α = 1/2, clipped to [0, 1]."""

    name = "poisson"
    fused = False

    def __init__(self, newton_steps: int) -> None:
        self.newton_steps = int(newton_steps)

    def target(self, be: Backend, wave: Any, amplitude: Any) -> tuple[Any, float]:
        """Ψ' and the batch's amplitude misfit."""
        xp = be.xp
        model = model_intensity(wave)
        valid = amplitude >= 0
        meas = xp.where(valid, amplitude ** 2, 0)
        err = float(xp.sum(xp.where(valid, (xp.sqrt(model) - amplitude) ** 2, 0),
                           dtype=np.float64))
        ratio = xp.where(valid, meas / (model + EPS), 1.0)
        g = 1.0 - ratio
        alpha = xp.full((wave.shape[0], 1, 1), 0.5, dtype=be.real_dtype)
        for _ in range(self.newton_steps):
            s = 1.0 - alpha * g
            s2 = xp.maximum(s * s, 1e-12)
            # L' = Σ -2 g s (Î - I/s²);  L'' = Σ 2 g² (Î + I/s²)
            d1 = (-2 * g * s * (model - meas / s2)).sum(axis=(1, 2), keepdims=True)
            d2 = (2 * g * g * (model + meas / s2)).sum(axis=(1, 2), keepdims=True)
            alpha = xp.clip(alpha - d1 / (d2 + EPS), 0.0, 1.0).astype(be.real_dtype)
        factor = xp.where(valid, 1.0 - alpha * g, 1.0).astype(be.real_dtype)
        return wave * factor[:, None], err


NoiseModel = GaussianNoise | PoissonNoise

POISSON_FLOOR = 0.25  # E[(sqrt(n) - sqrt(λ))²] of photon counts n for λ ≳ 1


def poisson_floor(backend: Backend, amplitudes: Any, chunk: int = 64) -> float:
    """``Σ min(I, 1/4)`` over the valid pixels of ``amplitudes`` (√I, invalid < 0): the
    expected ``Σ (√n − √λ)²`` of photon counts (1/4 a pixel for counts λ ≳ 1, about λ
    below), the misfit a perfect model leaves; relative to ``Σ I``, the data's noise level."""
    xp, total = backend.xp, 0.0
    for start in range(0, len(amplitudes), chunk):
        a = amplitudes[start:start + chunk]
        power = a * a  # an invalid pixel's (-1)² counts 1/4 here, taken off below
        xp.minimum(power, POISSON_FLOOR, out=power)
        total += (float(power.sum(dtype=np.float64))
                  - POISSON_FLOOR * int(xp.count_nonzero(a < 0)))
    return total


def noise_model(name: str, newton_steps: int) -> NoiseModel:
    """The model ``algorithm.lsqml.noise_model`` names."""
    if name == "gaussian":
        return GaussianNoise()
    if name == "poisson":
        return PoissonNoise(newton_steps)
    raise ValueError(f"unknown noise model {name!r}")
