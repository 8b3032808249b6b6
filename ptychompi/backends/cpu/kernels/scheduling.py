"""ePIE's first-fit batching of mutually non-overlapping positions (numba)."""

from __future__ import annotations

import numpy as np

from ..jit import JIT, jit


# --------------------------------------------------------------------------- scheduling
@jit(JIT)
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
