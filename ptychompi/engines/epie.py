"""ePIE (Maiden & Rodenburg 2009) with batches of non-overlapping windows (DESIGN.md §5).

Positions are visited in a seeded random order; consecutive positions whose windows do not
overlap form a batch (up to ``batch_size``; 1 = classic sequential ePIE). Within a batch the
object update equals the sequential one; the probe update is the batch mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..physics import epie_update, exit_waves, modulus_project, unshift_sum
from .base import Engine

DEFAULT_BATCH = 64


def disjoint_batches(order: np.ndarray, rows: np.ndarray, cols: np.ndarray, frame: int,
                     limit: int) -> list[np.ndarray]:
    """Greedy split of ``order`` into batches of mutually non-overlapping windows.

    Each position joins the first batch (in creation order) that has room and no overlapping
    window, so the visiting order is kept as far as the constraint allows. One vectorised
    test against all batches per position.
    """
    n = len(order)
    far = np.iinfo(np.int64).max // 4
    mem_r = np.full((n, limit), far, dtype=np.int64)
    mem_c = np.full((n, limit), far, dtype=np.int64)
    count = np.zeros(n, dtype=np.int64)
    members = np.empty((n, limit), dtype=np.int64)
    used = 0
    for j in order:
        r, c = rows[j], cols[j]
        clash = ((np.abs(mem_r[:used] - r) < frame) & (np.abs(mem_c[:used] - c) < frame)).any(1)
        free = np.flatnonzero(~clash & (count[:used] < limit))
        b = int(free[0]) if free.size else used
        used = max(used, b + 1)
        k = count[b]
        mem_r[b, k], mem_c[b, k], members[b, k] = r, c, j
        count[b] = k + 1
    return [members[b, :count[b]].copy() for b in range(used)]


class EPIE(Engine):
    name = "epie"

    def _iterate(self) -> float:
        n = len(self.rows)
        limit = self.cfg.batch_size or DEFAULT_BATCH
        order = self.rng.permutation(n)
        batches = disjoint_batches(order, self.rows, self.cols, self.data.frame, limit)
        alpha, beta = self.cfg.alpha, self.cfg.beta
        update_probe = self.updates_probe
        err = 0.0
        for batch in batches:
            err += self._update(batch, alpha, beta, update_probe)
        if self.schedule.share_object(self.iteration):
            self.merge_object()
        if update_probe and self.schedule.share_probe(self.iteration):
            self.average_probe()
        return err

    def _update(self, batch: np.ndarray, alpha: float, beta: float,
                update_probe: bool) -> float:
        """One batch of disjoint windows; on a CPU its positions are spread over the worker
        threads, each doing its positions' exit waves and updates in one pass (each window's
        object update touches only its own window, which no other position of the batch
        reads). The object step is ``alpha / max|P|²`` of the probe itself (its sub-pixel-
        shifted copies, made by each thread for its positions, differ from it in peak power
        by up to about 7 %)."""
        be, xp = self.backend, self.backend.xp
        prop = self.data.propagator
        size = self.per_thread(len(batch))
        probe_ft = be.fft2(self.probe) if self.use_subpixel else None
        pmax = float((self.probe.real ** 2 + self.probe.imag ** 2).sum(axis=0).max())
        step = alpha / pmax
        mode = "none" if not update_probe else ("sum" if not self.use_subpixel else "stack")

        def part_update(_: int, sl: slice) -> tuple[float, Any]:
            part = batch[sl]
            win = self.windows(part)
            probes = self.probes_at(part, probe_ft)
            psi = exit_waves(be, probes, self.object, win)
            projected, e = modulus_project(be, prop.forward(psi),
                                          self.data.amplitudes[xp.asarray(part)])
            chi = prop.backward(projected, overwrite=True)
            grad = epie_update(be, chi, psi, probes, self.object, win, step, mode)
            if mode == "stack":
                grad = unshift_sum(be, grad, self.ramps(part), spectrum=True, overwrite=True)
            return e, grad

        parts = self.map_chunks(part_update, len(batch), size)
        if update_probe:
            total = self.chunk_sum([p[1] for p in parts])
            if mode == "stack":  # the chunks' back-shift spectra: one inverse FFT
                total = be.ifft2(total, overwrite=True)
            self.probe += (beta / len(batch)) * total
        return float(sum(p[0] for p in parts))
