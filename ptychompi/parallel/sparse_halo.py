"""Halo sums over what a batch touched (LSQML's per-batch object sums, DESIGN.md section 6).

A sparse batch's object sums are zero outside its windows, so in a halo sum a rank needs to
send only the halo pixels its own batch windows cover, and to receive only those its
neighbour's batch windows cover. Both sides paint the same window rectangles (the global
window corners of every frame, shared once at the start) on the same halo box and list the
covered pixels in row-major order, so the counts and the pixel order agree without a header.
The result is bitwise the full halo sum's: the pixels left out would have added zeros.

On a 2-D grid of tiles whose neighbours are at most one cell away (:func:`routable`) the sum
is routed: along the grid's rows first, then its columns, each step sending what is not zero
after the step before, so a diagonal neighbour's part rides inside its column neighbour's
message (fewer bytes); only pixels of a diagonal halo outside the box of the tile beside the
corner travel directly, in the column step. A pixel four tiles share ends as
``(a + b) + (c + d)`` on all four, bitwise alike (the direct sum adds in each rank's
neighbour order, which differs between ranks), equal to the direct sum to float rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import halo_codec, halo_kernels
from .tiling import Box


def cover(tops: np.ndarray, box: Box, frame: tuple[int, int]) -> np.ndarray:
    """Boolean mask (``box.shape``) of the pixels of ``box`` that the windows whose top-left
    corners are ``tops`` ((n, 2) global pixels) cover."""
    mask = np.zeros(box.shape, dtype=bool)
    halo_kernels.paint(mask, np.ascontiguousarray(tops, dtype=np.int64).reshape(-1, 2),
                       box.r0, box.c0, int(frame[0]), int(frame[1]))
    return mask


class TouchedHalo:
    """Per-batch halo sums of one rank that move only the pixels the batch's windows touched.

    Built collectively (one ``allgather`` of every frame's owner and window corner). ``sum``
    must be called by every rank with the same global batch (the frame indices of all ranks'
    members) and arrays of the same dtypes and leading shapes, like
    :meth:`MPIExchange.halo_sum`. ``compact``: ``sum``'s ``scale`` is used (off: the
    numerator travels as float32 whatever ``scale``).
    """

    def __init__(self, exchange: Any, indices: np.ndarray, rows: np.ndarray,
                 cols: np.ndarray, n_global: int, frame: tuple[int, int],
                 compact: bool = True) -> None:
        self.exchange = exchange
        self.compact = compact
        self.rank = exchange.rank
        self.frame = (int(frame[0]), int(frame[1]))
        tile = exchange.tile
        self.origin = tile.origin
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
        # along rows, then columns (routable grids; off: each neighbour directly)
        self._tiles = getattr(exchange, "tiles", None)
        self.routed = self._tiles is not None and routable(self._tiles)
        self._at = {t.coords: t for t in self._tiles} if self.routed else {}
        # each halo's top-left corner in this rank's box
        self._corner = [(h.r0 - self.origin[0], h.c0 - self.origin[1]) for h in self.halos]
        self._buffers = [np.empty(ALIGN, np.uint8), np.empty(ALIGN, np.uint8)]

    def _buffer(self, side: int, nbytes: int) -> np.ndarray:
        """The send (0) or receive (1) byte buffer, at least ``nbytes`` long (kept between
        batches: no fresh pages per call)."""
        if self._buffers[side].size < nbytes:
            self._buffers[side] = np.empty(-(-nbytes // 65536) * 65536, np.uint8)
        return self._buffers[side]

    def plan(self, part: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per neighbour, the halo pixels to send (this rank's batch windows cover them) and
        to receive (the neighbour's cover them) for the global batch ``part``, as row runs
        ``[y, x0, x1)`` in the halo box (:func:`halo_kernels.row_runs`)."""
        part = np.asarray(part, dtype=np.int64)
        return [self._direct(part, n, halo)
                for n, halo in zip(self.neighbours, self.halos, strict=True)]

    def _direct(self, part: np.ndarray, n: int, halo: Box) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`plan`'s runs for neighbour ``n``."""
        owners = self.owner[part]
        fh, fw = self.frame
        return (halo_kernels.row_runs(self.tops[part[owners == self.rank]], halo.r0,
                                      halo.c0, *halo.shape, fh, fw),
                halo_kernels.row_runs(self.tops[part[owners == n]], halo.r0, halo.c0,
                                      *halo.shape, fh, fw))

    def routed_plan(self, part: np.ndarray) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """The routed sum's two steps (rows, then columns), each as :meth:`plan`'s runs per
        neighbour (empty for those a step skips): in the column step, the pixels not zero
        after the row step (this rank's windows, or a row neighbour's within their halo)."""
        part = np.asarray(part, dtype=np.int64)
        tiles, empty = self._tiles, np.zeros((0, 3), np.int64)
        me = tiles[self.rank].coords
        rows, cols = [], []
        for n, halo in zip(self.neighbours, self.halos, strict=True):
            dy, dx = tiles[n].coords[0] - me[0], tiles[n].coords[1] - me[1]
            rows.append(self._direct(part, n, halo) if dy == 0 else (empty, empty))
            if dx == 0:
                cols.append((halo_kernels.rect_runs(self._partial(part, self.rank), halo.r0,
                                                    halo.c0, *halo.shape),
                             halo_kernels.rect_runs(self._partial(part, n), halo.r0,
                                                    halo.c0, *halo.shape)))
            elif dy == 0:
                cols.append((empty, empty))
            else:  # diagonal: directly, only where the row (sending) or column (receiving)
                # neighbour's box does not carry it
                send, recv = self._direct(part, n, halo)
                cols.append((_outside(send, halo, self._at.get((me[0], me[1] + dx))),
                             _outside(recv, halo, self._at.get((me[0] + dy, me[1])))))
        return [rows, cols]

    def _partial(self, part: np.ndarray, rank: int) -> np.ndarray:
        """(n, 4) global rectangles ``[y0, x0, y1, x1)`` where ``rank``'s sum is not zero
        after the row step: its batch windows, and its row neighbours' within their halo."""
        tiles, (fh, fw) = self._tiles, self.frame
        owners = self.owner[part]
        tops = self.tops[part[owners == rank]]
        out = [np.concatenate([tops, tops + np.array([fh, fw])], axis=1)]
        for n, halo in tiles[rank].halos.items():
            if tiles[n].coords[0] == tiles[rank].coords[0]:
                t = self.tops[part[owners == n]]
                out.append(np.stack([np.maximum(t[:, 0], halo.r0),
                                     np.maximum(t[:, 1], halo.c0),
                                     np.minimum(t[:, 0] + fh, halo.r1),
                                     np.minimum(t[:, 1] + fw, halo.c1)], axis=1))
        return np.ascontiguousarray(np.concatenate(out), dtype=np.int64)

    def sum(self, part: np.ndarray, *arrays: Any,
            scale: tuple[Any, Any, float] | None = None) -> None:
        """Add, in place, the neighbours' ``arrays`` ((..., H, W) of the box, zero outside
        their batch windows) over the halo pixels the batch ``part`` touched: the same
        result as ``exchange.halo_sum(*arrays)`` (routed: to float rounding where four tiles
        meet). Device (GPU) or non-contiguous arrays take the full halo sum.

        ``scale`` = (object, illumination, λ') of the box: one complex64 array (LSQML's
        numerator) travels to the object's precision (:mod:`.halo_codec`): the values sent,
        here too, are rounded below ``2^-24 |O| sqrt(D² + λ')``, so every rank adds the same
        numbers."""
        if not arrays or any(hasattr(a, "__cuda_array_interface__") or a.ndim != 2
                             for a in arrays):
            self.exchange.halo_sum(*arrays)
            return
        compact = (self.compact and scale is not None and len(arrays) == 1
                   and arrays[0].dtype == np.complex64 and scale[0].dtype == np.complex64
                   and scale[0].shape == arrays[0].shape == scale[1].shape
                   and hasattr(self.exchange, "neighbour_messages"))
        steps = self.routed_plan(part) if self.routed else [self.plan(part)]
        for k, runs in enumerate(steps):
            if compact:
                self._step_compact(runs, arrays[0], scale, new_sum=k == 0)
            else:  # one halo sum (ExchangeStats.halo_sums)
                self._step(runs, arrays, new_sum=k == 0)

    def _step_compact(self, runs: list[tuple[np.ndarray, np.ndarray]], num: np.ndarray,
                      scale: tuple[Any, Any, float], new_sum: bool = True) -> None:
        """:meth:`_step` for one complex64 array rounded and packed by :mod:`.halo_codec`:
        a message of its own length to each neighbour that gets pixels."""
        obj, illum, floor = scale
        counts = [(_pixels(s), _pixels(r)) for s, r in runs]
        n_send = sum(c[0] for c in counts)
        vals = np.empty(2 * max(n_send, 1), np.float32)
        exps = np.empty(max(n_send, 1), np.int32)
        send_room = [halo_codec.max_bytes(c[0]) for c in counts]
        recv_room = [halo_codec.max_bytes(c[1]) for c in counts]
        send = self._buffer(0, sum(send_room))
        recv = self._buffer(1, sum(recv_room))
        sends: list[np.ndarray | None] = []
        offset = 0
        for i, (rows, _) in enumerate(runs):  # every gather (and rounding) before any add
            if counts[i][0] == 0:
                sends.append(None)
                continue
            y0, x0 = self._corner[i]
            n = halo_codec.gather_quantized(num, y0, x0, rows, obj, illum, float(floor),
                                            halo_codec.OBJECT_BITS, vals, exps)
            out = send[offset:offset + send_room[i]]
            sends.append(out[:halo_codec.encode(vals, vals.view(np.uint32), exps, n, out)])
            offset += send_room[i]
        recvs: list[np.ndarray | None] = []
        offset = 0
        for i in range(len(runs)):
            recvs.append(recv[offset:offset + recv_room[i]] if counts[i][1] else None)
            offset += recv_room[i]
        self.exchange.neighbour_messages(sends, recvs, new_sum)
        for i, (_, rows) in enumerate(runs):
            if counts[i][1] == 0:
                continue
            got = np.empty(2 * counts[i][1], np.float32)
            halo_codec.decode(recvs[i], counts[i][1], got, got.view(np.uint32))
            halo_kernels.scatter_runs(num, *self._corner[i], rows, got.view(np.complex64))

    def _step(self, runs: list[tuple[np.ndarray, np.ndarray]], arrays: tuple[Any, ...],
              new_sum: bool = True) -> None:
        """One neighbour message: gather the runs to send, exchange, add those received."""
        counts = [(_pixels(s), _pixels(r)) for s, r in runs]
        # within a segment, larger items first keeps every view aligned to its item size
        order = sorted(range(len(arrays)), key=lambda k: -arrays[k].dtype.itemsize)
        per_pixel = [a.dtype.itemsize for a in arrays]
        send_spec = _layout([c[0] for c in counts], order, per_pixel)
        recv_spec = _layout([c[1] for c in counts], order, per_pixel)
        send, recv = self._buffer(0, send_spec[2]), self._buffer(1, recv_spec[2])
        for i, (rows, _) in enumerate(runs):
            offset, (y0, x0) = send_spec[1][i], self._corner[i]
            for k in order:
                nbytes = per_pixel[k] * counts[i][0]
                halo_kernels.gather_runs(arrays[k], y0, x0, rows,
                                         send[offset:offset + nbytes].view(arrays[k].dtype))
                offset += nbytes
        self.exchange.neighbour_bytes(send, send_spec[:2], recv, recv_spec[:2], new_sum)
        for i, (_, rows) in enumerate(runs):
            offset, (y0, x0) = recv_spec[1][i], self._corner[i]
            for k in order:
                nbytes = per_pixel[k] * counts[i][1]
                halo_kernels.scatter_runs(arrays[k], y0, x0, rows,
                                          recv[offset:offset + nbytes].view(arrays[k].dtype))
                offset += nbytes

    def near(self, part: np.ndarray) -> np.ndarray:
        """The frames of the global batch ``part`` whose windows reach into one of this
        rank's halos, in ascending order (the order of :meth:`illumination`'s sums)."""
        part = np.sort(np.asarray(part, dtype=np.int64))
        tops, (fh, fw) = self.tops[part], self.frame
        hit = np.zeros(len(part), dtype=bool)
        for h in self.halos:
            hit |= ((tops[:, 0] < h.r0 + h.shape[0]) & (tops[:, 0] + fh > h.r0)
                    & (tops[:, 1] < h.c0 + h.shape[1]) & (tops[:, 1] + fw > h.c0))
        return part[hit]

    def illumination(self, frames: np.ndarray, which: np.ndarray, powers: np.ndarray,
                     out: np.ndarray) -> None:
        """Set ``out`` (the box's illumination) over every halo to the sum of the windows
        of ``frames`` (:meth:`near`, all ranks' members) of ``powers[which]`` ((G, fh, fw),
        each frame's Σ|P|²), summed in double precision in the order of ``frames``: every
        rank that shares a halo pixel computes the same value, and no denominator travels.
        """
        tops = np.ascontiguousarray(self.tops[frames])
        which = np.ascontiguousarray(which, dtype=np.int64)
        powers = np.ascontiguousarray(powers, dtype=np.float64)
        for h, (y0, x0) in zip(self.halos, self._corner, strict=True):
            halo_kernels.window_power(out, y0, x0, tops, which, powers, h.r0, h.c0,
                                      *h.shape)


def routable(tiles: list[Any]) -> bool:
    """Whether a halo sum over ``tiles`` may go along rows, then columns: a 2-D grid with
    diagonal halos and every neighbour at most one cell away."""
    diagonal = False
    for t in tiles:
        for n in t.halos:
            dy, dx = (tiles[n].coords[k] - t.coords[k] for k in (0, 1))
            if abs(dy) > 1 or abs(dx) > 1:
                return False
            diagonal = diagonal or bool(dy and dx)
    return diagonal


def _outside(runs: np.ndarray, halo: Box, tile: Any) -> np.ndarray:
    """The parts of ``runs`` (in ``halo``) outside ``tile``'s box, in the same order."""
    if tile is None or tile.box.intersect(halo) is None:
        return runs
    r0, c0 = tile.box.r0 - halo.r0, tile.box.c0 - halo.c0
    r1, c1 = tile.box.r1 - halo.r0, tile.box.c1 - halo.c0
    inside = (runs[:, 0] >= r0) & (runs[:, 0] < r1)
    left, right = runs.copy(), runs.copy()
    left[inside, 2] = np.minimum(runs[inside, 2], c0)
    right[inside, 1] = np.maximum(runs[inside, 1], c1)
    right[~inside, 2] = right[~inside, 1]
    out = np.stack([left, right], axis=1).reshape(-1, 3)
    return np.ascontiguousarray(out[out[:, 2] > out[:, 1]])


def _pixels(runs: np.ndarray) -> int:
    """The pixel count of row runs ``[y, x0, x1)``."""
    return int((runs[:, 2] - runs[:, 1]).sum())


ALIGN = 16  # byte alignment of each neighbour's segment (as the full halo sum's)


def _layout(pixels: list[int], order: list[int], per_pixel: list[int]
            ) -> tuple[list[int], list[int], int]:
    """(counts, displacements, total) in bytes of a send or receive buffer: per neighbour,
    its ``pixels`` of every array, padded to :data:`ALIGN`."""
    counts, displs, offset = [], [], 0
    for n in pixels:
        size = sum(per_pixel[k] * n for k in order)
        padded = -(-size // ALIGN) * ALIGN
        counts.append(padded)
        displs.append(offset)
        offset += padded
    return counts, displs, offset
