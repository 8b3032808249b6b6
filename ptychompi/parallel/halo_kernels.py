"""Compiled loops of the touched-halo exchange (:mod:`.sparse_halo`): the pixels a batch's
windows cover in a halo (as a mask, or as row runs), gathered from a box array and added
back, in row-major order."""

from __future__ import annotations

import numpy as np

from ..backends.cpu.jit import JIT, jit


@jit(JIT)
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


@jit(JIT)
def row_runs(tops: np.ndarray, r0: int, c0: int, h: int, w: int, fh: int,
             fw: int) -> np.ndarray:
    """The pixels of an ``h x w`` box (top-left at global (r0, c0)) that ``fh x fw`` windows
    at ``tops`` ((n, 2) global corners) cover, as (R, 3) rows ``[y, x0, x1)``: per box row the
    merged column intervals, rows in order and intervals left to right (the row-major order
    of :func:`paint`'s mask)."""
    n = tops.shape[0]
    rects = np.empty((n, 4), np.int64)
    for k in range(n):
        rects[k, 0], rects[k, 1] = tops[k, 0], tops[k, 1]
        rects[k, 2], rects[k, 3] = tops[k, 0] + fh, tops[k, 1] + fw
    return rect_runs(rects, r0, c0, h, w)


@jit(JIT)
def gather_runs(src: np.ndarray, y0: int, x0: int, runs: np.ndarray, out: np.ndarray) -> int:
    """``out`` = the pixels of ``runs`` (:func:`row_runs`, offset by (y0, x0) in ``src``) in
    order; the count."""
    k = 0
    for r in range(runs.shape[0]):
        row = src[y0 + runs[r, 0]]
        for x in range(x0 + runs[r, 1], x0 + runs[r, 2]):
            out[k] = row[x]
            k += 1
    return k


@jit(JIT)
def scatter_runs(dst: np.ndarray, y0: int, x0: int, runs: np.ndarray, vals: np.ndarray) -> int:
    """Add ``vals`` to the pixels of ``runs`` in ``dst``, in :func:`gather_runs`' order."""
    k = 0
    for r in range(runs.shape[0]):
        row = dst[y0 + runs[r, 0]]
        for x in range(x0 + runs[r, 1], x0 + runs[r, 2]):
            row[x] += vals[k]
            k += 1
    return k


@jit(JIT)
def window_power(out: np.ndarray, y0: int, x0: int, tops: np.ndarray, which: np.ndarray,
                 powers: np.ndarray, r0: int, c0: int, h: int, w: int) -> None:
    """Set the ``h x w`` block of ``out`` at (y0, x0) (global top-left (r0, c0)) to the sum,
    in double precision and in the order of ``tops``, of ``powers[which[j]]`` ((G, fh, fw))
    placed at the window corners ``tops[j]`` ((n, 2) global): the same value for a pixel
    whichever block holds it."""
    fh, fw = powers.shape[1], powers.shape[2]
    acc = np.zeros((h, w), np.float64)
    for j in range(tops.shape[0]):
        a, b = max(tops[j, 0] - r0, 0), min(tops[j, 0] + fh - r0, h)
        c, d = max(tops[j, 1] - c0, 0), min(tops[j, 1] + fw - c0, w)
        p = powers[which[j]]
        dy, dx = r0 - tops[j, 0], c0 - tops[j, 1]
        for y in range(a, b):
            for x in range(c, d):
                acc[y, x] += p[y + dy, x + dx]
    for y in range(h):
        for x in range(w):
            out[y0 + y, x0 + x] = acc[y, x]


@jit(JIT)
def rect_runs(rects: np.ndarray, r0: int, c0: int, h: int, w: int) -> np.ndarray:
    """The pixels of an ``h x w`` box (top-left at global (r0, c0)) that ``rects`` ((n, 4)
    global ``[y0, x0, y1, x1)``) cover, as (R, 3) rows ``[y, x0, x1)``: per box row the merged
    column intervals, in row-major order."""
    n = rects.shape[0]
    a = np.empty(n, np.int64)
    b = np.empty(n, np.int64)
    c = np.empty(n, np.int64)
    d = np.empty(n, np.int64)
    k = 0
    for j in range(n):  # the rectangles clipped to the box
        a[k], b[k] = max(rects[j, 0] - r0, 0), min(rects[j, 2] - r0, h)
        c[k], d[k] = max(rects[j, 1] - c0, 0), min(rects[j, 3] - c0, w)
        if a[k] < b[k] and c[k] < d[k]:
            k += 1
    order = np.argsort(c[:k])
    out = np.empty((h * max(k, 1), 3), np.int64)
    m = 0
    for y in range(h):
        lo, hi = -1, -1
        for t in range(k):
            j = order[t]
            if a[j] <= y < b[j]:
                if c[j] > hi:  # a gap: the current interval is complete
                    if hi > lo:
                        out[m, 0], out[m, 1], out[m, 2] = y, lo, hi
                        m += 1
                    lo, hi = c[j], d[j]
                elif d[j] > hi:
                    hi = d[j]
        if hi > lo:
            out[m, 0], out[m, 1], out[m, 2] = y, lo, hi
            m += 1
    return out[:m]
