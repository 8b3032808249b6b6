"""Halo sums over what a batch touched (LSQML's per-batch object sums, DESIGN.md section 6).

A sparse batch's object sums are zero outside its windows, so in a halo sum a rank needs to
send only the halo pixels its own batch windows cover, and to receive only those its
neighbour's batch windows cover. Both sides paint the same window rectangles (the global
window corners of every frame, shared once at the start) on the same halo box and list the
covered pixels in row-major order, so the counts and the pixel order agree without a header.
The result is bitwise the full halo sum's: the pixels left out would have added zeros.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .tiling import Box


def cover(tops: np.ndarray, box: Box, frame: tuple[int, int]) -> np.ndarray:
    """Boolean mask (``box.shape``) of the pixels of ``box`` that the windows whose top-left
    corners are ``tops`` ((n, 2) global pixels) cover."""
    h, w = box.shape
    tops = np.asarray(tops, dtype=np.int64).reshape(-1, 2)
    r0 = np.clip(tops[:, 0] - box.r0, 0, h)
    r1 = np.clip(tops[:, 0] + frame[0] - box.r0, 0, h)
    c0 = np.clip(tops[:, 1] - box.c0, 0, w)
    c1 = np.clip(tops[:, 1] + frame[1] - box.c0, 0, w)
    mask = np.zeros((h, w), dtype=bool)
    hit = (r0 < r1) & (c0 < c1)
    for a, b, c, d in zip(r0[hit].tolist(), r1[hit].tolist(), c0[hit].tolist(),
                          c1[hit].tolist(), strict=True):  # a batch's few windows
        mask[a:b, c:d] = True
    return mask


class TouchedHalo:
    """Per-batch halo sums of one rank that move only the pixels the batch's windows touched.

    Built collectively (one ``allgather`` of every frame's owner and window corner). ``sum``
    must be called by every rank with the same global batch (the frame indices of all ranks'
    members) and arrays of the same dtypes and leading shapes, like
    :meth:`MPIExchange.halo_sum`.
    """

    def __init__(self, exchange: Any, indices: np.ndarray, rows: np.ndarray,
                 cols: np.ndarray, n_global: int, frame: tuple[int, int]) -> None:
        self.exchange = exchange
        self.rank = exchange.rank
        self.frame = (int(frame[0]), int(frame[1]))
        tile = exchange.tile
        self.origin = tile.origin
        self.width = tile.box.shape[1]
        mine = np.stack([np.asarray(indices, np.int64),
                         np.full(len(indices), self.rank, np.int64),
                         np.asarray(rows, np.int64) + self.origin[0],
                         np.asarray(cols, np.int64) + self.origin[1]], axis=1)
        table = np.asarray(exchange.allgather(mine.reshape(-1)), np.int64).reshape(-1, 4)
        self.owner = np.full(n_global, -1, dtype=np.int64)
        self.owner[table[:, 0]] = table[:, 1]
        self.tops = np.zeros((n_global, 2), dtype=np.int64)
        self.tops[table[:, 0]] = table[:, 2:]
        self.neighbours = list(exchange.neighbours)
        self.halos = [tile.halos[n] for n in self.neighbours]
        # each halo's pixels as flat indices in this rank's box, row-major over the halo
        self._flat_halo = []
        for halo in self.halos:
            rs, cs = halo.slices(self.origin)
            grid = np.arange(rs.start, rs.stop)[:, None] * self.width + np.arange(cs.start,
                                                                                   cs.stop)
            self._flat_halo.append(grid.reshape(-1))

    def _flat(self, i: int, mask: np.ndarray) -> np.ndarray:
        """Flat indices in this rank's box of the pixels of halo ``i`` in ``mask``."""
        return self._flat_halo[i][mask.reshape(-1)]

    def plan(self, part: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per neighbour, the flat box indices to send (this rank's batch windows cover them)
        and to receive (the neighbour's cover them) for the global batch ``part``."""
        part = np.asarray(part, dtype=np.int64)
        owners = self.owner[part]
        mine = self.tops[part[owners == self.rank]]
        out = []
        for i, (n, halo) in enumerate(zip(self.neighbours, self.halos, strict=True)):
            theirs = self.tops[part[owners == n]]
            out.append((self._flat(i, cover(mine, halo, self.frame)),
                        self._flat(i, cover(theirs, halo, self.frame))))
        return out

    def sum(self, part: np.ndarray, *arrays: Any) -> None:
        """Add, in place, the neighbours' ``arrays`` ((..., H, W) of the box, zero outside
        their batch windows) over the halo pixels the batch ``part`` touched: the same
        result as ``exchange.halo_sum(*arrays)``. Device (GPU) or non-contiguous arrays take
        the full halo sum."""
        ex = self.exchange
        if not arrays or any(hasattr(a, "__cuda_array_interface__") or not a.flags.c_contiguous
               for a in arrays):
            ex.halo_sum(*arrays)
            return
        plan = self.plan(part)
        # within a segment, larger items first keeps every view aligned to its item size
        order = sorted(range(len(arrays)), key=lambda k: -arrays[k].dtype.itemsize)
        per_pixel = [arrays[k].dtype.itemsize * int(np.prod(arrays[k].shape[:-2]))
                     for k in range(len(arrays))]
        send_spec, recv_spec = _layout(plan, order, per_pixel, 0), _layout(plan, order,
                                                                            per_pixel, 1)
        send = np.empty(max(send_spec[2], ALIGN), dtype=np.uint8)
        recv = np.empty(max(recv_spec[2], ALIGN), dtype=np.uint8)
        flats = [a.reshape(*a.shape[:-2], -1) for a in arrays]  # views (contiguous)
        for i, (out_idx, _) in enumerate(plan):
            offset = send_spec[1][i]
            for k in order:
                nbytes = per_pixel[k] * len(out_idx)
                view = send[offset:offset + nbytes].view(arrays[k].dtype)
                np.take(flats[k], out_idx, axis=-1,
                        out=view.reshape(*arrays[k].shape[:-2], len(out_idx)))
                offset += nbytes
        ex.neighbour_bytes(send, send_spec[:2], recv, recv_spec[:2])
        for i, (_, in_idx) in enumerate(plan):
            offset = recv_spec[1][i]
            for k in order:
                nbytes = per_pixel[k] * len(in_idx)
                view = recv[offset:offset + nbytes].view(arrays[k].dtype)
                flats[k][..., in_idx] += view.reshape(*arrays[k].shape[:-2], len(in_idx))
                offset += nbytes


ALIGN = 16  # byte alignment of each neighbour's segment (as the full halo sum's)


def _layout(plan: list[tuple[np.ndarray, np.ndarray]], order: list[int], per_pixel: list[int],
            side: int) -> tuple[list[int], list[int], int]:
    """(counts, displacements, total) in bytes of the send (``side`` 0) or receive (1)
    buffer: per neighbour, its pixels of every array, padded to :data:`ALIGN`."""
    counts, displs, offset = [], [], 0
    for entry in plan:
        n = len(entry[side])
        size = sum(per_pixel[k] * n for k in order)
        padded = -(-size // ALIGN) * ALIGN
        counts.append(padded)
        displs.append(offset)
        offset += padded
    return counts, displs, offset
