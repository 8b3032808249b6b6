"""A reconstruction over a scan that is still being written (``ptychompi run --follow``).

The layout and the tiles are those of the whole planned scan (``decompose`` once over every
planned position); each rank reads the frames of its tile as their rows arrive. When rows come
in (decisions of :class:`~ptychompi.app.follow.arrivals.Arrivals`, the same on every rank) each
rank's engine is rebuilt over its grown set of positions from the current object, probe,
iteration count and error history (DM's exit waves of the positions it had are kept; new
positions start from the current model, as any new engine does). Ranks whose tile has no
position yet sit out; the others exchange over a sub-communicator.
"""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from ...backends import select_backend
from ...config import Config, apply_environment, load_config
from ...data.dataset import load_amplitudes, open_source, plan_layout, plan_preprocessor
from ...data.validate import check_guess, check_photons, guess_errors
from ...engines import ENGINES, Engine, Schedule, TileData
from ...errors import DataError
from ...model.initial import initial_object, initial_probe, shadow_drift
from ...model.physics import Propagator
from ...parallel.exchange import ExchangeStats, SerialExchange, agree
from ...parallel.tiling import decompose
from ..api import Reconstruction, collective, require_finite
from .active import ActiveGroup
from .arrivals import Arrivals, Decision, quiet_bcast
from .catchup import CatchUp
from .extend import LEVEL, continued, illumination
from .planned import IdleEngine, frame_view, is_cxi, planned_config
from .settings import follow_settings

log = logging.getLogger("ptychompi")


class FollowReconstruction(Reconstruction):
    """A :class:`Reconstruction` whose positions grow as rows arrive. Every rank builds it
    after the first decision (``first``, at least one row in)."""

    def __init__(self, config: Config, comm: Any | None, arrivals: Arrivals,
                 first: Decision) -> None:
        self.config = load_config(config)
        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()
        self.history: list[dict] = []
        self.started = time.perf_counter()
        self.arrivals = arrivals
        self.decision = Decision(0, False)
        self.frames_in = 0
        self.seconds_io = 0.0
        self.group = ActiveGroup()
        self.engine = None  # type: ignore[assignment]
        self._decided_at = 0
        self.catch_up = CatchUp(self.config.algorithm.iterations, arrivals.keep)
        self._stats = ExchangeStats()
        error: BaseException | None = None
        try:
            cfg = self.config = planned_config(apply_environment(self.config))
            self.backend = select_backend(cfg.parallel.device, comm,
                                          double=cfg.algorithm.precision == "double",
                                          workers=cfg.parallel.workers, fft=cfg.parallel.fft,
                                          operations=cfg.parallel.operations)
            self.source = self._open(cfg)
            fpf = (int(cfg.data.scan_dims[1]) if is_cxi(cfg)
                   else int(getattr(self.source, "frames_per_file", 1)))
            self.frames_per_row = fpf
            view = frame_view(self.source, self._frames_of(first.row_set,
                                                           self.source.n_frames))
            self.preprocessor = plan_preprocessor(cfg, view)  # from the rows in at the start
            frame = int(self.preprocessor.frame_shape[0])
            self.layout = plan_layout(cfg, self.source, frame, self.preprocessor.pixel_scale)
            self._validate()
            grid = tuple(cfg.parallel.grid) if cfg.parallel.grid else None
            self.tiles = decompose(self.layout.positions_px, (frame, frame), self.size, grid)
            self.tile = self.tiles[self.rank]
            layout = self.layout
            self.propagator = Propagator.build(self.backend, layout.propagation, frame,
                                               layout.wavelength_m, layout.distance_m,
                                               layout.pixel_size_m)
        except Exception as exc:  # noqa: BLE001 - any set-up failure is reported collectively below
            error = exc
        try:
            agree(comm, error)
        except BaseException:
            self._close_backend()
            raise
        self.exchange = SerialExchange(self.tile, self.backend)
        self.exchange.stats = self._stats
        self._schedule = Schedule.from_config(self.config.parallel, comm)  # collective
        self._amplitudes = np.zeros((0, frame, frame), np.float32)
        self._local_power = 0.0
        self._local_amp = np.zeros((frame, frame), np.float64)
        self._rows_in: set[int] = set()
        self._order = np.zeros(0, np.int64)  # the frames in, in arrival order
        self._local = np.zeros(0, np.int64)  # this rank's frames in, in arrival order
        self._compact = np.full(self.layout.n_frames, -1, np.int64)  # frame -> arrival index
        self.decision = first
        self._grow(first)

    def _frames_of(self, rows: list[int], n_frames: int) -> np.ndarray:
        """The planned frames of ``rows`` (in that order), below ``n_frames``."""
        fpf = self.frames_per_row
        parts = [np.arange(r * fpf, min((r + 1) * fpf, n_frames)) for r in rows]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    @staticmethod
    def _open(cfg: Config) -> Any:
        """The scan: APS row files, or a CXI file written under SWMR whose translations
        hold the whole planned scan."""
        if not is_cxi(cfg):
            return open_source(cfg)
        from ...io.cxi import read_cxi  # noqa: PLC0415

        source = read_cxi(str(cfg.data.path), swmr=True)
        if source.n_frames < int(cfg.data.n_frames or 0):
            raise DataError(f"{cfg.data.path}: {source.n_frames} translations, but the planned "
                            f"scan has {cfg.data.n_frames} frames; the writer must write the "
                            "translations of the whole scan before its frames")
        return source

    # ------------------------------------------------------------------ arrivals
    @property
    def rows_note(self) -> str:
        """``rows 5/8`` (arrived / planned) for the progress line."""
        d = self.decision
        return f"rows {d.rows}/{d.planned}" + (" (ended)" if d.aborted else "")

    @property
    def follow_status(self) -> dict:
        d = self.decision
        return {"rows": d.rows, "planned": d.planned, "ended": d.ended, "aborted": d.aborted}

    def step(self, n: int = 1) -> dict:
        """Run ``n`` iterations, taking in the rows that arrived before each. Collective."""
        metrics: dict = {}
        for _ in range(n):
            self._open_engine()
            if self.iteration != self._decided_at:
                self._decided_at = self.iteration
                decision = self.arrivals.decide(self.iteration)
                previous, self.decision = self.decision, decision
                if decision.rows != previous.rows:
                    self._grow(decision)
                if decision.ended and not previous.ended:
                    self._set_algorithm(self._algorithm())
                    if decision.aborted and self.rank == 0:
                        log.warning("the scan ended after %d of %d planned rows (no new row "
                                    "for %g s): the remaining iterations and the result cover "
                                    "the rows that arrived",
                                    decision.rows, decision.planned,
                                    self.config.data.follow.timeout_s)
            metrics = self._step_once()
        return metrics

    def _step_once(self) -> dict:
        metrics: dict | None = None
        if not isinstance(self.engine, IdleEngine):
            self._owe_visits(self.engine)
            self._mark_complete(self.engine)
            metrics = self.engine.step()
        if len(self.group.ranks) < self.size:  # the ranks sitting out learn the metrics
            metrics = quiet_bcast(self.comm, metrics, root=self.group.root)
            if isinstance(self.engine, IdleEngine):
                self.engine.iteration = int(metrics["iteration"])
                self.engine.errors.append(float(metrics["error"]))
        assert metrics is not None
        require_finite(metrics)
        self.history.append(metrics)
        return metrics

    def _mark_complete(self, engine: Any) -> None:
        """Tell ePIE and LSQML (``complete_from``; DM: its refinement) the iteration the scan
        ended at, None while rows still arrive: their object steps fall only once every row
        is in."""
        engine = getattr(engine, "_ml", None) or engine
        if hasattr(engine, "complete_from"):
            ended = self.decision.ended and self.arrivals.schedule
            engine.complete_from = int(self.arrivals.schedule[-1][0]) if ended else None

    def _owe_visits(self, engine: Any) -> None:
        """Tell ePIE and LSQML (``extra_visits``) which positions catch up on missed
        visits this iteration (:mod:`.catchup`; DM needs none: it sweeps every position's
        exit wave each iteration; once it has handed over to its LSQML refinement, that
        one's, counting DM's iterations: the refinement's own count is set as it runs)."""
        iteration = engine.iteration
        engine = getattr(engine, "_ml", None) or engine
        if not hasattr(engine, "extra_visits"):
            return
        extra = self.catch_up.extra(iteration)
        if engine.name == "epie":  # ePIE's are this tile's positions, LSQML's global
            lookup = np.full(self.frames_in, -1, np.int64)
            lookup[engine.data.indices] = np.arange(len(engine.data.indices))
            extra = lookup[extra]
            extra = extra[extra >= 0]
        engine.extra_visits = extra

    def _algorithm(self) -> Any:
        """The engine's settings now (:func:`.settings.follow_settings`)."""
        return follow_settings(self.config.algorithm, self.layout.n_frames, self.iteration,
                               self.decision.ended)

    def _set_algorithm(self, cfg: Any) -> None:
        if not isinstance(self.engine, IdleEngine):
            self.engine.cfg = cfg

    # ------------------------------------------------------------------ growing
    def _grow(self, decision: Decision) -> None:
        """Take in the frames of the decision's new rows and rebuild the engines. The
        engines see the frames in arrival order (numbered so: :attr:`_compact`), so rows
        that arrive out of order still only append positions. Collective."""
        rows = [r for r in decision.row_set if r not in self._rows_in]
        self._rows_in.update(rows)
        arrived = self._frames_of(rows, self.layout.n_frames)
        self._compact[arrived] = np.arange(len(self._order), len(self._order) + len(arrived))
        self._order = np.concatenate([self._order, arrived])
        n_in = len(self._order)
        new = arrived[np.isin(arrived, np.asarray(self.tile.indices))]
        self._local = np.concatenate([self._local, new])

        def read() -> np.ndarray:
            if not len(new):
                return np.zeros((0, *self._amplitudes.shape[1:]), np.float32)
            t0 = time.perf_counter()
            amps = load_amplitudes(self.source, self.preprocessor, new, self.layout)
            self.seconds_io += time.perf_counter() - t0
            return amps

        amps = collective(self.comm, read)
        valid = amps >= 0
        self._local_power += float(np.sum(np.where(valid, amps.astype(np.float64) ** 2, 0.0)))
        self._local_amp += np.where(valid, amps, 0).sum(axis=0, dtype=np.float64)
        self._amplitudes = np.concatenate([self._amplitudes, amps])
        self.catch_up.add(n_in - self.frames_in, 0 if self.engine is None
                          else self.engine.iteration)
        self.frames_in = n_in
        comm = self.comm
        power = self._local_power if comm is None else comm.allreduce(self._local_power)
        flags = [len(self._amplitudes) > 0] if comm is None else \
            comm.allgather(len(self._amplitudes) > 0)
        old = self.engine
        if old is None:
            mean_amp = self._local_amp if comm is None else comm.allreduce(self._local_amp)
            summed = SimpleNamespace(allreduce=lambda v: v if comm is None else comm.allreduce(v))
            drift = shadow_drift(self.config.algorithm, self.source.illumination,
                                 self.layout.propagation, self._amplitudes,
                                 self.layout.positions_px, self._local, mean_amp / n_in,
                                 summed)  # collective: the side of the focus, from the rows in
            probe, obj = collective(comm, self._start_model, power, mean_amp / n_in, n_in,
                                    drift)
            iteration, errors, seconds = 0, [], 0.0
        else:
            probe, obj = self._current_model()
            iteration, errors, seconds = old.iteration, list(old.errors), old.seconds_compute
        waves = getattr(old, "waves", None)
        self.group.update(comm, self.rank, flags, self.tiles, self.backend,
                          self.config.parallel.cuda_aware)
        if self.group.exchange is not None:
            self.exchange = self.group.exchange
            self.exchange.stats = self._stats
        engine = collective(comm, self._engine, flags[self.rank], probe, obj, power, n_in,
                            iteration, errors, seconds, waves)
        if old is not None:
            old.close()
        self.engine = engine
        log.debug("follow: %d of %d frames in at iteration %d (%d rank(s) active)", n_in,
                  self.layout.n_frames, iteration, sum(flags))

    def _start_model(self, power: float, mean_amp: np.ndarray, n_in: int,
                     drift: np.ndarray | None) -> tuple[Any, Any]:
        """The starting probe and this tile's starting object (as a new run's)."""
        cfg, layout = self.config, self.layout
        check_photons(power, n_in, self.source.path)
        with guess_errors(cfg.algorithm, "probe"):
            probe = initial_probe(cfg.algorithm, layout.frame, self.source.illumination,
                                  mean_amp, power / n_in, self.propagator,
                                  layout.pixel_size_m, self.positions, drift)
        check_guess(probe, "probe", cfg.algorithm.probe_guess)
        with guess_errors(cfg.algorithm, "object"):
            obj = initial_object(cfg.algorithm, layout.object_shape)[self.tile.box.slices()]
        check_guess(obj, "object", cfg.algorithm.object_guess)
        return probe, obj

    def _current_model(self) -> tuple[np.ndarray, np.ndarray]:
        """The probe (from the group's speaker) and this tile's box of the assembled object,
        this rank's own values where no tile is lit, continued where the positions in light
        it weakly or not at all (:meth:`_continued`). Collective."""
        from ...parallel.assemble import assemble  # noqa: PLC0415

        be, engine = self.backend, self.engine
        own = be.asnumpy(engine.object)
        weight = be.asnumpy(engine.illumination())
        wide = own.astype(np.complex128)  # in double: one rank's (O w) / w is exactly O again
        glob = assemble(wide * weight, weight.astype(np.float64), self.tile,
                        self.layout.object_shape, self.comm, fill=complex("nan"))
        probe = be.asnumpy(engine.probe)
        if self.comm is not None and self.size > 1:
            glob = self.comm.bcast(glob, root=0)
            probe = self.comm.bcast(probe, root=self.group.root)
        box = glob[self.tile.box.slices()]
        # where this tile is lit its own values are the scan's (the halo sums keep them equal
        # on every rank): a weighted mean of equal values would add rounding that DM amplifies
        model = np.where((weight > 0) | np.isnan(box), own, box)
        if not self.decision.ended:  # for the rows still to come
            model = self._continued(glob, probe, model)
        return probe, model.astype(own.dtype)

    def _continued(self, glob: np.ndarray, probe: np.ndarray, model: np.ndarray) -> np.ndarray:
        """``model`` (this tile's box) where the positions in light it well; elsewhere
        blended towards the smooth continuation of the lit object (:mod:`.extend`), so the
        rows to come start from it rather than from the starting guess. Computed alike on
        every rank from the assembled object ``glob`` (NaN where unlit) and the probe."""
        power = (np.abs(probe.reshape(-1, *probe.shape[-2:])) ** 2).sum(axis=0)
        weight = illumination(power, self.layout.positions_px[self._order], glob.shape)
        box = self.tile.box.slices()
        full = continued(glob, weight, sigma=self.layout.frame / 4)[box]
        return np.where(weight[box] >= LEVEL * weight.max(), model, full)

    def _engine(self, active: bool, probe: Any, obj: Any, power: float, n_in: int,
                iteration: int, errors: list[float], seconds: float,
                waves: Any = None) -> Any:
        """This rank's engine over its arrived positions (``waves``: DM's exit waves of the
        positions it had, kept; only the new positions' are made)."""
        be, tile, layout = self.backend, self.tile, self.layout
        if not active:
            return IdleEngine(be, be.asarray(obj, be.complex_dtype),
                              be.asarray(probe, be.complex_dtype), iteration, errors, seconds)
        indices = self._compact[self._local]  # numbered in arrival order
        data = TileData(
            amplitudes=be.asarray(self._amplitudes, be.real_dtype),
            positions=layout.positions_px[self._local] - np.asarray(tile.origin, np.float64),
            indices=indices, box_shape=tile.box.shape, n_global=n_in, power_global=power,
            propagator=self.propagator)
        cfg = self.config
        schedule = self._schedule
        settings = self._algorithm()
        extra: dict[str, Any] = {}
        if cfg.algorithm.name == "dm":
            start = settings.dm.refine_from  # once DM has handed over, no exit waves
            refined = start is not None and iteration >= start
            extra = {"refined": True} if refined else {"waves": waves}
        engine: Engine = ENGINES[cfg.algorithm.name](settings, data, self.group.exchange, be,
                                                    probe, obj, schedule, **extra)
        engine.iteration = int(iteration)  # Engine.start_from without rebuilding its state
        engine.errors = [float(e) for e in errors]
        engine.rng = np.random.default_rng([cfg.algorithm.seed, engine.iteration])
        if getattr(engine, "_ml", None) is not None:  # DM's refinement draws from it too
            engine._ml.rng = engine.rng
        engine.seconds_compute = seconds
        return engine

    # ------------------------------------------------------------------ results
    @property
    def object(self) -> np.ndarray | None:
        """The global object on rank 0 (None elsewhere), its unlit pixels 1 on any rank
        count (one rank's tile holds the continuation there, :meth:`_continued`).
        Collective."""
        obj = super().object
        if obj is not None and self.size == 1:
            lit = np.zeros(obj.shape, bool)
            lit[self.tile.box.slices()] = self.backend.asnumpy(self.engine.illumination()) > 0
            obj[~lit] = 1.0
        return obj

    @property
    def positions(self) -> np.ndarray:
        """Positions (n, 2) of the frames that arrived (in frame order), in the global
        object's pixels."""
        return self.layout.positions_px[np.sort(self._order)]

    def refined_positions(self) -> None:
        """No position refinement in follow mode."""
        return None

    def result_data(self) -> Any:
        data = super().result_data()
        if data is not None:
            d = self.decision
            data.provenance["follow"] = {"rows": d.rows, "planned_rows": d.planned,
                                         "aborted": bool(d.aborted),
                                         "schedule": [list(e) for e in self.arrivals.schedule]}
        return data

    def close(self) -> None:
        super().close()
        self.group.close()
        closer = getattr(self.arrivals.watcher, "close", None)
        if closer is not None:
            closer()
