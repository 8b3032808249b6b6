"""LSQML (Odstrčil, Menzel & Guizar-Sicairos, Opt. Express 26, 3108, 2018), DESIGN.md §5.

Sparse batches are global: every rank draws the same seeded permutation of all frame
indices, splits it into the same batches and updates with its own members of each batch, so
n ranks with ``share_frequency: 1`` follow the one-rank trajectory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..model.physics import EPS, run_ramps
from ..ops import LsqmlJob
from ..parallel.sparse_halo import TouchedHalo
from .base import Engine
from .batch_layout import frame_cells, stratified_parts
from .lsqml_halo import halo_illumination, numerator_scale
from .noise import noise_model
from .visits import extra_rounds

# the tuning constants are options: algorithm.lsqml (ptychompi.config.engines.LSQMLOptions);
# BENCHMARKS.md has the measurements behind their defaults


def trimmed_mean(values: np.ndarray, trim: float) -> float:
    """Mean after dropping the lowest and highest ``trim`` fraction."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if v.size == 0:
        return 0.0
    cut = int(np.floor(trim * v.size))
    kept = v[cut:v.size - cut] if v.size - 2 * cut > 0 else v
    return float(kept.mean())


def step_lengths(terms: np.ndarray, means: np.ndarray, damping: float,
                 scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-position (α_O, α_P) from rows ``(a11, b1[, a22, a12, b2])`` of the 2x2 system
    (α_P zero without the probe terms), damped by ``damping`` times the batch means of the
    diagonals, clipped at zero and scaled by ``scale``."""
    a11 = terms[:, 0] + damping * means[0] + EPS
    b1 = terms[:, 1]
    if terms.shape[1] == 2:
        alpha_o, alpha_p = b1 / a11, np.zeros(len(terms))
    else:
        a22 = terms[:, 2] + damping * means[2] + EPS
        a12, b2 = terms[:, 3], terms[:, 4]
        det = a11 * a22 - a12 ** 2
        alpha_o = (a22 * b1 - a12 * b2) / det
        alpha_p = (a11 * b2 - a12 * b1) / det
    return scale * np.maximum(alpha_o, 0), scale * np.maximum(alpha_p, 0)


def step_decay(iteration: int, iterations: int, final: float, start: int | None = 0) -> float:
    """The object step's factor: 1 until half of ``iterations`` (or ``start``, when later),
    then falling linearly to ``final`` at the last iteration (``iterations - 1``: 0-based);
    1 throughout while ``start`` is None (run --follow: the scan not yet complete)."""
    if start is None or final >= 1.0:
        return 1.0
    begin = max(0.5 * iterations, float(start))
    t = (iteration - begin) / max(iterations - 1 - begin, 1.0)
    return 1.0 - (1.0 - final) * min(1.0, max(0.0, t))


class _Batch(NamedTuple):
    """One sparse batch: its members (local indices), the positions per chunk (one chunk per
    worker thread; every pass over the batch uses this one split) and what it updates and
    shares this iteration."""

    members: np.ndarray
    size: int
    update_probe: bool
    share_obj: bool
    share_probe: bool


class _Part(NamedTuple):
    """One chunk's results of step 1 (:meth:`LSQML._exit_targets`)."""

    probes: tuple[Any, Any]  # the distinct (shifted) probes and each position's row
    win: Any  # the positions' object windows
    chi: Any  # χ = Ψ' − ψ in the sample plane
    err: float  # the chunk's amplitude misfit
    d_probe: Any  # its probe direction terms (a spectrum with sub-pixel shifts), or None
    refinement: np.ndarray | None  # the position refinement's sums of χ (B, 17), or None


class LSQML(Engine):
    name = "lsqml"
    extra_visits: np.ndarray | None = None  # run --follow: global positions owed more visits
    stratified = False  # batches spread evenly over the scan (engines/batch_layout.py)
    # the first iteration with the whole scan in: the object step's decay starts no earlier
    # (run --follow sets it; None while rows still arrive)
    complete_from: int | None = 0
    _cells: np.ndarray | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        n_global = self.data.n_global
        size = self.cfg.batch_size or max(1, -(-n_global // self.cfg.lsqml.batches))
        self.n_batches = max(1, -(-n_global // size))
        self.batch_len = size
        self._lookup = np.full(n_global, -1, dtype=np.int64)
        self._lookup[self.data.indices] = np.arange(len(self.data.indices))
        self._shift_of = self._global_shifts()
        opts = self.cfg.lsqml  # the noise model: its own object (noise.py)
        self.noise = noise_model(opts.noise_model, opts.poisson_newton_steps)
        self.step_final = self._step_final()  # collective
        # per-batch halo sums move only the pixels the batch's windows touched (off: the full
        # halo, the same result), compact: the numerator to the object's precision; the
        # global batch being updated and its built exchange
        self.touched_halo = self.schedule.halo != "full"
        self.compact_halo = self.schedule.halo == "compact"
        self._parts: list[np.ndarray] = []
        self._part: np.ndarray | None = None
        self._touched: tuple[Any, TouchedHalo] | None = None

    def _step_final(self) -> float:
        """The object step's final factor: ``step_final`` where the data's Poisson noise level
        (:meth:`~.base.Engine.noise_level`: one collective the first time) reaches
        ``decay_noise``, proportionally closer to 1 below it."""
        opts = self.cfg.lsqml
        if opts.step_final >= 1.0:
            return 1.0
        level = self.noise_level()
        depth = 1.0 if opts.decay_noise <= 0 else min(1.0, level / opts.decay_noise)
        return 1.0 - (1.0 - opts.step_final) * depth

    def _positions_moved(self) -> None:
        super()._positions_moved()
        self._shift_of = self._global_shifts()  # collective, as every move

    def _global_shifts(self) -> np.ndarray | None:
        """Every frame's rounded sub-pixel shift as one integer, the same on every rank (one
        allgather at the start), or None when positions are exact or whole on every rank.

        Collective on every rank: whether shifts are in use is decided per rank (from its own
        positions), so a tile whose positions are all whole still joins the others' gather
        (its keys are those of shift zero) and every rank draws the same batches."""
        bins = self.cfg.subpixel_bins
        shifted = bool(self.cfg.subpixel) and bool(
            self.exchange.allreduce(int(self.use_subpixel), op="max"))
        # the halos' illumination is recomputed (lsqml_halo), not sent, unless every
        # position has a shift (or a probe: between bins) of its own
        self._halo_powers = not shifted or (bins > 0 and not self.between_bins)
        if not shifted or bins <= 0:
            return None
        steps = np.rint(self.fractions * bins).astype(np.int64)
        key = steps[:, 0] * (bins + 1) + steps[:, 1]
        pairs = self.exchange.allgather(np.stack([self.data.indices, key], 1).reshape(-1))
        pairs = pairs.reshape(-1, 2)
        shift_of = np.zeros(self.data.n_global, dtype=np.int64)
        shift_of[pairs[:, 0]] = pairs[:, 1]
        return shift_of

    def _stratified(self, perm: np.ndarray) -> list[np.ndarray]:
        """``perm`` dealt into spatially even batches of whole shift groups (every frame's
        cell gathered at first use: collective)."""
        if self._cells is None:
            pos = np.stack([self.rows, self.cols], 1) + np.asarray(self.data.origin)
            self._cells = frame_cells(self.exchange, self.data.indices, pos,
                                      self.data.n_global, self.n_batches)
        groups = None if self._shift_of is None else self._shift_of[perm]
        return stratified_parts(perm, groups, self._cells, self.n_batches)

    def _batches(self) -> list[np.ndarray]:
        """This rank's local indices in each global sparse batch (same count on all ranks).

        With rounded sub-pixel shifts the random order visits the shifts in a random order,
        all frames of one shift together (in random order), before it is cut into batches:
        a batch then holds a few whole groups of equal shift, spread over the scan like any
        random subset, and shifts its probe and back-shifts its update once per group. Each
        rank's members are sorted by shift, so the groups are runs (:meth:`Engine.runs`).
        """
        perm = self.rng.permutation(self.data.n_global)
        if self._shift_of is not None:
            _, group = np.unique(self._shift_of[perm], return_inverse=True)
            group_rank = self.rng.permutation(int(group.max()) + 1)
            perm = perm[np.argsort(group_rank[group.reshape(-1)], kind="stable")]
        out = []
        if self.stratified:  # each batch spread evenly over the scan
            self._parts = self._stratified(perm)
        else:
            self._parts = np.array_split(perm, self.n_batches)  # global: the touched halo's plan
        for extra in extra_rounds(self.rng, self.extra_visits):  # batches of their own
            self._parts += np.array_split(extra, -(-len(extra) // self.batch_len))
        for part in self._parts:
            local = self._lookup[part]
            local = local[local >= 0]
            if self._shift_of is None:  # by window row: each thread's share is a band
                out.append(local[np.lexsort((local, self.rows[local]))])
            else:
                out.append(local[np.lexsort((local, self.ramp_id[local]))])
        return out

    def _iterate(self) -> float:
        err = 0.0
        for k, batch in enumerate(self._batches()):
            self._part = self._parts[k]
            e = self._update(batch, k < self.n_batches)
            err += e if k < self.n_batches else 0.0  # catch-up visits: not in the error
        self._part = None
        if self.exchange.size > 1:
            if self.schedule.share_frequency > 1 and self.schedule.share_object(self.iteration):
                self.merge_object()
            if self.schedule.probe_share_frequency > 1 and self.schedule.share_probe(
                    self.iteration):
                self.average_probe()
        return err

    @property
    def fused(self) -> bool:
        """The compiled pipelines implement the Gaussian noise model only."""
        return super().fused and self.noise.fused

    def _halo_sum(self, *arrays: Any) -> None:
        """The batch's halo sum: over the pixels its windows touched (:class:`TouchedHalo`,
        built collectively at first use and again after the positions moved), or the full
        halo with ``touched_halo`` off or outside :meth:`_iterate`."""
        ex = self.exchange
        if ex.size == 1 or not self.touched_halo or self._part is None:
            ex.halo_sum(*arrays)
            return
        if self._touched is None or self._touched[0] is not self.rows:  # every rank alike
            frame = (self.data.frame, self.data.frame)
            self._touched = (self.rows, TouchedHalo(ex, self.data.indices, self.rows,
                                                    self.cols, self.data.n_global, frame,
                                                    compact=self.compact_halo))
        touched = self._touched[1]
        # (num, illum): the illumination is computed here, from a probe all ranks share
        if (self._halo_powers and len(arrays) == 2 and not self.backend.is_gpu
                and self.schedule.probe_share_frequency == 1):
            halo_illumination(self, touched, self._part, arrays[1])  # first: it scales
            scale = numerator_scale(self, arrays[1]) if self.compact_halo else None
            touched.sum(self._part, arrays[0], scale=scale)
        else:
            touched.sum(self._part, *arrays)

    def _update(self, batch: np.ndarray, regular: bool = True) -> float:
        """One sparse batch, in the steps of the paper (Odstrčil et al. 2018, section 2):
        the exit-wave targets χ = Ψ' − ψ with each position's update terms
        (:meth:`_exit_targets`), the probe's and the object's search directions
        (:meth:`_probe_direction`, :meth:`_object_direction`), the per-position step lengths
        of the 2x2 least-squares system (:meth:`_step_terms`, :func:`step_lengths`) and the
        update (:meth:`_take_steps`). The extra batches (not ``regular``: catch-up visits)
        leave the probe alone (their positions' object is still far off)."""
        b = _Batch(members=batch, size=self.per_thread(len(batch)),
                   update_probe=self.updates_probe and regular,
                   share_obj=self.schedule.share_object(self.iteration),
                   share_probe=self.schedule.share_probe(self.iteration))
        be = self.backend
        # the object sums in working precision: LSQML, unlike DM, does not amplify how their
        # rounding depends on the split over threads and tiles (n ranks stay within 1e-5 of
        # one rank, as with double-precision sums), and the tile sums are memory-bound (half
        # the bytes: 9 % less time per iteration on the 30x30 scan)
        nums = self.accumulators(self.data.box_shape, be.complex_dtype)
        illums = self.accumulators(self.data.box_shape, be.real_dtype)
        # the rows each thread's windows cover (without shifts the members are sorted by
        # window row, so the threads' shares are bands of the tile): the reduction reads those
        spans = np.zeros((len(nums), 2), dtype=np.int64)
        parts = self._exit_targets(b, nums, illums, spans)
        err = float(sum(p.err for p in parts))
        if self.position_collector is not None:  # the position refinement reuses χ
            self.position_collector.collect(self, b.members, b.size,
                                            [(p.refinement, p.chi) for p in parts])
        pending = self._probe_direction(b, parts)  # its reduction in flight during the next
        d_obj = self._object_direction(b, nums, illums, spans)
        d_probe = pending() if b.update_probe else None
        local, every = self._step_terms(b, parts, d_obj, d_probe)
        self._take_steps(b, local, every, d_obj, d_probe)
        return err

    def _exit_targets(self, b: _Batch, nums: Any, illums: Any, spans: np.ndarray) -> list[_Part]:
        """Step 1, per chunk of the batch (one per worker thread): exit waves ψ = P O, their
        detector-space targets Ψ' (the noise model), χ = Ψ' − ψ back in the sample plane,
        the object sums Σ conj(P) χ and Σ |P|² into the thread's accumulators and the
        probe's direction terms Σ conj(O) χ (back-shifted per run of equal sub-pixel
        shift)."""
        be = self.backend
        batch, update_probe = b.members, b.update_probe
        probe_ft = be.fft2(self.probe) if self.use_subpixel and len(batch) else None  # once
        refining = self.position_collector  # its sums of χ come from the same pass

        def exit_part(t: int, sl: slice) -> _Part:
            part = batch[sl]
            spans[t] = self.row_span(part, spans[t])
            win = self.windows(part)
            ramps = self.ramps(part)
            probes, probe_of = self.probe_set(part, probe_ft)  # one per distinct shift
            # χ = Ψ' − ψ, the object sums and the probe direction terms: summed, or with
            # sub-pixel shifts per run of equal shift (per position when exact), back-shifted
            # once per run
            runs = self.runs(part) if ramps is not None else None
            shifts = run_ramps(be, ramps, runs) if update_probe and ramps is not None else None
            refinement = None if refining is None else np.empty((len(part), 17))
            err, chi, d_probe = be.ops.lsqml_chunk(LsqmlJob(
                amplitudes=self.data.amplitudes, frames=part, win=win, obj=self.object,
                probes=probes, probe_of=probe_of, num=nums[t], den=illums[t],
                with_probe=update_probe, per_position=ramps is not None and runs is None,
                runs=runs, shifts=shifts, prop=self.data.propagator, noise=self.noise,
                refinement=refinement))
            return _Part((probes, probe_of), win, chi, err, d_probe, refinement)

        return self.map_chunks(exit_part, len(batch), b.size) if len(batch) else []

    def _probe_direction(self, b: _Batch, parts: list[_Part]) -> Callable[[], Any]:
        """Step 2a: the probe's search direction ΔP, the batch mean of the positions'
        back-shifted terms (summed in double precision, like every cross-position sum). With
        ``share_probe`` its sum over the ranks starts here and is collected by the returned
        call (after the object's halo sum)."""
        be, xp, ex = self.backend, self.backend.xp, self.exchange
        if not b.update_probe:
            return lambda: None
        d_probe = (self.chunk_sum([p.d_probe for p in parts]) if parts
                   else xp.zeros(self.probe.shape, dtype=np.complex128))
        if parts and self.use_subpixel:  # the chunks' back-shift spectra
            d_probe = be.ifft2(d_probe, overwrite=True)
        count = float(len(b.members))
        pending = None
        if b.share_probe:  # one reduction for the direction and the batch size, in flight
            pending = ex.allreduce_start(xp.concatenate(  # during the object's halo sum
                [d_probe.reshape(-1), xp.full(1, count, np.complex128)]))

        def finish() -> Any:
            total, n = d_probe, count
            if pending is not None:
                packed = pending.wait()
                total, n = packed[:-1].reshape(self.probe.shape), float(packed[-1].real)
            return (total / max(n, 1.0)).astype(be.complex_dtype)

        return finish

    def _object_direction(self, b: _Batch, nums: Any, illums: Any, spans: np.ndarray) -> Any:
        """Step 2b: the object's search direction ΔO = Σ conj(P) χ / (Σ |P|² + λ) from the
        threads' sums (over the halos: the touched pixels, in working precision; LSQML, unlike
        DM, does not amplify that rounding), λ = (δ max Σ|P|²)²."""
        be, xp, ex = self.backend, self.backend.xp, self.exchange
        num, illum = self.reduce((nums, be.complex_dtype), (illums, be.real_dtype),
                                 spans=spans)
        if b.share_obj:
            self._halo_sum(num, illum)
        dmax = ex.allreduce(float(illum.max()) if illum.size else 0.0, op="max")
        damping = (self.cfg.lsqml.delta * dmax) ** 2
        d_obj = xp.empty_like(num)
        self.map_rows(lambda rows: be.ops.lsqml_object_direction(num[rows], illum[rows],
                                                                 damping, d_obj[rows]),
                      num.shape[0])
        return d_obj

    def _step_terms(self, b: _Batch, parts: list[_Part], d_obj: Any,
                    d_probe: Any) -> tuple[np.ndarray, np.ndarray]:
        """Step 3: each position's terms ``(a11, b1[, a22, a12, b2])`` of the 2x2 system
        that minimises ‖χ − α_O ΔO P − α_P ΔP O‖² (in the chunks of step 1: each reuses its
        chunk's χ), this rank's and, with ``share_obj``, every rank's (one gather: each rank
        solves all steps, whose damping needs the batch means)."""
        be, xp, ex = self.backend, self.backend.xp, self.exchange
        nb, update_probe = len(b.members), b.update_probe

        def step_terms(_: int, sl: slice) -> list[Any]:
            (probes, probe_of), win, chi = parts[sl.start // b.size][:3]
            return be.ops.lsqml_step_terms(chi, probes, self.object, d_obj,
                                           d_probe if update_probe else None, win, probe_of)

        if nb:
            cols_ = list(zip(*self.map_chunks(step_terms, nb, b.size), strict=True))
            a11, b1 = xp.concatenate(cols_[0]), xp.concatenate(cols_[1])
            if update_probe:
                a22, a12, b2 = (xp.concatenate(c) for c in cols_[2:])
        local = (np.stack([be.asnumpy(c) for c in (a11, b1, *((a22, a12, b2) if update_probe
                                                               else ()))], axis=1)
                 if nb else np.zeros((0, 5 if update_probe else 2)))
        every = (ex.allgather(local.reshape(-1)).reshape(-1, local.shape[1]) if b.share_obj
                 else local)
        return local, every

    def _take_steps(self, b: _Batch, local: np.ndarray, every: np.ndarray, d_obj: Any,
                    d_probe: Any) -> None:
        """Step 4: the object moves by the trimmed mean of the positions' object steps along
        ΔO (times :func:`step_decay`: smaller steps late in the run average the noise of more
        positions into each pixel), the probe by ``probe_relaxation`` times the mean of their
        probe steps along ΔP (all positions' with the probe shared, else this rank's)."""
        ex, opts = self.exchange, self.cfg.lsqml
        means = every.sum(axis=0) / max(len(every), 1)
        alpha_o, alpha_p = step_lengths(every, means, opts.damping, opts.step_scale)
        alpha_obj = trimmed_mean(alpha_o, opts.trim) * step_decay(
            self.iteration, self.cfg.iterations, self.step_final, self.complete_from)

        def add_step(rows: slice) -> None:  # in bands of rows over the worker threads
            self.object[rows] += alpha_obj * d_obj[rows]

        self.map_rows(add_step, self.object.shape[0])
        if b.update_probe:  # the probe's own sharing: all positions' steps, or this rank's
            alphas = (alpha_p if b.share_probe
                      else step_lengths(local, means, opts.damping, opts.step_scale)[1])
            psum, pcount = float(np.sum(alphas, dtype=np.float64)), float(len(alphas))
            if b.share_probe and not b.share_obj:
                psum, pcount = ex.allreduce(psum), ex.allreduce(pcount)
            self.probe += opts.probe_relaxation * (psum / max(pcount, 1.0)) * d_probe
