"""Spatially stratified sparse batches for LSQML (issue 20, item 1).

LSQML's random batches split unevenly over the tiles (a rank may hold more of a batch than
its share, and every rank waits for it at the batch's halo sum). Stratified batches take the
same random order of frames (whole groups of equal sub-pixel shift stay together) and deal
the groups out one at a time to the batch whose members so far share the fewest cells of a
fixed grid over the scan with the group: each batch then covers the scan evenly. The grid
depends only on every frame's position, never on the rank count, so n ranks still draw the
one-rank batches.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def frame_cells(exchange: Any, indices: np.ndarray, positions: np.ndarray, n_global: int,
                per_cell: int) -> np.ndarray:
    """Every frame's cell (one allgather: collective) on a grid of about ``n_global /
    per_cell`` cells over the scan's bounding box; ``positions`` (n, 2) are this rank's
    frames ``indices`` in global pixels."""
    mine = np.concatenate([np.asarray(indices, np.float64)[:, None],
                           np.asarray(positions, np.float64).reshape(-1, 2)], axis=1)
    table = np.asarray(exchange.allgather(mine.reshape(-1)), np.float64).reshape(-1, 3)
    pos = np.zeros((n_global, 2))
    pos[table[:, 0].astype(np.int64)] = table[:, 1:]
    side = max(1, int(round(np.sqrt(n_global / max(per_cell, 1)))))
    lo, span = pos.min(axis=0), np.ptp(pos, axis=0) + 1e-9
    cell = np.minimum((side * (pos - lo) / span).astype(np.int64), side - 1)
    return cell[:, 0] * side + cell[:, 1]


def stratified_parts(perm: np.ndarray, groups: np.ndarray | None, cells: np.ndarray,
                     n_batches: int) -> list[np.ndarray]:
    """``perm`` (every frame once; frames of one group contiguous, ``groups`` their labels
    along ``perm``, None: one frame a group) dealt into ``n_batches`` batches of whole groups:
    each group in turn to the batch that holds the fewest frames in the group's cells (then
    the smallest batch), among those with room for it (at most ``ceil(n / n_batches)``
    frames, or the smallest ones when none has room)."""
    perm = np.asarray(perm, dtype=np.int64)
    n = len(perm)
    if groups is None:
        starts = np.arange(n)
    else:
        starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    ends = np.r_[starts[1:], n]
    n_cells = int(cells.max()) + 1 if n else 1
    counts = np.zeros((n_batches, n_cells), dtype=np.int64)
    sizes = np.zeros(n_batches, dtype=np.int64)
    cap = -(-n // n_batches)
    members: list[list[np.ndarray]] = [[] for _ in range(n_batches)]
    for s, e in zip(starts, ends, strict=True):
        group = perm[s:e]
        cell, k = np.unique(cells[group], return_counts=True)
        cost = counts[:, cell] @ k
        room = sizes + len(group) <= cap
        if not room.any():
            room = sizes == sizes.min()
        order = np.lexsort((sizes, cost))
        b = int(order[room[order]][0])
        members[b].append(group)
        counts[b, cell] += k
        sizes[b] += len(group)
    return [np.concatenate(m) if m else np.zeros(0, np.int64) for m in members]
