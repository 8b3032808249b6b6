"""Compiled per-position sums of the position refinement (CPU;
:mod:`ptychompi.engines.positions`).

The fused variant reuses the building blocks of :mod:`ptychompi.backends.cpu.fused` and
:mod:`ptychompi.backends.cpu.kernels` (read only): the same exit wave, FFTW transforms and modulus
projection as the engines' fused paths, one position at a time with its frames in cache."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ...model.physics import EPS, probe_index
from . import fftw
from . import fused as fk
from . import kernels as ck
from .jit import JIT, JIT_SUMS, jit


@jit(JIT_SUMS)
def position_sums(probes: np.ndarray, probe_of: np.ndarray, back: np.ndarray, psi: np.ndarray,
                  d_row: np.ndarray, d_col: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                  out: np.ndarray) -> None:
    """``out[j] = (Σ Re(conj(g_r) χ), Σ |g_r|², Σ Re(conj(g_c) χ), Σ |g_c|²)`` over the modes
    and pixels of position j, with ``χ = back − psi`` and ``g = P_j · ∂O`` on its window
    (``probes[probe_of[j]]``, ``d_row`` / ``d_col`` the object's derivatives), in double
    precision."""
    b, kk, m0, m1 = back.shape
    for j in range(b):
        p, r0, c0 = probe_of[j], rows[j], cols[j]
        num_r = 0.0
        den_r = 0.0
        num_c = 0.0
        den_c = 0.0
        for k in range(kk):
            for y in range(m0):
                for x in range(m1):
                    pv = probes[p, k, y, x]
                    ch = back[j, k, y, x] - psi[j, k, y, x]
                    gr = pv * d_row[r0 + y, c0 + x]
                    gc = pv * d_col[r0 + y, c0 + x]
                    num_r += np.float64(gr.real) * ch.real + np.float64(gr.imag) * ch.imag
                    den_r += np.float64(gr.real) * gr.real + np.float64(gr.imag) * gr.imag
                    num_c += np.float64(gc.real) * ch.real + np.float64(gc.imag) * ch.imag
                    den_c += np.float64(gc.real) * gc.real + np.float64(gc.imag) * gc.imag
        out[j, 0] = num_r
        out[j, 1] = den_r
        out[j, 2] = num_c
        out[j, 3] = den_c


@jit(JIT_SUMS)
def row_buffers(m1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`window_row`'s outputs for rows of ``m1`` pixels: ``d_row``, ``d_col``, ``q``
    (complex64) and ``power`` (float32)."""
    return (np.empty(m1, np.complex64), np.empty(m1, np.complex64),
            np.empty(m1, np.complex64), np.empty(m1, np.float32))


@jit(JIT_SUMS)
def window_row(probes: np.ndarray, p: int, chi: np.ndarray, j: int, obj: np.ndarray, r: int,
               c0: int, y: int, d_row: np.ndarray, d_col: np.ndarray, q: np.ndarray,
               power: np.ndarray) -> None:
    """Row ``y`` of position j's window (object row ``r``, first column ``c0``): the
    object's central differences ``d_row``, ``d_col`` (one-sided at its edges, as
    :func:`ptychompi.ops.steps.central_differences`), ``q = Σ_k conj(P_k) χ_k`` and
    ``power = Σ_k |P_k|²`` (``probes[p]``, ``chi[j]``), each (M,)."""
    kk, m1 = chi.shape[1], chi.shape[3]
    h, w = obj.shape
    half = np.float32(0.5)
    up, down = min(r + 1, h - 1), max(r - 1, 0)
    scale_r = half if up - down == 2 else np.float32(1.0)
    for x in range(m1):
        d_row[x] = (obj[up, c0 + x] - obj[down, c0 + x]) * scale_r
    if c0 > 0 and c0 + m1 < w:  # no column of the window at the object's edge
        for x in range(m1):
            d_col[x] = (obj[r, c0 + x + 1] - obj[r, c0 + x - 1]) * half
    else:
        for x in range(m1):
            c = c0 + x
            right, left = min(c + 1, w - 1), max(c - 1, 0)
            d_col[x] = (obj[r, right] - obj[r, left]) * (half if right - left == 2
                                                         else np.float32(1.0))
    for x in range(m1):
        pv = probes[p, 0, y, x]
        q[x] = pv.conjugate() * chi[j, 0, y, x]
        power[x] = pv.real * pv.real + pv.imag * pv.imag
    for k in range(1, kk):
        for x in range(m1):
            pv = probes[p, k, y, x]
            q[x] += pv.conjugate() * chi[j, k, y, x]
            power[x] += pv.real * pv.real + pv.imag * pv.imag


@jit(JIT_SUMS)
def residual_position_sums(probes: np.ndarray, probe_of: np.ndarray, chi: np.ndarray,
                           obj: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                           out: np.ndarray) -> None:
    """:func:`position_sums` of a residual ``chi`` (B, K, M, M) an engine already formed
    (LSQML's ``Ψ' − ψ``), with the object's central differences (one-sided at its edges, as
    :func:`ptychompi.ops.steps.central_differences`) taken on the fly. Per pixel the modes
    enter as ``q = Σ_k conj(P_k) χ_k`` and ``Σ_k |P_k|²`` (then ``Re(conj(∂O) q)`` and
    ``|∂O|² Σ_k |P_k|²``); each row is summed in single precision, the rows in double."""
    b, kk, m0, m1 = chi.shape
    d_row, d_col, q, power = row_buffers(m1)
    for j in range(b):
        p, r0, c0 = probe_of[j], rows[j], cols[j]
        num_r = 0.0
        den_r = 0.0
        num_c = 0.0
        den_c = 0.0
        for y in range(m0):
            window_row(probes, p, chi, j, obj, r0 + y, c0, y, d_row, d_col, q, power)
            nr = np.float32(0.0)
            dr = np.float32(0.0)
            nc = np.float32(0.0)
            dc = np.float32(0.0)
            for x in range(m1):
                a, g, e = d_row[x], d_col[x], q[x]
                nr += a.real * e.real + a.imag * e.imag
                dr += (a.real * a.real + a.imag * a.imag) * power[x]
                nc += g.real * e.real + g.imag * e.imag
                dc += (g.real * g.real + g.imag * g.imag) * power[x]
            num_r += nr
            den_r += dr
            num_c += nc
            den_c += dc
        out[j, 0] = num_r
        out[j, 1] = den_r
        out[j, 2] = num_c
        out[j, 3] = den_c


@jit(JIT_SUMS)
def residual_refinement_sums(probes: np.ndarray, probe_of: np.ndarray, chi: np.ndarray,
                             obj: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                             out: np.ndarray) -> None:
    """Per position (B, 17) float64 in one pass: :func:`residual_position_sums`'s four (to
    the bit: the same row sums) then the 13 terms of
    :func:`ptychompi.ops.steps.valley_terms` (the differences taken alike). Per row the
    pixels are summed in single precision against the column weight, the rows in double
    against the row weight."""
    b, kk, m0, m1 = chi.shape
    d_row, d_col, q, power = row_buffers(m1)
    for j in range(b):
        p, r0, c0 = probe_of[j], rows[j], cols[j]
        num_r = den_r = num_c = den_c = 0.0
        n_rr = n_rc = n_cr = n_cc = 0.0
        g0 = g1 = g2 = g3 = g4 = g5 = g6 = g7 = g8 = 0.0
        for y in range(m0):
            window_row(probes, p, chi, j, obj, r0 + y, c0, y, d_row, d_col, q, power)
            # per row: Σ t (weight 1) and Σ t w_c, for t_r, t_c and u_0..u_2 (w_c² too)
            tr0 = tr1 = tc0 = tc1 = np.float32(0.0)
            a0 = a1 = a2 = b0 = b1 = b2 = c0_ = c1_ = c2_ = np.float32(0.0)
            for x in range(m1):
                wc = np.float32(x - m1 / 2)
                a, g, e = d_row[x], d_col[x], q[x]
                tr = a.real * e.real + a.imag * e.imag
                tc = g.real * e.real + g.imag * e.imag
                tr0 += tr
                tr1 += tr * wc
                tc0 += tc
                tc1 += tc * wc
                u0 = (a.real * a.real + a.imag * a.imag) * power[x]
                u1 = (a.real * g.real + a.imag * g.imag) * power[x]
                u2 = (g.real * g.real + g.imag * g.imag) * power[x]
                a0 += u0
                a1 += u0 * wc
                a2 += u0 * wc * wc
                b0 += u1
                b1 += u1 * wc
                b2 += u1 * wc * wc
                c0_ += u2
                c1_ += u2 * wc
                c2_ += u2 * wc * wc
            num_r += tr0
            den_r += a0
            num_c += tc0
            den_c += c0_
            wr = np.float64(y - m0 / 2)
            n_rr -= tr0 * wr
            n_rc -= tr1
            n_cr -= tc0 * wr
            n_cc -= tc1
            g0 += a0 * wr * wr
            g1 += a1 * wr
            g2 += a2
            g3 += b0 * wr * wr
            g4 += b1 * wr
            g5 += b2
            g6 += c0_ * wr * wr
            g7 += c1_ * wr
            g8 += c2_
        out[j, 0] = num_r
        out[j, 1] = den_r
        out[j, 2] = num_c
        out[j, 3] = den_c
        out[j, 4] = n_rr
        out[j, 5] = n_rc
        out[j, 6] = n_cr
        out[j, 7] = n_cc
        out[j, 8] = g0
        out[j, 9] = g1
        out[j, 10] = g2
        out[j, 11] = g3
        out[j, 12] = g4
        out[j, 13] = g5
        out[j, 14] = g6
        out[j, 15] = g7
        out[j, 16] = g8


@jit(JIT)
def between_bins(stack: np.ndarray, member: np.ndarray, rest: np.ndarray, g: int,
                 out: np.ndarray) -> None:
    """``out[j] = stack[s] − rest[j, 0] · stack[g + s] − rest[j, 1] · stack[2g + s]`` with
    ``s = member[j]``: each position's probe from its bin's shifted probe and the two
    gradients (:func:`ptychompi.engines.shift_tables.between_bin_probes`) in one pass."""
    b, kk, m0, m1 = out.shape
    for j in range(b):
        s = member[j]
        dr = np.float32(rest[j, 0])
        dc = np.float32(rest[j, 1])
        for k in range(kk):
            for y in range(m0):
                a, gr, gc, dst = stack[s, k, y], stack[g + s, k, y], stack[2 * g + s, k, y], \
                    out[j, k, y]
                for x in range(m1):
                    dst[x] = (a[x] - dr * gr[x]) - dc * gc[x]


class PositionArgs(NamedTuple):
    """:func:`fused_position_sums`' chunk: position j measured as ``amplitudes[frames[j]]``,
    seeing ``probes[probe_of[j]]``; ``d_row``, ``d_col``: the object's derivatives; the sums
    go to ``out`` (B, 4)."""

    amplitudes: np.ndarray
    frames: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    obj: np.ndarray
    probes: np.ndarray
    probe_of: np.ndarray
    d_row: np.ndarray
    d_col: np.ndarray
    eps: float
    out: np.ndarray


@jit(JIT)
def fused_position_sums(execute: Any, a: PositionArgs, plans: fk.Plans, s: fk.Frames) -> None:
    """:func:`position_sums` of a chunk with the exit wave, propagation, modulus projection
    and back-propagation done position by position in the same call (FFTW's ``execute`` as
    in :mod:`ptychompi.backends.cpu.fused`)."""
    m0, m1 = s.psi.shape[2], s.psi.shape[3]
    scale = np.complex64(1.0 / np.sqrt(m0 * m1))
    f, b, h = plans.forward, plans.backward, plans.transfer
    for j in range(a.rows.shape[0]):
        r, c, of = a.rows[j:j + 1], a.cols[j:j + 1], a.probe_of[j:j + 1]
        ck.exit_waves(a.probes, of, a.obj, r, c, s.psi)
        fk._propagate(execute, f, b, s.psi, s.wave, s.tmp, h, False, scale)
        k = a.frames[j]
        ck.modulus_project(s.wave, a.amplitudes[k:k + 1], s.wave, a.eps)
        fk._propagate(execute, f, b, s.wave, s.chi, s.tmp, h, True, scale)
        position_sums(a.probes, of, s.chi, s.psi, a.d_row, a.d_col, r, c, a.out[j:j + 1])


def fused_chunk(job: Any, plans: fftw.FftwPlans) -> np.ndarray:
    """:func:`fused_position_sums` of a :class:`ptychompi.ops.PositionJob` (the backend's
    FFTW ``plans``): (B, 4)."""
    kk, m0, m1 = job.probes.shape[1:]
    out = np.empty((len(job.win), 4))
    args = PositionArgs(amplitudes=job.amplitudes, frames=fk._int64(job.frames),
                        rows=fk._int64(job.win.rows), cols=fk._int64(job.win.cols),
                        obj=job.obj, probes=np.ascontiguousarray(job.probes),
                        probe_of=fk._int64(probe_index(job.probes, len(job.win),
                                                       job.probe_of)),
                        d_row=job.d_row, d_col=job.d_col, eps=float(EPS), out=out)
    fused_position_sums(fftw.execute_dft, args, fk._plans_for(plans, (m0, m1), job.prop),
                        fk._frames((kk, m0, m1), "psi", "wave", "chi", "tmp"))
    return out
