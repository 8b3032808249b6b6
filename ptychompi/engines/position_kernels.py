"""Compiled per-position sums of the position refinement (CPU; :mod:`.positions`).

The fused variant reuses the building blocks of :mod:`ptychompi.fused_kernels` and
:mod:`ptychompi.cpu_kernels` (read only): the same exit wave, FFTW transforms and modulus
projection as the engines' fused paths, one position at a time with its frames in cache."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import cpu_kernels as ck
from .. import fftw_native
from .. import fused_kernels as fk
from ..cpu_kernels import _JIT, _JIT_SUMS, _jit


@_jit(_JIT_SUMS)
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


@_jit(_JIT)
def fused_position_sums(execute: Any, amplitudes: np.ndarray, frames: np.ndarray,
                        rows: np.ndarray, cols: np.ndarray, obj: np.ndarray,
                        probes: np.ndarray, probe_of: np.ndarray, d_row: np.ndarray,
                        d_col: np.ndarray, eps: float, forward: int, backward: int,
                        psi: np.ndarray, wave: np.ndarray, back: np.ndarray, tmp: np.ndarray,
                        transfer: np.ndarray, out: np.ndarray) -> None:
    """:func:`position_sums` of a chunk with the exit wave, propagation, modulus projection
    and back-propagation done position by position in the same call (FFTW's ``execute`` as
    in :mod:`ptychompi.fused_kernels`; ``psi``, ``wave``, ``back``, ``tmp``: (1, K, M, M)
    aligned scratch frames)."""
    m0, m1 = psi.shape[2], psi.shape[3]
    scale = np.complex64(1.0 / np.sqrt(m0 * m1))
    for j in range(rows.shape[0]):
        r, c, of = rows[j:j + 1], cols[j:j + 1], probe_of[j:j + 1]
        ck.exit_waves(probes, of, obj, r, c, psi)
        fk._propagate(execute, forward, backward, psi, wave, tmp, transfer, False, scale)
        f = frames[j]
        ck.modulus_project(wave, amplitudes[f:f + 1], wave, eps)
        fk._propagate(execute, forward, backward, wave, back, tmp, transfer, True, scale)
        position_sums(probes, of, back, psi, d_row, d_col, r, c, out[j:j + 1])


def fused_chunk(amplitudes: np.ndarray, sl: slice, rows: np.ndarray, cols: np.ndarray,
                obj: np.ndarray, probes: np.ndarray, probe_of: np.ndarray,
                d_row: np.ndarray, d_col: np.ndarray, eps: float,
                transfer: np.ndarray | None) -> np.ndarray:
    """:func:`fused_position_sums` of the positions ``sl`` with its scratch: (B, 4)."""
    kk, m0, m1 = probes.shape[1:]
    out = np.empty((len(rows), 4))
    fused_position_sums(fftw_native.execute_dft, amplitudes,
                        np.arange(sl.start, sl.stop, dtype=np.int64), fk._int64(rows),
                        fk._int64(cols), obj, np.ascontiguousarray(probes),
                        fk._int64(probe_of), d_row, d_col, float(eps), *fk._plans((m0, m1)),
                        *fk._scratch((kk, m0, m1), 4), fk._transfer(transfer), out)
    return out
