"""Object and probe update sums, LSQML's step terms and the line search's weighted power
(conventions: :mod:`ptychompi.backends.cpu.kernels`)."""

from __future__ import annotations

import numpy as np

from ..jit import JIT, JIT_SUMS, jit


# --------------------------------------------------------------------------- object sums
@jit(JIT)
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


@jit(JIT)
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
@jit(JIT)
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


@jit(JIT)
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


@jit(JIT)
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


# --------------------------------------------------------------------------- LSQML steps
@jit(JIT_SUMS)
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
@jit(JIT)
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
