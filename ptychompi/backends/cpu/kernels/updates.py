"""Per-thread accumulators reduced in order, LSQML's object direction and ePIE's in-place
update (conventions: :mod:`ptychompi.backends.cpu.kernels`)."""

from __future__ import annotations

import numpy as np

from ..jit import JIT, JIT_FINITE, jit


# --------------------------------------------------------------------------- accumulators
@jit(JIT)
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


@jit(JIT)
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
@jit(JIT_FINITE)  # its max|P|², max|O|² reductions vectorised
def epie_update(chi: np.ndarray, psi: np.ndarray, probes: np.ndarray, obj: np.ndarray,
                rows: np.ndarray, cols: np.ndarray, steps: np.ndarray, psum: np.ndarray,
                store_grad: bool) -> None:
    """rPIE's updates (Maiden, Johnson & Li 2017) for a batch of non-overlapping windows.

    ``steps = (α, w)``. With ``Δ_j = chi_j − psi_j`` and ``|P_j|² = Σ_k|P_jk|²``:
    ``O_j += α Σ_k conj(P_jk) Δ_jk / ((1 − w)|P_j|² + w max|P_j|²)`` in place (each probe
    row's own power, in working precision; ``w = 1`` is ePIE's ``α / max|P_j|²``) and the
    probe gradient ``g_jk = Δ_jk conj(O_j) / max|O_j|²`` of the old object (ePIE's, as in
    rPIE: with ``w`` in the probe step too, low doses run away), either summed into
    ``psum`` (K modes, complex128) or, with ``store_grad``, written over ``chi``.

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
            else:
                for x in range(m1):
                    scaled[x] = orow[x].conjugate() / omax
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


@jit(JIT)
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
