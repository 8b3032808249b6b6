"""Compiled loops of the touched-halo exchange (:mod:`.sparse_halo`): paint windows on a
halo mask, gather the masked pixels of a box array, add them back (row-major order)."""

from __future__ import annotations

import numpy as np

from ..cpu_kernels import _JIT, _jit


@_jit(_JIT)
def paint(mask: np.ndarray, tops: np.ndarray, r0: int, c0: int, fh: int, fw: int) -> None:
    """Set ``mask`` (a box whose [0, 0] is global pixel (r0, c0)) where the ``fh x fw``
    windows with top-left corners ``tops`` ((n, 2) global) cover it."""
    h, w = mask.shape
    for j in range(tops.shape[0]):
        a, b = max(tops[j, 0] - r0, 0), min(tops[j, 0] + fh - r0, h)
        c, d = max(tops[j, 1] - c0, 0), min(tops[j, 1] + fw - c0, w)
        for y in range(a, b):
            for x in range(c, d):
                mask[y, x] = True


@_jit(_JIT)
def gather(src: np.ndarray, y0: int, x0: int, mask: np.ndarray, out: np.ndarray) -> int:
    """``out[k] = src[y0 + y, x0 + x]`` for the k-th set pixel (y, x) of ``mask``; the count."""
    k = 0
    for y in range(mask.shape[0]):
        for x in range(mask.shape[1]):
            if mask[y, x]:
                out[k] = src[y0 + y, x0 + x]
                k += 1
    return k


@_jit(_JIT)
def scatter_add(dst: np.ndarray, y0: int, x0: int, mask: np.ndarray, vals: np.ndarray) -> int:
    """``dst[y0 + y, x0 + x] += vals[k]`` for the k-th set pixel (y, x) of ``mask``."""
    k = 0
    for y in range(mask.shape[0]):
        for x in range(mask.shape[1]):
            if mask[y, x]:
                dst[y0 + y, x0 + x] += vals[k]
                k += 1
    return k
