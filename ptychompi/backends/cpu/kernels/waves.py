"""Exit waves, the near-field transfer, the modulus projection (with DM's Fourier step) and
the sub-pixel phase ramps (conventions: :mod:`ptychompi.backends.cpu.kernels`)."""

from __future__ import annotations

import numpy as np

from ..jit import JIT, jit


# --------------------------------------------------------------------------- exit waves
@jit(JIT)
def exit_waves(probes: np.ndarray, probe_of: np.ndarray, obj: np.ndarray, rows: np.ndarray,
               cols: np.ndarray, out: np.ndarray) -> None:
    """``out[j, k] = probes[probe_of[j], k] * obj[window j]``.

    Replaces ``probes[probe_of] * extract(backend, obj, index)[:, None]`` (no copies).
    """
    b, kk, m0, m1 = out.shape
    for j in range(b):
        pj = probe_of[j]
        r, c = rows[j], cols[j]
        for k in range(kk):
            for y in range(m0):
                orow = obj[r + y, c:c + m1]
                prow = probes[pj, k, y]
                dst = out[j, k, y]
                for x in range(m1):
                    dst[x] = prow[x] * orow[x]


# --------------------------------------------------------------------------- near field
@jit(JIT)
def apply_transfer(spec: np.ndarray, transfer: np.ndarray, inverse: bool) -> None:
    """``spec[..., y, x] *= transfer[y, x]`` (``inverse``: its conjugate) in place, over the
    frames of a (B, K, M, M) stack: the near-field propagator's multiply.

    Replaces ``spec *= transfer`` (numpy's SIMD complex multiply rounds differently from the
    plain formula the fused kernels use; both paths use this one)."""
    b, kk, m0, m1 = spec.shape
    for j in range(b):
        for k in range(kk):
            for y in range(m0):
                row, hrow = spec[j, k, y], transfer[y]
                if inverse:
                    for x in range(m1):
                        row[x] = row[x] * hrow[x].conjugate()
                else:
                    for x in range(m1):
                        row[x] = row[x] * hrow[x]


# --------------------------------------------------------------------------- modulus
@jit(JIT)
def _mode_power_row(wave: np.ndarray, j: int, y: int, acc: np.ndarray) -> None:
    """``acc[:] = Σ_k |wave[j, k, y, :]|²`` in the wave's real precision."""
    kk, m1 = wave.shape[1], wave.shape[3]
    for x in range(m1):
        acc[x] = 0
    for k in range(kk):
        row = wave[j, k, y]
        for x in range(m1):
            v = row[x]
            acc[x] += v.real * v.real + v.imag * v.imag


@jit(JIT)
def modulus_project(wave: np.ndarray, amplitude: np.ndarray, out: np.ndarray,
                    eps: float) -> float:
    """Modulus projection and Fourier error in one pass; ``out`` may be ``wave``.

    Replaces ``model = sqrt(Σ_k |Ψ_k|²)``, ``err = Σ_valid (model - A)²`` and
    ``out = Ψ · where(A >= 0, A / (model + eps), 1)`` (:meth:`Operations.modulus_project`).
    Returns ``err`` (double).
    """
    b, kk, m0, m1 = wave.shape
    rdt = amplitude.dtype.type
    epsr = rdt(eps)
    power = np.empty(m1, amplitude.dtype)
    factor = np.empty(m1, amplitude.dtype)
    errs = np.zeros(m1, np.float64)
    for j in range(b):
        for y in range(m0):
            _mode_power_row(wave, j, y, power)
            arow = amplitude[j, y]
            for x in range(m1):
                a = arow[x]
                model = np.sqrt(power[x])
                d = model - a
                valid = a >= 0
                errs[x] += d * d if valid else 0.0
                factor[x] = a / (model + epsr) if valid else rdt(1)
            for k in range(kk):
                src = wave[j, k, y]
                dst = out[j, k, y]
                for x in range(m1):
                    dst[x] = src[x] * factor[x]
    return errs.sum()


@jit(JIT)
def _trial_power_row(model: np.ndarray, waves: np.ndarray, j: int, y: int,
                     acc: np.ndarray) -> None:
    """``acc[:] = Σ_k |2·model[j, k, y, :] − waves[j, k, y, :]|²`` (DM's trial wave)."""
    kk, m1 = waves.shape[1], waves.shape[3]
    two = acc.dtype.type(2)
    for x in range(m1):
        acc[x] = 0
    for k in range(kk):
        mrow, wrow = model[j, k, y], waves[j, k, y]
        for x in range(m1):
            m, w = mrow[x], wrow[x]
            tr = m.real * two - w.real
            ti = m.imag * two - w.imag
            acc[x] += tr * tr + ti * ti


@jit(JIT)
def dm_fourier_update(model: np.ndarray, waves: np.ndarray, amplitude: np.ndarray,
                      bound: float, eps: float) -> float:
    """DM's Fourier step, in place on ``waves``: ``Ψ ← Ψ + π(2Φ − Ψ) − Φ``, Φ = ``model``.

    Replaces (:mod:`ptychompi.engines.dm`) ``err = fourier_error_terms(Φ, A)``,
    ``trial = 2Φ − Ψ``, ``relaxed_modulus_project(trial, A, bound)`` (or the strict
    ``modulus_project`` when ``bound <= 0``) and ``Ψ += projected; Ψ −= Φ``: two passes over
    each frame (its statistics, then the update) instead of about ten over the stack.
    Returns ``err = Σ_valid (|Φ| − A)²`` (double).
    """
    b, kk, m0, m1 = waves.shape
    rdt = amplitude.dtype.type
    epsr = rdt(eps)
    two = rdt(2)
    pm = np.empty(m1, amplitude.dtype)
    pt = np.empty(m1, amplitude.dtype)
    errs = np.zeros(m1, np.float64)
    devs = np.empty(m1, np.float64)
    counts = np.empty(m1, np.int64)
    factor = np.empty(m1, amplitude.dtype)
    for j in range(b):
        devs[:] = 0.0
        counts[:] = 0
        for y in range(m0):  # pass 1: the model's error, the trial's deviation
            _mode_power_row(model, j, y, pm)
            _trial_power_row(model, waves, j, y, pt)
            arow = amplitude[j, y]
            for x in range(m1):
                a = arow[x]
                valid = a >= 0
                d = np.sqrt(pm[x]) - a
                errs[x] += d * d if valid else 0.0
                dt = np.sqrt(pt[x]) - a
                devs[x] += dt * dt if valid else 0.0
                counts[x] += 1 if valid else 0
        if bound > 0:
            mean = devs.sum() / max(counts.sum(), 1)
            renorm = rdt(np.sqrt(bound / max(mean, bound)))
        else:
            renorm = rdt(0)
        for y in range(m0):  # pass 2: Ψ += factor · (2Φ − Ψ) − Φ
            _trial_power_row(model, waves, j, y, pt)
            arow = amplitude[j, y]
            for x in range(m1):
                a = arow[x]
                t = np.sqrt(pt[x])
                target = (t - a) * renorm + a
                factor[x] = target / (t + epsr) if a >= 0 else rdt(1)
            for k in range(kk):
                mrow, wrow = model[j, k, y], waves[j, k, y]
                for x in range(m1):
                    m, w = mrow[x], wrow[x]
                    trial = m * two - w
                    wrow[x] = (w + trial * factor[x]) - m
    return errs.sum()


# --------------------------------------------------------------------------- sub-pixel
@jit(JIT)
def ramp_fill(probe_ft: np.ndarray, ramp_r: np.ndarray, ramp_c: np.ndarray,
              out: np.ndarray) -> None:
    """``out[j, k] = probe_ft[k] · ramp_r[j][:, None] · ramp_c[j][None, :]``.

    Replaces ``probe_ft[None] * rr[:, None, :, None] * rc[:, None, None, :]``.
    """
    b, kk, m0, m1 = out.shape
    for j in range(b):
        for k in range(kk):
            for y in range(m0):
                srow, dst, ry = probe_ft[k, y], out[j, k, y], ramp_r[j, y]
                rc = ramp_c[j]
                for x in range(m1):
                    dst[x] = (srow[x] * ry) * rc[x]


@jit(JIT)
def ramp_sum(spec: np.ndarray, ramp_r: np.ndarray, ramp_c: np.ndarray,
             out: np.ndarray) -> None:
    """``out[k] += Σ_j spec[j, k] · conj(ramp_r[j])[:, None] · conj(ramp_c[j])[None, :]``
    into a complex128 ``out``.

    Replaces ``spec *= rr.conj()[:, None, :, None]; spec *= rc.conj()[:, None, None, :];
    spec.sum(axis=0, dtype=complex128)`` (:meth:`Operations.unshift_sum`).
    """
    b, kk, m0, m1 = spec.shape
    for j in range(b):
        rc = ramp_c[j]
        for k in range(kk):
            for y in range(m0):
                srow, dst, ry = spec[j, k, y], out[k, y], ramp_r[j, y].conjugate()
                for x in range(m1):
                    dst[x] += (srow[x] * ry) * rc[x].conjugate()
