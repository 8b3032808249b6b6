"""Difference map (Thibault et al. 2008/2009), DESIGN.md section 5.

Exit waves are kept in detector space, ``Ψ_j = prop(ψ_j)``, so one iteration needs one
backward pass (for the overlap projection) and one forward pass (of ``P·O_j``, which also
gives the Fourier error): ``Ψ_j ← Ψ_j + π_F(2Φ_j − Ψ_j) − Φ_j`` with ``Φ_j = prop(P O_j)``.

With noisy data DM has no fixed point and drifts (a strict projection, even with the true probe
fixed, degrades the object), so π_F is the power-bound relaxed projection, with a bound well
below the Poisson floor (a bound at the floor stops DM at the first consistent, biased object).
DM does the global search; from iteration ``algorithm.dm.refine_from`` on LSQML's
maximum-likelihood updates refine DM's best object and probe on the same tile (DM's exit
waves are freed), as ptypy users follow DM with ML. Where DM's error is still far above the
data's Poisson noise floor and falling fast (high doses: the noise it would drift on is
still small against its misfit), DM goes on (:func:`defers`), at the latest to
``refine_by`` of the iterations. With position refinement the refinement runs from the first
iteration (:func:`moves_positions`). Every decision is a function of the
iteration, the planned iterations and the global error history, so every rank, a resumed run
and an uninterrupted one decide alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..config import PositionCorrectionConfig
from ..ops import DmFourierJob, DmObjectJob, DmProbeJob
from .base import Engine
from .lsqml import LSQML
from .noise import POISSON_FLOOR

PSI_CACHE_BYTES = 2 << 30  # keep sample-plane exit waves between object and probe updates
PROBE_TABLE_BYTES = 1 << 30  # keep every distinct shifted probe of an iteration up to this


def stall_iteration(errors: list[float], patience: int, earliest: int) -> int | None:
    """The first iteration after which the error has set no new low for ``patience``
    iterations, counting from iteration ``earliest`` (DM's error may rise for a while as it
    searches, early on), or None. With noisy data DM has no fixed point: once it stops
    improving it drifts away from the solution it found, so error reduction takes over there.
    A function of the global error history only, so every rank, a resumed run and an
    uninterrupted one decide alike."""
    best_at = best_since(errors, earliest)
    for i in range(max(earliest - 1, 0), len(errors)):
        if errors[i] < errors[best_at]:
            best_at = i
        elif i - best_at >= patience:
            return i + 1
    return None


def defers(errors: list[float], floor: Callable[[], float], ratio: float | None, rate: float,
           window: int = 5) -> bool:
    """Whether DM goes on past ``refine_from``: over the last ``window`` iterations its error
    fell by more than ``rate`` per iteration (geometric mean), and the last one is above
    ``ratio`` times the noise ``floor()`` (asked for only then). Never with ``ratio`` None."""
    if ratio is None or len(errors) <= window:
        return False
    if errors[-1] >= errors[-1 - window] * (1.0 - rate) ** window:
        return False
    return errors[-1] > ratio * floor()


def moves_positions(pc: PositionCorrectionConfig) -> bool:
    """Whether the maximum-likelihood refinement takes over from the first iteration because
    positions are refined: DM's projections fit the object to the positions its exit waves
    were formed at, a global distortion of them (scale, rotation, shear) included, which its
    own position updates hardly move and the refinement then removes only slowly (even one
    DM iteration at wrong positions can leave it); LSQML's steps let object and positions
    converge together."""
    return pc.enabled


def best_since(errors: list[float], earliest: int) -> int:
    """The index of the first error of iteration ``earliest`` or later (the start of the
    search for DM's best iteration)."""
    return min(max(earliest - 1, 0), max(len(errors) - 1, 0))


class DifferenceMap(Engine):
    name = "dm"

    def __init__(self, *args: Any, waves: Any = None, refined: bool = False,
                 **kwargs: Any) -> None:
        """``waves``: the exit waves of this tile's first ``len(waves)`` positions, kept (a
        scan grown by ``run --follow``); the others' are made from the probe and object.
        ``refined``: start in the refinement (a grown scan whose DM had handed over)."""
        super().__init__(*args, **kwargs)
        self._psi: Any = None  # sample-plane exit waves kept for the probe update
        self._table: tuple[Any, Any] | None = None  # (probe, its shifted probes)
        # the probe update visits positions sorted by sub-pixel shift, so that each chunk's
        # positions of equal shift form runs back-shifted once; the other passes keep the
        # scan's order, whose neighbouring windows share the tile's cache lines
        shared = self.use_subpixel and self.cfg.subpixel_bins > 0
        self._by_shift = np.argsort(self.ramp_id, kind="stable") if shared else None
        # DM's object, probe and (with position refinement) positions of lowest error
        self._best: tuple[Any, Any, np.ndarray | None] | None = None
        self._refined = refined  # the maximum-likelihood refinement has taken over
        self._ml: LSQML | None = None  # the refinement's engine (on the same tile)
        self._reset(waves)

    def _reset(self, known: Any = None) -> None:
        """Exit waves of the current probe and object, those of the first ``len(known)``
        positions copied from ``known`` (or, once refining, the refinement's engine started
        from them)."""
        if self._refined:
            self._start_refinement()
            return
        n, k, m = len(self.rows), self.probe.shape[0], self.data.frame
        self.waves = self.backend.empty((n, k, m, m), self.backend.complex_dtype)
        start = 0 if known is None else min(len(known), n)
        if start:
            self.waves[:start] = known[:start]
        prop = self.data.propagator
        table, probe_ft = self._probe_table()

        def fill(_: int, sl: slice) -> None:
            sl = slice(sl.start + start, sl.stop + start)
            probes, probe_of = self._probes(sl, table, probe_ft)
            phi = self.backend.ops.exit_waves(probes, self.object, self.windows(sl), probe_of)
            self.waves[sl] = prop.forward(phi)

        self.map_chunks(fill, n - start)

    # ------------------------------------------------------------------ shifted probes
    def _probe_table(self) -> tuple[Any, Any]:
        """Every distinct sub-pixel-shifted probe (G, K, M, M) of the current probe, made once
        per probe (a Fourier update and the next overlap projection share it), or None when
        they would not fit (each chunk then shifts its own); and the probe's spectrum."""
        if not self.use_subpixel:
            return None, None
        kept = self._table
        if kept is not None and bool(self.backend.xp.array_equal(kept[0], self.probe)):
            return kept[1], None
        probe_ft = self.backend.fft2(self.probe)
        if self._ramps[0].shape[0] * self.probe.nbytes > PROBE_TABLE_BYTES:
            self._table = None
            return None, probe_ft
        table = self.backend.ops.shifted_probes(probe_ft, self._ramps, self.probe)
        self._table = (self.probe.copy(), table)
        return table, None

    def _probes(self, sel: Any, table: Any, probe_ft: Any) -> tuple[Any, Any]:
        """The probes of positions ``sel`` and each position's row in them: rows of the
        table, else the chunk's own distinct shifted probes (:meth:`Engine.probe_set`)."""
        if table is not None:
            return table, self.shift_rows(sel)
        return self.probe_set(sel, probe_ft)

    def _start_refinement(self) -> None:
        """Hand the tile to LSQML's maximum-likelihood updates from the current object and
        probe: DM's exit waves are dropped (LSQML keeps none); LSQML draws its batches from
        this engine's random generator, so a checkpoint holds its state."""
        self.waves, self._psi, self._table = None, None, None
        if self._ml is not None:
            self._ml.close()
        self._ml = LSQML(self.cfg, self.data, self.exchange, self.backend, self.probe,
                         self.object, self.schedule)
        self._ml.refiner = None  # positions are refined once, by this engine
        self._ml.rng = self.rng

    def _positions_moved(self) -> None:
        super()._positions_moved()
        if self._ml is not None:
            self._ml.move_positions(self.data.positions)

    def refined_by(self) -> Engine:
        """Once LSQML refines, its placement (exact while positions are refined) and state."""
        return self._ml or self

    def close(self) -> None:
        if self._ml is not None:
            self._ml.close()
        super().close()

    def step(self) -> dict:
        """One iteration. DM remembers its object, probe and refined positions of lowest
        error; when the refinement takes over it starts from them (DM may have drifted
        since, and positions refined since then would meet an older object)."""
        if self.refining and not self._refined:
            self._refined = True
            if self._best is not None:
                self.object, self.probe = self._best[0].copy(), self._best[1].copy()
                if self._best[2] is not None:
                    self.move_positions(self._best[2])
                self._best = None
            self._reset()
        metrics = super().step()
        earliest = self.cfg.dm.refine_earliest
        first = best_since(self.errors, earliest)
        if (not self._refined and self.iteration >= earliest
                and metrics["error"] <= min(self.errors[first:])):
            positions = None if self.refiner is None else self.data.positions.copy()
            self._best = (self.object.copy(), self.probe.copy(), positions)
        return metrics

    def _iterate(self) -> float:
        ml = self._ml
        if ml is not None:  # the refinement: one LSQML iteration on the current state
            ml.object, ml.probe, ml.iteration = self.object, self.probe, self.iteration
            err = ml._iterate()
            self.object, self.probe = ml.object, ml.probe
            return err
        for sweep in range(self.cfg.dm.overlap_iterations):
            self._overlap_projection(psi_ready=sweep > 0)
        return self._fourier_update()

    def _exit_waves(self, sel: Any) -> Any:
        """Sample-plane exit waves of positions ``sel`` (the kept ones are in ``_psi``:
        :meth:`_overlap_projection` allocates that buffer once, before the threads start, as
        100 MB of fresh pages per iteration would cost as much time in page faults as half
        the inverse FFTs)."""
        return self.data.propagator.backward(self.waves[self._device_sel(sel)])

    def _overlap_projection(self, psi_ready: bool = False) -> None:
        """One sweep of the overlap projection: the object from the exit waves and the
        probe, then the probe from them and the new object. ``psi_ready``: an earlier sweep
        of this iteration kept the sample-plane exit waves (the waves have not changed), so
        no inverse propagation is needed."""
        be, xp, ops = self.backend, self.backend.xp, self.backend.ops
        share_obj = self.schedule.share_object(self.iteration)
        table, probe_ft = self._probe_table()
        # sums in double precision: their order (tiles, threads) then no longer matters, so n
        # ranks follow the one-rank trajectory even in complex64 (DM amplifies rounding)
        nums = self.accumulators(self.data.box_shape, np.complex128)
        dens = self.accumulators(self.data.box_shape, np.float64)
        n = len(self.rows)
        update_probe = self.updates_probe
        # keep the exit waves for the probe update when they fit: one backward pass, not two
        keep = update_probe and self.waves.nbytes <= PSI_CACHE_BYTES

        if keep and (self._psi is None or self._psi.shape != self.waves.shape):
            self._psi = be.empty(self.waves.shape, self.waves.dtype)
        cached = psi_ready and keep

        def object_sums(t: int, sl: slice) -> None:
            probes, probe_of = self._probes(sl, table, probe_ft)
            if cached:
                ops.object_terms(self._psi[sl], probes, self.windows(sl), nums[t], dens[t],
                                 probe_of)
                return
            ops.dm_object_chunk(DmObjectJob(
                waves=self.waves[sl], win=self.windows(sl), probes=probes, probe_of=probe_of,
                num=nums[t], den=dens[t], keep=self._psi[sl] if keep else None,
                prop=self.data.propagator))

        self.map_chunks(object_sums, n)
        num, den = self.reduce((nums, np.complex128), (dens, np.float64))
        if share_obj:
            self.exchange.halo_sum(num, den)
        delta = self.cfg.dm.regularisation * self.exchange.allreduce(
            float(den.max()) if den.size else 0.0, op="max")
        self.object = ((num + delta * self.object) / (den + delta)).astype(be.complex_dtype)

        if not update_probe:
            return
        order = self._by_shift

        def probe_sums(_: int, sl: slice) -> Any:
            sel = sl if order is None else order[sl]
            psi = self._psi[self._device_sel(sel)] if keep else self._exit_waves(sel)
            win = self.windows(sel)
            if not self.use_subpixel:
                return ops.probe_terms(psi, self.object, win)
            # with sub-pixel shifts the update is a step along the residual's back-shifted
            # gradient, Σ_j S_-j[conj(O_j)(ψ_j − S_j(P) O_j)] / (Σ_j |O_j|² + δ): a Fourier
            # back-shift of the real weight |O_j|² rings at sharp edges and at the frame's
            # border (dips towards zero), where the quotient form diverged
            probes, probe_of = self._probes(sel, table, probe_ft)
            runs = self.runs(sel)
            shift_ids = self.ramp_id[sel] if runs is None else self.ramp_id[sel][runs]
            return (*ops.dm_probe_chunk(DmProbeJob(
                psi=psi, obj=self.object, win=win, ramps=self.ramps(sel), runs=runs,
                probes=probes, probe_of=probe_of)), shift_ids)

        terms = self.map_chunks(probe_sums, n)
        pnum = self.chunk_sum([t[0] for t in terms])
        pden = self.chunk_sum([t[1] for t in terms])
        if self.use_subpixel:  # the chunks' spectra, added, need one inverse FFT
            pnum = be.ifft2(pnum, overwrite=True)
        share_probe = self.schedule.share_probe(self.iteration)
        if share_probe:  # numerator and denominator in one call
            packed = self.exchange.allreduce(xp.concatenate([pnum.reshape(-1),
                                                             pden.reshape(-1)]))
            pnum = packed[:pnum.size].reshape(pnum.shape)
            pden = packed[pnum.size:].real.reshape(pden.shape)
        pdelta = self.cfg.dm.regularisation * float(pden.max())
        if self.use_subpixel:  # along the preconditioned residual, by the exact line search
            direction = pnum / (pden + pdelta)
            curvature = self._probe_curvature(direction, terms)
            if share_probe:
                curvature = self.exchange.allreduce(curvature)
            # element-wise, not a BLAS dot: OpenBLAS's threads would spin beside the workers
            slope = float((direction.real * pnum.real + direction.imag * pnum.imag).sum())
            step = slope / curvature if curvature > 0 else 0.0
            self.probe = (self.probe + step * direction).astype(be.complex_dtype)
        else:
            self.probe = ((pnum + pdelta * self.probe) / (pden + pdelta)).astype(
                be.complex_dtype)

    def _probe_curvature(self, direction: Any, terms: list[tuple]) -> float:
        """``Σ_j ‖S_j(d) O_j‖²`` for the probe direction ``d`` over this tile's positions,
        from each run's ``Σ |O_j|²`` and its shift (the chunks' ``terms``): with the slope
        ``Re⟨d, g⟩`` it gives the step that minimises the overlap misfit along ``d``. The
        diagonal preconditioner alone is the exact step only without sub-pixel shifts; with
        them, on rough objects, it overshot and the probe ran away."""
        be, xp = self.backend, self.backend.xp
        ids = np.concatenate([t[3] for t in terms])
        if not len(ids):
            return 0.0
        powers = [p for t in terms for p in t[2]]
        shifts, member = np.unique(ids, return_inverse=True)
        runs_of_shift: list[list[int]] = [[] for _ in shifts]
        for run, shift in enumerate(member.reshape(-1)):
            runs_of_shift[shift].append(run)
        d = direction.astype(be.complex_dtype)
        d_ft = be.fft2(d)

        def part(_: int, sl: slice) -> float:  # the distinct shifts over the worker threads
            weight = xp.zeros((sl.stop - sl.start, *powers[0].shape), np.float64)
            for i, runs in enumerate(runs_of_shift[sl]):  # Σ |O_j|² per distinct shift
                for run in runs:
                    weight[i] += powers[run]
            rows = xp.asarray(shifts[sl])
            shifted = be.ops.shifted_probes(d_ft, (self._ramps[0][rows], self._ramps[1][rows]),
                                            d)
            return be.ops.weighted_power(shifted, weight)

        return float(sum(self.map_chunks(part, len(shifts), self.per_thread(len(shifts)))))

    @property
    def refining(self) -> bool:
        """The maximum-likelihood refinement instead of DM this iteration: from
        ``algorithm.dm.refine_from`` unless DM still converges far above the noise
        (:func:`defers`; at the latest from ``refine_by`` of the iterations), or earlier once
        DM has stalled (:func:`stall_iteration`); from the first with position refinement
        (:func:`moves_positions`)."""
        if self._refined or moves_positions(self.cfg.position_correction):
            return True  # once it has taken over it stays
        opts = self.cfg.dm
        start = opts.refine_from
        if start is not None and self.iteration >= start:
            latest = max(start, math.ceil(opts.refine_by * self.cfg.iterations))
            if self.iteration >= latest or opts.refine_noise_ratio is None:
                return True
            return not defers(self.errors, self.noise_level, opts.refine_noise_ratio,
                              opts.refine_rate)
        patience = opts.refine_patience
        return bool(patience) and stall_iteration(self.errors, patience,
                                                  opts.refine_earliest) is not None

    def _fourier_update(self) -> float:
        be = self.backend
        prop = self.data.propagator
        bound = POISSON_FLOOR * self.cfg.dm.bound_fraction * self.cfg.dm.fourier_relax
        table, probe_ft = self._probe_table()

        def update(_: int, sl: slice) -> float:
            probes, probe_of = self._probes(sl, table, probe_ft)
            return be.ops.dm_fourier_chunk(DmFourierJob(
                amplitudes=self.data.amplitudes[sl], win=self.windows(sl), obj=self.object,
                probes=probes, probe_of=probe_of, waves=self.waves[sl], bound=bound,
                prop=prop))

        return float(sum(self.map_chunks(update, len(self.rows))))

    def position_state(self) -> dict[str, Any]:
        """DM's exit waves, one per position (none once the refinement has freed them)."""
        return {} if self.waves is None else {"waves": self.waves}

    def _extra_state(self) -> dict[str, Any]:
        if self._refined:  # the refinement keeps no state beyond object, probe and generator
            return {"refined": np.array(True)}
        extra = {"waves": self.waves, "refined": np.array(self._refined)}
        if self._best is not None:
            extra["best_object"], extra["best_probe"], positions = self._best
            if positions is not None:
                extra["best_positions"] = positions
        return extra

    def _restore_extra(self, state: dict[str, np.ndarray]) -> None:
        self._refined = bool(state.get("refined", False))
        self._best = None
        if self._refined:
            self._start_refinement()
            return
        if "best_object" in state:
            xp, dtype = self.backend.xp, self.backend.complex_dtype
            positions = state.get("best_positions")
            self._best = (xp.asarray(state["best_object"], dtype=dtype),
                          xp.asarray(state["best_probe"], dtype=dtype),
                          None if positions is None
                          else np.asarray(positions, np.float64).reshape(-1, 2))
        waves = state["waves"]
        self.waves = self.backend.empty(waves.shape, self.backend.complex_dtype)  # aligned
        self.waves[...] = self.backend.xp.asarray(waves)

