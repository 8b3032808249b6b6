"""Compiled per-position sums of the position refinement (CPU; :mod:`.positions`)."""

from __future__ import annotations

import numpy as np

from ..cpu_kernels import _JIT_SUMS, _jit


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
