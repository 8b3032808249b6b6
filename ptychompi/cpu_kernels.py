"""Fused CPU kernels (numba) for the element-wise passes of the engines.

Each kernel does in one loop over a frame, while the frame is in cache, what the plain numpy
expression named in its docstring does in several passes over whole (B, K, M, M) stacks. They
are compiled on first use (``cache=True``: once per machine, then loaded from ``__pycache__``)
and release the GIL, so the engines' worker threads (:meth:`Engine.map_chunks`) run them in
parallel. The GPU path never calls them (:mod:`ptychompi.kernels` and ``kernels/*.cu``).

Conventions: waves are C-contiguous (B, K, M, M) complex arrays, amplitudes (B, M, M) real
with masked pixels < 0, probes (B, K, M, M) or (1, K, M, M) (one probe for every position),
objects 2-D; windows of the object are ``obj[rows[j]:rows[j]+M, cols[j]:cols[j]+M]``.
Element-wise arithmetic stays in the arrays' working precision (complex64/float32) in the
order numpy uses; sums over pixels or positions are accumulated in the precision of the
output the caller passes: double precision everywhere except LSQML's object tiles (working
precision; LSQML does not amplify their rounding, see :mod:`ptychompi.engines.lsqml`).
Row buffers hold per-pixel partial sums so that the inner loops vectorise without reordering
floating-point additions (no ``fastmath``); only :func:`lsqml_step_terms` lets its per-position
double-precision dot products be reassociated (deterministic for a given build). No kernel
mixes the rounding of one frame into another's, so results do not depend on how positions are
grouped into chunks, threads or tiles beyond the order of the sums.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np

_JIT = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}
# per-position dot products: the additions may be reordered (vectorised partial sums), which
# is deterministic for a given build and changes only double-precision rounding
_JIT_SUMS = {**_JIT, "fastmath": {"reassoc"}}


def _jit(options: dict) -> Callable[[Callable], Callable]:
    """``numba.njit(**options)``, without the on-disk cache where no cache folder is writable.

    numba refuses ``cache=True`` at decoration time ("no locator available") when neither the
    package's ``__pycache__`` nor the user's cache folder (``NUMBA_CACHE_DIR``) can be
    written, e.g. a read-only install with a read-only home: the kernels then compile in
    every process instead of failing the import.
    """
    def wrap(fn: Callable) -> Callable:
        try:
            return numba.njit(**options)(fn)
        except RuntimeError:
            return numba.njit(**{**options, "cache": False})(fn)

    return wrap


# --------------------------------------------------------------------------- exit waves
@_jit(_JIT)
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
@_jit(_JIT)
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
@_jit(_JIT)
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


@_jit(_JIT)
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


@_jit(_JIT)
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


@_jit(_JIT)
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


# --------------------------------------------------------------------------- object sums
@_jit(_JIT)
def object_terms(values: np.ndarray, probes: np.ndarray, probe_of: np.ndarray,
                 rows: np.ndarray, cols: np.ndarray, num: np.ndarray, den: np.ndarray) -> None:
    """Object numerator and denominator, scatter-added into the given tiles, with
    position j's probe ``probes[probe_of[j]]``.

    Replaces ``scatter_add(num, mode_sum(values, probes[probe_of].conj()), rows, cols)`` and
    ``scatter_add(den, Σ_k |probes[probe_of]_k|², rows, cols)`` (windows may overlap).
    """
    b, kk, m0, m1 = values.shape
    for j in range(b):
        pj = probe_of[j]
        r, c = rows[j], cols[j]
        for y in range(m0):
            nrow = num[r + y, c:c + m1]
            drow = den[r + y, c:c + m1]
            for k in range(kk):
                prow, vrow = probes[pj, k, y], values[j, k, y]
                for x in range(m1):
                    p = prow[x]
                    nrow[x] += vrow[x] * p.conjugate()
                    drow[x] += p.real * p.real + p.imag * p.imag


@_jit(_JIT)
def lsqml_object_terms(chi: np.ndarray, psi: np.ndarray, probes: np.ndarray,
                       probe_of: np.ndarray, obj: np.ndarray, rows: np.ndarray,
                       cols: np.ndarray, num: np.ndarray, den: np.ndarray,
                       pnum: np.ndarray, slot: np.ndarray) -> None:
    """LSQML's exit-wave update and its sums: ``chi -= psi`` in place, then the object
    numerator ``num += Σ_k chi_k conj(P_k)``, the illumination ``den += Σ_k |P_k|²`` (both
    scatter-added) and, when ``pnum`` (S, K, M, M) has rows, the probe direction terms
    ``pnum[slot[j], k] += chi_jk conj(O_j)`` (one slot for all positions, one per position, or
    one per run of positions sharing a sub-pixel shift); position j's probe is
    ``probes[probe_of[j]]``.

    Replaces ``chi -= psi``, the two ``scatter_add`` calls of :func:`object_terms` and
    :func:`conj_window_products` of ``chi`` (a second pass over the frames).
    """
    b, kk, m0, m1 = chi.shape
    with_probe = pnum.shape[0] > 0
    for j in range(b):
        pj = probe_of[j]
        r, c = rows[j], cols[j]
        s = slot[j] if with_probe else 0
        for y in range(m0):
            orow = obj[r + y, c:c + m1]
            nrow = num[r + y, c:c + m1]
            drow = den[r + y, c:c + m1]
            for k in range(kk):
                prow, crow, srow = probes[pj, k, y], chi[j, k, y], psi[j, k, y]
                for x in range(m1):
                    p = prow[x]
                    v = crow[x] - srow[x]
                    crow[x] = v
                    nrow[x] += v * p.conjugate()
                    drow[x] += p.real * p.real + p.imag * p.imag
                if with_probe:
                    qrow = pnum[s, k, y]
                    for x in range(m1):
                        qrow[x] += crow[x] * orow[x].conjugate()


# --------------------------------------------------------------------------- probe sums
@_jit(_JIT)
def probe_terms(values: np.ndarray, obj: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                pnum: np.ndarray, pden: np.ndarray) -> None:
    """Probe numerator ``pnum[k] += Σ_j conj(O_j) values_jk`` and denominator
    ``pden += Σ_j |O_j|²`` (double precision), reading the windows in place.

    Replaces ``(obj.conj()[:, None] * values).sum(0, dtype=complex128)`` and
    ``(|obj|²).sum(0, dtype=float64)`` with ``obj = extract(backend, obj, index)``.
    """
    b, kk, m0, m1 = values.shape
    window_power(obj, rows, cols, pden)
    for j in range(b):
        r, c = rows[j], cols[j]
        for y in range(m0):
            orow = obj[r + y, c:c + m1]
            for k in range(kk):
                vrow, qrow = values[j, k, y], pnum[k, y]
                for x in range(m1):
                    qrow[x] += orow[x].conjugate() * vrow[x]


@_jit(_JIT)
def window_power(obj: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                 out: np.ndarray) -> None:
    """``out += Σ_j |O_j|²`` (double precision), reading the windows in place.

    Replaces ``(abs(extract(backend, obj, index)) ** 2).sum(0, dtype=float64)``.
    """
    m0, m1 = out.shape
    for j in range(len(rows)):
        r, c = rows[j], cols[j]
        for y in range(m0):
            orow = obj[r + y, c:c + m1]
            drow = out[y]
            for x in range(m1):
                o = orow[x]
                drow[x] += o.real * o.real + o.imag * o.imag


@_jit(_JIT)
def conj_window_products(values: np.ndarray, obj: np.ndarray, rows: np.ndarray,
                         cols: np.ndarray, slot: np.ndarray, out: np.ndarray) -> None:
    """``out[slot[j], k] += conj(O_j) · values[j, k]`` for k < K and, when ``out`` has
    K + 1 modes, ``out[slot[j], K] += |O_j|²`` (the stack that :meth:`Operations.unshift_sum`
    back-shifts), each product formed in the values' precision and added in ``out``'s.

    With ``slot = arange(B)`` and a zeroed ``out`` this replaces
    ``concatenate([obj.conj()[:, None] * values, |obj|²[:, None]], 1)``; with positions
    sharing slots it also sums them (``np.add.reduceat`` over runs, 10x faster).
    """
    b, kk, m0, m1 = values.shape
    with_power = out.shape[1] > kk
    for j in range(b):
        r, c, s = rows[j], cols[j], slot[j]
        for y in range(m0):
            orow = obj[r + y, c:c + m1]
            for k in range(kk):
                vrow, dst = values[j, k, y], out[s, k, y]
                for x in range(m1):
                    dst[x] += orow[x].conjugate() * vrow[x]
            if with_power:
                dst = out[s, kk, y]
                for x in range(m1):
                    o = orow[x]
                    dst[x] += o.real * o.real + o.imag * o.imag


# --------------------------------------------------------------------------- sub-pixel
@_jit(_JIT)
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


@_jit(_JIT)
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


# --------------------------------------------------------------------------- LSQML steps
@_jit(_JIT_SUMS)
def lsqml_step_terms(chi: np.ndarray, probes: np.ndarray, probe_of: np.ndarray,
                     obj: np.ndarray, d_obj: np.ndarray, d_probe: np.ndarray,
                     rows: np.ndarray, cols: np.ndarray, out: np.ndarray) -> None:
    """Per-position sums of LSQML's 2x2 step-length system, in double precision.

    With ``dop = ΔO_j · P_j`` and ``dpo = ΔP · O_j``: ``out[j] = (Re⟨dop, dop⟩,
    Re⟨dop, χ⟩, Re⟨dpo, dpo⟩, Re⟨dop, dpo⟩, Re⟨dpo, χ⟩)``; the last three are left at zero
    when ``d_probe`` has no modes. Replaces the ``re_inner`` calls of the LSQML engine and
    their (B, K, M, M) temporaries ``extract(d_obj)[:, None] * probes``, ``d_probe * obj``.
    """
    b, kk, m0, m1 = chi.shape
    with_probe = d_probe.shape[0] == kk
    for j in range(b):
        pj = probe_of[j]
        r, c = rows[j], cols[j]
        s0 = s1 = s2 = s3 = s4 = 0.0
        for y in range(m0):
            orow = obj[r + y, c:c + m1]
            drow = d_obj[r + y, c:c + m1]
            for k in range(kk):
                prow, crow = probes[pj, k, y], chi[j, k, y]
                if not with_probe:
                    for x in range(m1):
                        dop = drow[x] * prow[x]
                        ch = crow[x]
                        s0 += dop.real * dop.real + dop.imag * dop.imag
                        s1 += dop.real * ch.real + dop.imag * ch.imag
                    continue
                qrow = d_probe[k, y]
                for x in range(m1):
                    dop = drow[x] * prow[x]
                    dpo = qrow[x] * orow[x]
                    ch = crow[x]
                    s0 += dop.real * dop.real + dop.imag * dop.imag
                    s1 += dop.real * ch.real + dop.imag * ch.imag
                    s2 += dpo.real * dpo.real + dpo.imag * dpo.imag
                    s3 += dop.real * dpo.real + dop.imag * dpo.imag
                    s4 += dpo.real * ch.real + dpo.imag * ch.imag
        out[j, 0], out[j, 1], out[j, 2], out[j, 3], out[j, 4] = s0, s1, s2, s3, s4


# --------------------------------------------------------------------------- line search
@_jit(_JIT)
def weighted_power(values: np.ndarray, weight: np.ndarray) -> float:
    """``Σ_g Σ_k Σ_r weight[g, r] |values[g, k, r]|²`` in double precision, without the
    temporaries of ``(weight[:, None] * abs(values) ** 2).sum()``."""
    g, kk, m0, m1 = values.shape
    total = 0.0
    for i in range(g):
        for k in range(kk):
            for y in range(m0):
                vrow, wrow = values[i, k, y], weight[i, y]
                for x in range(m1):
                    re, im = np.float64(vrow[x].real), np.float64(vrow[x].imag)
                    total += wrow[x] * (re * re + im * im)
    return total


# --------------------------------------------------------------------------- accumulators
@_jit(_JIT)
def reduce_accumulators(acc: np.ndarray, out: np.ndarray, lo: np.ndarray,
                        hi: np.ndarray) -> None:
    """``out = Σ_t acc[t]`` added in thread order and cast to ``out``'s dtype; then zeroes
    ``acc`` for its next use. Accumulator t is read only in its rows ``lo[t] <= y < hi[t]``
    (those its thread wrote; the others are zero and stay so), so a thread whose windows
    covered part of the tile costs only that part.

    Replaces ``total = acc[0]; total += acc[1]; ...; total.astype(dtype)`` and allocating
    fresh zeroed per-thread buffers.
    """
    t, h, w = acc.shape
    buf = np.empty(w, acc.dtype)
    for y in range(h):
        used = 0
        for i in range(t):
            if y < lo[i] or y >= hi[i]:
                continue
            row = acc[i, y]
            if used == 0:
                for x in range(w):
                    buf[x] = row[x]
                    row[x] = 0
            else:
                for x in range(w):
                    buf[x] += row[x]
                    row[x] = 0
            used += 1
        dst = out[y]
        if used == 0:
            for x in range(w):
                dst[x] = 0
        else:
            for x in range(w):
                dst[x] = buf[x]


@_jit(_JIT)
def lsqml_object_direction(num: np.ndarray, illum: np.ndarray, damping: float, eps: float,
                           out: np.ndarray) -> None:
    """LSQML's preconditioned object direction ``out = num / sqrt(illum² + damping + eps)``
    (working precision), replacing the numpy expression's four passes over the tile."""
    rdt = illum.dtype.type
    d, e = rdt(damping), rdt(eps)
    h, w = num.shape
    for y in range(h):
        nrow, irow, dst = num[y], illum[y], out[y]
        for x in range(w):
            i = irow[x]
            v, q = nrow[x], np.sqrt(i * i + d + e)
            dst[x] = complex(v.real / q, v.imag / q)  # what complex / real gives, 10x faster


# --------------------------------------------------------------------------- ePIE
@_jit(_JIT)
def epie_update(chi: np.ndarray, psi: np.ndarray, probes: np.ndarray, obj: np.ndarray,
                rows: np.ndarray, cols: np.ndarray, steps: np.ndarray, psum: np.ndarray,
                store_grad: bool) -> None:
    """rPIE's updates (Maiden, Johnson & Li 2017) for a batch of non-overlapping windows.

    ``steps = (α, w)``. With ``Δ_j = chi_j − psi_j`` and ``|P_j|² = Σ_k|P_jk|²``:
    ``O_j += α Σ_k conj(P_jk) Δ_jk / ((1 − w)|P_j|² + w max|P_j|²)`` in place (each probe
    row's own power, in working precision; ``w = 1`` is ePIE's ``α / max|P_j|²``) and the
    probe gradient ``g_jk = Δ_jk conj(O_j) / ((1 − w)|O_j|² + w max|O_j|²)`` of the old
    object, either summed into ``psum`` (K modes, complex128) or, with ``store_grad``,
    written over ``chi``.

    Replaces the power, ``delta = chi − psi``, ``weight = step · probes.conj()``, the mode
    sum, ``scatter_add_disjoint``, ``omax``, ``obj.conj() / denominator`` and
    ``delta *= scaled``.
    """
    b, kk, m0, m1 = chi.shape
    alpha, w = steps[0], steps[1]
    classic = w == 1.0
    shared = probes.shape[0] == 1
    accumulate = psum.shape[0] == kk
    with_probe = accumulate or store_grad
    rdt = obj.real.dtype.type
    upd = np.empty(m1, obj.dtype)
    scaled = np.empty(m1, obj.dtype)
    power = np.empty(m1, obj.real.dtype)
    step = np.empty(m1, obj.real.dtype)
    pmax = rdt(0)
    for j in range(b):
        pj = 0 if shared else j
        r, c = rows[j], cols[j]
        if j == 0 or not shared:  # max_pixels Σ_k |P_jk|² (numpy's order: modes in turn)
            pmax = rdt(0)
            for y in range(m0):
                _mode_power(probes, pj, y, power)
                for x in range(m1):
                    pmax = max(pmax, power[x])
        omax = rdt(0)
        if with_probe:
            for y in range(m0):
                orow = obj[r + y, c:c + m1]
                for x in range(m1):
                    o = orow[x]
                    omax = max(omax, o.real * o.real + o.imag * o.imag)
        stepr = rdt(alpha / pmax)  # classic ePIE (w = 1): one step per position
        for y in range(m0):
            orow = obj[r + y, c:c + m1]
            if not classic:
                _mode_power(probes, pj, y, power)
                for x in range(m1):
                    step[x] = rdt(alpha / ((1.0 - w) * power[x] + w * pmax))
            if not with_probe:
                for x in range(m1):
                    scaled[x] = orow[x]
            elif classic:
                for x in range(m1):
                    scaled[x] = orow[x].conjugate() / omax
            else:
                for x in range(m1):
                    o = orow[x]
                    scaled[x] = o.conjugate() / rdt((1.0 - w) * (o.real * o.real
                                                                 + o.imag * o.imag)
                                                    + w * omax)
            for k in range(kk):
                prow, crow, srow = probes[pj, k, y], chi[j, k, y], psi[j, k, y]
                for x in range(m1):
                    crow[x] = crow[x] - srow[x]
                if classic and k == 0:
                    for x in range(m1):
                        upd[x] = prow[x].conjugate() * stepr * crow[x]
                elif classic:
                    for x in range(m1):
                        upd[x] += prow[x].conjugate() * stepr * crow[x]
                elif k == 0:
                    for x in range(m1):
                        upd[x] = prow[x].conjugate() * step[x] * crow[x]
                else:
                    for x in range(m1):
                        upd[x] += prow[x].conjugate() * step[x] * crow[x]
                if with_probe:
                    for x in range(m1):
                        crow[x] = crow[x] * scaled[x]
                else:
                    for x in range(m1):
                        crow[x] = crow[x] + srow[x]
                if accumulate:
                    qrow = psum[k, y]
                    for x in range(m1):
                        qrow[x] += crow[x]
            for x in range(m1):
                orow[x] += upd[x]


@_jit(_JIT)
def _mode_power(probes: np.ndarray, pj: int, y: int, power: np.ndarray) -> None:
    """``power[x] = Σ_k |probes[pj, k, y, x]|²`` (modes added in turn)."""
    for k in range(probes.shape[1]):
        prow = probes[pj, k, y]
        if k == 0:
            for x in range(prow.shape[0]):
                p = prow[x]
                power[x] = p.real * p.real + p.imag * p.imag
        else:
            for x in range(prow.shape[0]):
                p = prow[x]
                power[x] += p.real * p.real + p.imag * p.imag


# --------------------------------------------------------------------------- scheduling
@_jit(_JIT)
def first_fit_batches(order: np.ndarray, rows: np.ndarray, cols: np.ndarray, frame: int,
                      limit: int, batch_of: np.ndarray) -> int:
    """Greedy split of ``order`` into batches of mutually non-overlapping ``frame``-sized
    windows: each position joins the first batch (in creation order) that has fewer than
    ``limit`` members and no window overlapping its own. Writes each position's batch
    (``batch_of[i]`` for ``order[i]``) and returns the number of batches.

    Replaces a Python loop with one vectorised test against all batches per position.
    """
    n = order.shape[0]
    capacity = max(1, min(n, 1024))
    mem_r = np.empty((capacity, limit), np.int64)
    mem_c = np.empty((capacity, limit), np.int64)
    count = np.zeros(capacity, np.int64)
    used = 0
    first_open = 0  # the batches before it are full
    for i in range(n):
        j = order[i]
        r, c = rows[j], cols[j]
        b = used
        for q in range(first_open, used):
            if count[q] >= limit:
                continue
            clash = False
            for k in range(count[q]):
                if abs(mem_r[q, k] - r) < frame and abs(mem_c[q, k] - c) < frame:
                    clash = True
                    break
            if not clash:
                b = q
                break
        if b == capacity:  # room for more batches
            capacity *= 2
            grown_r = np.empty((capacity, limit), np.int64)
            grown_c = np.empty((capacity, limit), np.int64)
            grown_n = np.zeros(capacity, np.int64)
            grown_r[:used], grown_c[:used], grown_n[:used] = mem_r[:used], mem_c[:used], \
                count[:used]
            mem_r, mem_c, count = grown_r, grown_c, grown_n
        k = count[b]
        mem_r[b, k], mem_c[b, k] = r, c
        count[b] = k + 1
        if b == used:
            used += 1
        while first_open < used and count[first_open] >= limit:
            first_open += 1
        batch_of[i] = b
    return used
