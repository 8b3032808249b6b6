"""ePIE (Maiden & Rodenburg 2009) with batches of non-overlapping windows (DESIGN.md §5).

Positions are visited in a seeded random order; consecutive positions whose windows do not
overlap form a batch (up to ``batch_size``; 1 = classic sequential ePIE). Within a batch the
object update equals the sequential one; the probe update is the batch mean. After each pass
the object takes mPIE's momentum step (:mod:`.momentum`).

With position refinement (``update_every`` null, ``epie_residuals``) each visit also
forms its position's gradient sums from its own residual ``χ = ψ' − ψ`` against the object
as it stands before the position's update (:meth:`Operations.epie_chunk`), and hands them to
the refiner after the iteration (:meth:`PositionRefiner.collect_sums`): the positions move
after every iteration without a pass of their own. The batches' windows then keep a pixel
apart, so that the differences at a window's edge read no pixel another member updates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends.cpu import kernels as cpu_kernels
from ..ops import EpieJob
from .base import Engine
from .momentum import ObjectMomentum
from .visits import extra_rounds


def disjoint_batches(order: np.ndarray, rows: np.ndarray, cols: np.ndarray, frame: int,
                     limit: int) -> list[np.ndarray]:
    """Greedy split of ``order`` into batches of mutually non-overlapping windows.

    Each position joins the first batch (in creation order) that has room and no overlapping
    window, so the visiting order is kept as far as the constraint allows; within a batch the
    positions keep the order they joined in (:func:`cpu_kernels.first_fit_batches`).
    """
    order = np.ascontiguousarray(order, dtype=np.int64)
    batch_of = np.empty(len(order), dtype=np.int64)
    used = cpu_kernels.first_fit_batches(order, np.ascontiguousarray(rows, dtype=np.int64),
                                         np.ascontiguousarray(cols, dtype=np.int64),
                                         int(frame), max(1, int(limit)), batch_of)
    grouped = order[np.argsort(batch_of, kind="stable")]
    return np.split(grouped, np.cumsum(np.bincount(batch_of, minlength=used))[:-1])


class EPIE(Engine):
    name = "epie"
    extra_visits: np.ndarray | None = None  # run --follow: local positions owed more visits
    refiner: Any = None  # the position refinement (Engine.__init__), None without
    _momentum: ObjectMomentum | None = None

    @property
    def momentum(self) -> ObjectMomentum:
        """mPIE's object momentum, once per pass (:class:`.momentum.ObjectMomentum`)."""
        if self._momentum is None:
            opts = self.cfg.epie
            self._momentum = ObjectMomentum(opts.momentum, opts.momentum_gain)
        return self._momentum
    complete_from: int | None = 0  # run --follow: the iteration the scan ended at, or None

    def _iterate(self) -> float:
        n = len(self.rows)
        opts = self.cfg.epie
        limit = self.cfg.batch_size or opts.batch
        order = self.rng.permutation(n)
        sums = self._position_sums(n)
        frame = self.data.frame + (sums is not None)  # a pixel apart: the edges' differences
        batches = disjoint_batches(order, self.rows, self.cols, frame, limit)
        regular = len(batches)  # then the catch-up visits (run --follow), if any
        extra = extra_rounds(self.rng, self.extra_visits)
        if extra:
            batches += disjoint_batches(np.concatenate(extra), self.rows, self.cols, frame,
                                        limit)
        steps, beta = (self.object_step(), opts.rpie_weight), self.probe_step()
        update_probe = self.updates_probe
        # with sub-pixel shifts the probe lives as its spectrum during the iteration: the
        # batches shift it and add their back-shifted gradients there (no transform of the
        # whole probe per batch)
        probe_ft = self.backend.fft2(self.probe) if self.use_subpixel else None
        self.momentum.mark(self.object)
        err = 0.0
        for i, batch in enumerate(batches):  # catch-up visits: no probe step, no error
            e = self._update(batch, steps, beta, update_probe and i < regular, probe_ft, sums)
            err += e if i < regular else 0.0
        if sums is not None:  # every position of this rank was visited (and extra ones again)
            self.position_collector.collect_sums(np.arange(n), sums)
        if probe_ft is not None and update_probe:
            self.probe = self.backend.ifft2(probe_ft, overwrite=True)
        if self.schedule.share_object(self.iteration):
            self.merge_object()
        if update_probe and self.schedule.share_probe(self.iteration):
            self.average_probe()
        self.momentum.push(self.object)
        return err

    def _position_sums(self, n: int) -> np.ndarray | None:
        """The (n, 4) buffer of this iteration's position sums when the refiner asked for
        residuals and ePIE hands over its own (else None: a pass of the refiner's own)."""
        pc = self.cfg.position_correction
        if (self.position_collector is None or pc.update_every is not None
                or not pc.epie_residuals):
            return None
        return np.zeros((n, 4))

    def _reset(self) -> None:
        self.momentum.reset()

    def _extra_state(self) -> dict[str, Any]:
        return self.momentum.state()

    def _restore_extra(self, state: dict[str, np.ndarray]) -> None:
        self.momentum.restore(state, self.backend.xp, self.backend.complex_dtype)

    def probe_step(self) -> float:
        """``beta``; with ``beta_initial``, that at the first iteration, falling linearly to
        ``beta`` over the first tenth of the iterations (a longer large step lets the probe's
        power outside the beam run up at low doses)."""
        opts = self.cfg.epie
        if opts.beta_initial is None:
            return opts.beta
        t = min(1.0, 10.0 * self.iteration / max(self.cfg.iterations, 1))
        return opts.beta_initial + (opts.beta - opts.beta_initial) * t

    def object_step(self) -> float:
        """``alpha`` for the first half of the iterations (or until ``complete_from``, when
        later; throughout while it is None: rows still arrive, or while refined positions
        still move: the object has yet to lose what it learnt from the wrong ones), then
        falling linearly to ``alpha · alpha_final`` at the last one."""
        opts, n = self.cfg.epie, max(self.cfg.iterations, 1)
        if self.complete_from is None or (self.refiner is not None
                                          and self.refiner.moving(self.exchange)):
            return opts.alpha
        if self.complete_from > 0.5 * n:
            t = (self.iteration - self.complete_from) / max(n - self.complete_from, 1)
        else:
            t = 2.0 * self.iteration / n - 1.0
        return opts.alpha * (1.0 - (1.0 - opts.alpha_final) * min(1.0, max(0.0, t)))

    def _update(self, batch: np.ndarray, steps: tuple[float, float], beta: float,
                update_probe: bool, probe_ft: Any | None,
                sums: np.ndarray | None = None) -> float:
        """One batch of disjoint windows; on a CPU its positions are spread over the worker
        threads, each doing its positions' exit waves and updates in one pass (each window's
        object update touches only its own window, which no other position of the batch
        reads). Each position's object step is ``alpha / max|P|²`` of the probe it sees (its
        sub-pixel-shifted copy, made by the thread, or the probe); with shifts the probe's
        spectrum ``probe_ft`` is updated in place (:meth:`Operations.epie_chunk`). With
        ``sums`` (n, 4) the batch's position sums go to its members' rows."""
        ops = self.backend.ops
        size = self.per_thread(len(batch))
        mode = "none" if not update_probe else ("sum" if probe_ft is None else "stack")

        def part_update(_: int, sl: slice) -> tuple[float, Any]:
            part = batch[sl]
            own = None if sums is None else np.empty((len(part), 4))
            out = ops.epie_chunk(EpieJob(
                amplitudes=self.data.amplitudes, frames=part, win=self.windows(part),
                obj=self.object, probe=self.probe, shifts=self.shifts(part, probe_ft),
                steps=steps, grad=mode, prop=self.data.propagator, positions=own))
            if own is not None:
                sums[part] = own  # each chunk its own rows
            return out

        parts = self.map_chunks(part_update, len(batch), size)
        if update_probe:
            total = self.chunk_sum([p[1] for p in parts])
            total *= beta / len(batch)
            if probe_ft is None:
                self.probe += total
            else:
                probe_ft += total
        return float(sum(p[0] for p in parts))
