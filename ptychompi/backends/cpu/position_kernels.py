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
def row_buffers(m1: int) -> np.ndarray:
    """:func:`window_row`'s output for rows of ``m1`` pixels: (7, M) float32, the rows
    ``Re ∂_r O``, ``Im ∂_r O``, ``Re ∂_c O``, ``Im ∂_c O``, ``Re q``, ``Im q``, power."""
    return np.empty((7, m1), np.float32)


@jit(JIT_SUMS)
def window_row(probes: np.ndarray, p: int, chi: np.ndarray, j: int, obj: np.ndarray, r: int,
               c0: int, y: int, row: np.ndarray) -> None:
    """Row ``y`` of position j's window (object row ``r``, first column ``c0``) into ``row``
    (:func:`row_buffers`): the object's central differences ``∂_r O``, ``∂_c O`` (one-sided
    at its edges, as :func:`ptychompi.ops.steps.central_differences`), ``q = Σ_k conj(P_k)
    χ_k`` and ``Σ_k |P_k|²`` (``probes[p]``, ``chi[j]``), real and imaginary parts apart
    (each loop over contiguous row slices, which the compiler vectorises)."""
    kk, m1 = chi.shape[1], chi.shape[3]
    h, w = obj.shape
    drr, dri, dcr, dci, qr, qi, power = row[0], row[1], row[2], row[3], row[4], row[5], row[6]
    half = np.float32(0.5)
    up, down = min(r + 1, h - 1), max(r - 1, 0)
    scale_r = half if up - down == 2 else np.float32(1.0)
    o_up, o_down = obj[up, c0:c0 + m1], obj[down, c0:c0 + m1]
    for x in range(m1):
        d = o_up[x] - o_down[x]
        drr[x] = d.real * scale_r
        dri[x] = d.imag * scale_r
    if c0 > 0 and c0 + m1 < w:  # no column of the window at the object's edge
        o_left, o_right = obj[r, c0 - 1:c0 - 1 + m1], obj[r, c0 + 1:c0 + 1 + m1]
        for x in range(m1):
            d = o_right[x] - o_left[x]
            dcr[x] = d.real * half
            dci[x] = d.imag * half
    else:
        for x in range(m1):
            c = c0 + x
            right, left = min(c + 1, w - 1), max(c - 1, 0)
            scale_c = half if right - left == 2 else np.float32(1.0)
            d = obj[r, right] - obj[r, left]
            dcr[x] = d.real * scale_c
            dci[x] = d.imag * scale_c
    p_row, c_row = probes[p, 0, y], chi[j, 0, y]
    for x in range(m1):
        a, v = p_row[x], c_row[x]
        qr[x] = a.real * v.real + a.imag * v.imag
        qi[x] = a.real * v.imag - a.imag * v.real
        power[x] = a.real * a.real + a.imag * a.imag
    for k in range(1, kk):
        p_row, c_row = probes[p, k, y], chi[j, k, y]
        for x in range(m1):
            a, v = p_row[x], c_row[x]
            qr[x] += a.real * v.real + a.imag * v.imag
            qi[x] += a.real * v.imag - a.imag * v.real
            power[x] += a.real * a.real + a.imag * a.imag


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
    row = row_buffers(m1)
    drr, dri, dcr, dci, qr, qi, power = row[0], row[1], row[2], row[3], row[4], row[5], row[6]
    for j in range(b):
        p, r0, c0 = probe_of[j], rows[j], cols[j]
        num_r = 0.0
        den_r = 0.0
        num_c = 0.0
        den_c = 0.0
        for y in range(m0):
            window_row(probes, p, chi, j, obj, r0 + y, c0, y, row)
            nr = np.float32(0.0)
            dr = np.float32(0.0)
            nc = np.float32(0.0)
            dc = np.float32(0.0)
            for x in range(m1):
                nr += drr[x] * qr[x] + dri[x] * qi[x]
                dr += (drr[x] * drr[x] + dri[x] * dri[x]) * power[x]
                nc += dcr[x] * qr[x] + dci[x] * qi[x]
                dc += (dcr[x] * dcr[x] + dci[x] * dci[x]) * power[x]
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
    row = row_buffers(m1)
    drr, dri, dcr, dci, qr, qi, power = row[0], row[1], row[2], row[3], row[4], row[5], row[6]
    for j in range(b):
        p, r0, c0 = probe_of[j], rows[j], cols[j]
        num_r = den_r = num_c = den_c = 0.0
        n_rr = n_rc = n_cr = n_cc = 0.0
        g0 = g1 = g2 = g3 = g4 = g5 = g6 = g7 = g8 = 0.0
        for y in range(m0):
            window_row(probes, p, chi, j, obj, r0 + y, c0, y, row)
            # per row: Σ t (weight 1) and Σ t w_c, for t_r, t_c and u_0..u_2 (w_c² too)
            tr0 = tr1 = tc0 = tc1 = np.float32(0.0)
            a0 = a1 = a2 = b0 = b1 = b2 = c0_ = c1_ = c2_ = np.float32(0.0)
            for x in range(m1):
                wc = np.float32(x - m1 / 2)
                tr = drr[x] * qr[x] + dri[x] * qi[x]
                tc = dcr[x] * qr[x] + dci[x] * qi[x]
                tr0 += tr
                tr1 += tr * wc
                tc0 += tc
                tc1 += tc * wc
                u0 = (drr[x] * drr[x] + dri[x] * dri[x]) * power[x]
                u1 = (drr[x] * dcr[x] + dri[x] * dci[x]) * power[x]
                u2 = (dcr[x] * dcr[x] + dci[x] * dci[x]) * power[x]
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
def between_bin_probes(execute: Any, plan: int, spectrum: np.ndarray, ramp_r: np.ndarray,
                       ramp_c: np.ndarray, member: np.ndarray, rest: np.ndarray,
                       slope: np.ndarray, spec: np.ndarray, out: np.ndarray) -> None:
    """Each position's probe ``out[j]`` (B, K, M, M) between the bins, one inverse transform
    per position (FFTW's backward frame ``plan``): its bin's shifted spectrum (``spectrum``
    times the bin's ramps ``ramp_r[s]``, ``ramp_c[s]``, ``s = member[j]``) times the first
    order of the rest of the shift, ``1 − rest_r · slope_r − rest_c · slope_c`` (``slope`` =
    ``2πi f``), through the aligned scratch ``spec`` (1, K, M, M): the model of
    :meth:`ptychompi.ops.steps.Operations.between_bin_probes`, whose three transforms per
    bin cost more than one per position where the bins are nearly as many as the
    positions."""
    b, kk, m0, m1 = out.shape
    scale = np.float32(1.0 / np.sqrt(m0 * m1))
    one = np.complex64(1.0)
    # per position the column factors u = rc · scale and v = rc · slope · scale; per row
    # the pixel's factor is a · u + c · v with a = ry (1 − rest_r slope_r), c = −ry rest_c
    u = np.empty(m1, np.complex64)
    v = np.empty(m1, np.complex64)
    for j in range(b):
        s = member[j]
        dr = np.float32(rest[j, 0])
        dc = np.float32(rest[j, 1])
        for x in range(m1):
            u[x] = ramp_c[s, x] * scale
            v[x] = u[x] * slope[x]
        for k in range(kk):
            for y in range(m0):
                src, dst = spectrum[k, y], spec[0, k, y]
                ry = ramp_r[s, y]
                a = ry * (one - dr * slope[y])
                c = -dc * ry
                for x in range(m1):
                    dst[x] = src[x] * (a * u[x] + c * v[x])
            execute(plan, spec[0, k].ctypes.data, out[j, k].ctypes.data)


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
