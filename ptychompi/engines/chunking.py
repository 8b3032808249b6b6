"""Chunk running and reductions: positions in chunks over the worker threads, per-thread
accumulators summed in a fixed order, so every sum is deterministic whatever the threads (the
part of :class:`~ptychompi.engines.base.Engine` that uses the backend's CPU thread pool)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np


class ChunkRunner:
    """Chunks over threads and their reductions (an :class:`Engine` mixin: it reads
    ``backend``, ``chunk_size``, ``rows`` and ``data`` and owns ``_accumulators`` and
    ``_dirty``; the threads are the backend's, :attr:`Backend.pool`)."""

    def chunks(self, n: int, size: int | None = None) -> list[slice]:
        """Consecutive slices of ``size`` positions (default :attr:`chunk_size`)."""
        size = size or self.chunk_size
        return [slice(i, min(i + size, n)) for i in range(0, n, size)]

    def map_chunks(self, fn: Callable[[int, slice], Any], n: int,
                   size: int | None = None) -> list[Any]:
        """``fn(thread, chunk)`` for every chunk of ``n`` positions; results in chunk order.

        On a CPU backend with several cores the chunks are spread over that many threads (the
        backend's pool; numpy, numba and FFTW release the GIL), thread t taking chunks t,
        t+T, ...; each FFT inside uses one core. The static assignment keeps every sum
        deterministic: ``fn`` accumulates into per-thread buffers indexed by ``thread``,
        summed in thread order.
        The calling thread does thread 0's share itself (one hand-off fewer per call: the
        engines make hundreds of these calls per iteration).
        """
        chunks = self.chunks(n, size)
        threads = min(self.backend.threads, len(chunks))
        if threads <= 1:
            return [fn(0, sl) for sl in chunks]

        def work(t: int) -> list[tuple[int, Any]]:
            with self.backend.single_threaded():
                return [(i, fn(t, sl)) for i, sl in enumerate(chunks) if i % threads == t]

        # a failure is raised once no worker still writes into shared buffers
        parts = self.backend.pool.run([partial(work, t) for t in range(threads)])
        out: list[Any] = [None] * len(chunks)
        for part in parts:
            for i, value in part:
                out[i] = value
        return out

    def accumulators(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """Zeroed accumulators (T, *shape), one per worker thread (see :meth:`map_chunks`).

        On a CPU they are kept between calls and zeroed again by :meth:`reduce`, which must
        follow; on a GPU they are fresh arrays.
        """
        xp = self.backend.xp
        full = (max(1, self.backend.threads), *shape)
        if self.backend.is_gpu:
            return xp.zeros(full, dtype=dtype)
        key = (full, np.dtype(dtype).str)
        acc = self._accumulators.get(key)
        if acc is None:
            acc = self._accumulators[key] = np.zeros(full, dtype=dtype)
        elif id(acc) in self._dirty:  # an earlier user did not reduce (an exception)
            acc.fill(0)
        self._dirty.add(id(acc))
        return acc

    def reduce(self, *pairs: tuple[Any, Any], spans: np.ndarray | None = None) -> list[Any]:
        """The sums of :meth:`accumulators` in thread order, one per ``(acc, dtype)`` pair,
        as ``dtype`` (on a CPU in bands of rows spread over the worker threads, all pairs
        in one pass of the pool). ``spans`` (T, 2): the rows each thread's accumulators were
        written in (:meth:`row_span`); the others are not read."""
        if self.backend.is_gpu:
            totals = [self.backend.ops.reduce_accumulators(acc, dtype) for acc, dtype in pairs]
        else:
            totals = [np.empty(acc.shape[1:], dtype=dtype) for acc, dtype in pairs]

            def band_sums(band: slice) -> None:
                local = None
                if spans is not None:  # the spans in the band's rows
                    local = np.clip(np.asarray(spans) - band.start, 0, band.stop - band.start)
                for (acc, dtype), total in zip(pairs, totals, strict=True):
                    self.backend.ops.reduce_accumulators(acc[:, band], dtype, total[band],
                                                         local)

            self.map_rows(band_sums, pairs[0][0].shape[1])
        for acc, _ in pairs:
            self._dirty.discard(id(acc))
        return totals

    def row_span(self, sel: Any, span: Any = (0, 0)) -> tuple[int, int]:
        """The tile rows ``[lo, hi)`` the windows of positions ``sel`` cover, joined with
        ``span`` (empty: ``lo == hi``)."""
        rows = self.rows[sel]
        if not len(rows):
            return int(span[0]), int(span[1])
        lo, hi = int(rows.min()), int(rows.max()) + self.data.frame
        if span[1] > span[0]:
            lo, hi = min(lo, int(span[0])), max(hi, int(span[1]))
        return lo, hi

    def per_thread(self, n: int) -> int:
        """Chunk size that gives each worker thread one chunk of ``n`` items."""
        return max(1, -(-n // max(1, self.backend.threads)))

    def map_rows(self, fn: Callable[[slice], Any], rows: int) -> None:
        """``fn(band)`` for one band of ``rows`` per worker thread (tile-sized passes; one
        band on a GPU)."""
        self.map_chunks(lambda _, band: fn(band), rows, self.per_thread(rows))

    @staticmethod
    def chunk_sum(values: list[Any]) -> Any:
        """``values[0] + values[1] + ...`` in chunk order (a new array): per-chunk sums
        combined in a fixed order, so the total does not depend on the threads."""
        total = values[0].copy()
        for extra in values[1:]:
            total += extra
        return total

    def close(self) -> None:
        """Drop the per-thread accumulators (the threads are the backend's: it stops them)."""
        self._accumulators.clear()
        self._dirty.clear()
