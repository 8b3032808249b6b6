"""The Python API: :class:`Reconstruction`, whole mode (``run``) and step mode (``step``).

Every rank of the communicator builds a Reconstruction; each reads only its own frames and
reconstructs its tile. ``object`` is assembled on rank 0; ``probe`` is the same everywhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..backends import Backend, select_backend
from ..config import Config, apply_environment, load_config
from ..config.engines import config_deprecations
from ..data.dataset import load_amplitudes, open_source, plan_layout, plan_preprocessor
from ..data.scan import ScanSource
from ..data.validate import check_guess, check_photons, guess_errors
from ..engines import ENGINES, Engine, Schedule, TileData
from ..engines.positions import margin_px, padded_tiles
from ..errors import ConfigError, PtychompiError
from ..model.initial import initial_object, initial_probe, shadow_drift
from ..model.physics import Propagator
from ..parallel.exchange import SerialExchange, agree
from ..parallel.tiling import Tile, decompose
from .provenance import provenance

__all__ = ["Reconstruction", "agree", "collective", "provenance"]


def collective(comm: Any | None, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on every rank, then :func:`agree`: a failure anywhere raises everywhere.

    For set-up steps between collectives (reading a checkpoint, writing a result on rank 0):
    an exception on one rank can no longer leave the others waiting in the next collective.
    """
    error: BaseException | None = None
    result = None
    try:
        result = fn(*args)
    except Exception as exc:  # noqa: BLE001 - reported collectively
        error = exc
    agree(comm, error)
    return result


def require_finite(metrics: dict) -> None:
    """Stop with one line when an iteration's error is not finite (the run diverged)."""
    if not np.isfinite(metrics["error"]):
        raise PtychompiError(
            f"the reconstruction diverged (error is {metrics['error']}) at iteration "
            f"{metrics['iteration']}; check the data and geometry or lower the steps")


def _make_exchange(comm: Any | None, tiles: list[Tile], rank: int, backend: Backend,
                   cuda_aware: str) -> Any:
    if comm is None or comm.Get_size() == 1:
        return SerialExchange(tiles[rank], backend)
    from ..parallel.exchange import make_exchange  # noqa: PLC0415

    return make_exchange(comm, tiles, rank, backend, cuda_aware)


class Reconstruction:
    """One reconstruction on the ranks of ``comm`` (``None``: this process alone).

    ``config`` is a YAML path, a dict or a :class:`Config`; ``scan`` replaces ``data.path``
    with an in-memory or already opened scan.
    """

    def __init__(self, config: str | dict | Config, comm: Any | None = None, *,
                 scan: ScanSource | None = None) -> None:
        with config_deprecations() as notes:
            self.config = load_config(config)
        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        for line in notes if self.rank == 0 else ():  # once, not from every rank
            logging.getLogger("ptychompi").warning(line)
        self.size = 1 if comm is None else comm.Get_size()
        self.history: list[dict] = []
        self.started = time.perf_counter()
        cfg = self.config
        error: BaseException | None = None
        try:
            # $PTYCHOMPI_DEVICE/FFT/WORKERS into the config: the result's config says what ran
            cfg = self.config = apply_environment(cfg)
            self.backend = select_backend(cfg.parallel.device, comm,
                                          double=cfg.algorithm.precision == "double",
                                          workers=cfg.parallel.workers,
                                          fft=cfg.parallel.fft,
                                          operations=cfg.parallel.operations)
            self.source = scan if scan is not None else open_source(cfg)
            if scan is not None:
                scan.validate()
            preprocessor = plan_preprocessor(cfg, self.source)
            frame = int(preprocessor.frame_shape[0])
            self.layout = plan_layout(cfg, self.source, frame, preprocessor.pixel_scale)
            self._validate()
            grid = tuple(cfg.parallel.grid) if cfg.parallel.grid else None
            margin = margin_px(cfg.algorithm.position_correction)
            if margin:  # tiles grown so that positions may move within them
                self.tiles = padded_tiles(self.layout.positions_px, frame, self.size, grid,
                                          margin, self.layout.object_shape)
            else:
                self.tiles = decompose(self.layout.positions_px, (frame, frame), self.size,
                                       grid)
            self.tile = self.tiles[self.rank]
            t0 = time.perf_counter()
            amplitudes = load_amplitudes(self.source, preprocessor, self.tile.indices,
                                         self.layout)
            self.seconds_io = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - any failure is reported collectively below
            error = exc
        try:
            agree(comm, error)
            self.exchange = _make_exchange(comm, self.tiles, self.rank, self.backend,
                                           cfg.parallel.cuda_aware)
            self.engine = self._build_engine(amplitudes)
        except BaseException:
            self._close_backend()  # nobody else can: the caller gets no Reconstruction
            raise

    # ------------------------------------------------------------------ set-up
    def _validate(self) -> None:
        a, n = self.config.algorithm, self.layout.n_frames
        if a.batch_size is not None and a.batch_size > n:
            raise ConfigError(f"algorithm.batch_size = {a.batch_size} is larger than the scan "
                              f"({n} positions); use at most {n}")
        if self.size > n:
            raise ConfigError(f"{n} positions cannot be split over {self.size} ranks; "
                              f"use at most {n} ranks")

    def _build_engine(self, amplitudes: np.ndarray) -> Engine:
        valid = amplitudes >= 0
        local_power = float(np.sum(np.where(valid, amplitudes.astype(np.float64) ** 2, 0.0)))
        local_amp = np.where(valid, amplitudes, 0).sum(axis=0, dtype=np.float64)
        power = self.exchange.allreduce(local_power)
        mean_amp = self.exchange.allreduce(local_amp) / self.layout.n_frames
        drift = shadow_drift(self.config.algorithm, self.source.illumination,
                             self.layout.propagation, amplitudes, self.layout.positions_px,
                             self.tile.indices, mean_amp, self.exchange)
        schedule = Schedule.from_config(self.config.parallel, self.comm)
        # the starting guesses and the tile's data have no collectives: a problem on any rank
        # is agreed on; the engine's constructor has collectives of its own (its batches,
        # shifts and noise level), so a failure there ends the job through the runner's
        # abort rather than leaving the other ranks in a collective that cannot match
        probe, obj, data = collective(self.comm, self._engine_inputs, amplitudes, power,
                                      mean_amp, drift)
        engine_cls = ENGINES[self.config.algorithm.name]
        return engine_cls(self.config.algorithm, data, self.exchange, self.backend, probe, obj,
                          schedule)

    def _engine_inputs(self, amplitudes: np.ndarray, power: float, mean_amp: np.ndarray,
                       drift: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray, TileData]:
        """The starting probe, this tile's starting object and its data (local, no
        collectives)."""
        cfg, be, layout, tile = self.config, self.backend, self.layout, self.tile
        frame = layout.frame
        check_photons(power, layout.n_frames, self.source.path)
        pixel = layout.pixel_size_m
        propagator = Propagator.build(be, layout.propagation, frame, layout.wavelength_m,
                                      layout.distance_m, pixel)
        with guess_errors(cfg.algorithm, "probe"):
            probe = initial_probe(cfg.algorithm, frame, self.source.illumination, mean_amp,
                                  power / layout.n_frames, propagator, pixel,
                                  layout.positions_px, drift)
        check_guess(probe, "probe", cfg.algorithm.probe_guess)
        box = tile.box
        with guess_errors(cfg.algorithm, "object"):
            obj = initial_object(cfg.algorithm, layout.object_shape)[box.slices()]
        check_guess(obj, "object", cfg.algorithm.object_guess)
        data = TileData(
            amplitudes=be.asarray(amplitudes, be.real_dtype),
            positions=layout.positions_px[tile.indices] - np.asarray(tile.origin, np.float64),
            indices=np.asarray(tile.indices),
            box_shape=box.shape,
            n_global=layout.n_frames,
            power_global=power,
            propagator=propagator,
            origin=tile.origin,
        )
        return probe, obj, data

    # ------------------------------------------------------------------ running
    def _open_engine(self) -> Engine:
        """The engine, or a one-line error once :meth:`close` has released it."""
        if self.engine is None:
            raise PtychompiError("this Reconstruction is closed; build a new one to continue "
                                 "(metrics still hold what the run ended with)")
        return self.engine

    @property
    def iteration(self) -> int:
        if self.engine is None:
            return int(getattr(self, "_final_metrics", {}).get("iterations", 0))
        return self.engine.iteration

    def step(self, n: int = 1) -> dict:
        """Run ``n`` iterations; return the last one's metrics."""
        engine = self._open_engine()
        metrics: dict = {}
        for _ in range(n):
            metrics = engine.step()
            require_finite(metrics)
            self.history.append(metrics)
        return metrics

    def run(self, callback: Callable[[dict], None] | None = None) -> dict:
        """Whole mode: iterate up to ``algorithm.iterations``; ``callback`` sees each metric."""
        while self._open_engine().iteration < self.config.algorithm.iterations:
            metrics = self.step()
            if callback is not None:
                callback(metrics)
        return self.metrics

    # ------------------------------------------------------------------ results
    @property
    def metrics(self) -> dict:
        """Per-iteration errors and timings of this run, plus communication accounting."""
        if self.engine is None:  # closed: what the run ended with
            return self._final_metrics
        stats = self.exchange.stats
        return {"error": [m["error"] for m in self.history],
                "seconds": [m["seconds"] for m in self.history],
                "iterations": self.engine.iteration,
                "compute_s": self.engine.seconds_compute, "comm_s": stats.seconds,
                "bytes_sent": stats.bytes_sent, "io_s": getattr(self, "seconds_io", 0.0)}

    @property
    def probe(self) -> np.ndarray:
        """The probe (K, M, M), identical on every rank."""
        return self.backend.asnumpy(self._open_engine().probe)

    @property
    def local_object(self) -> np.ndarray:
        """This rank's tile of the object (its box)."""
        return self.backend.asnumpy(self._open_engine().object)

    @property
    def object(self) -> np.ndarray | None:
        """The global object assembled on rank 0 (``None`` on other ranks). Collective."""
        be = self.backend
        self._open_engine()
        if self.size == 1 and self.engine.refiner is None:
            full = np.ones(self.layout.object_shape, dtype=self.engine.object.dtype)
            full[self.tile.box.slices()] = be.asnumpy(self.engine.object)
            return full
        from ..parallel.assemble import assemble  # noqa: PLC0415

        # (also one rank with position refinement: its tile, grown for the moves, holds
        # unlit pixels, which get the same fill as on n ranks)
        weight = self.engine.illumination()
        num = be.asnumpy(self.engine.object * weight)
        return assemble(num, be.asnumpy(weight), self.tile, self.layout.object_shape, self.comm)

    @property
    def positions(self) -> np.ndarray:
        """Positions (N, 2) in the global object's pixels."""
        return self.layout.positions_px

    def refined_positions(self) -> np.ndarray | None:
        """The refined positions (N, 2) in the global object's pixels, on every rank, or None
        without position refinement. Collective."""
        engine = self._open_engine()
        if engine.refiner is None:
            return None
        local = np.asarray(engine.data.positions, np.float64) + np.asarray(self.tile.origin)
        packed = np.concatenate([np.asarray(engine.data.indices, np.float64)[:, None], local],
                                axis=1)
        rows = self.exchange.allgather(packed.reshape(-1)).reshape(-1, 3)
        out = np.array(self.layout.positions_px, np.float64)
        out[rows[:, 0].astype(np.int64)] = rows[:, 1:]
        return out

    def result_data(self) -> Any:
        """The result (object, probe, positions, errors, provenance) on rank 0. Collective."""
        from ..io.results import ResultData  # noqa: PLC0415

        obj = self.object
        refined = self.refined_positions()
        prov = provenance(self)
        if self.rank != 0:
            return None
        refiner = self.engine.refiner  # the affine fit: the same on every rank
        return ResultData(object=obj, probe=self.probe, positions=self.positions,
                          refined_positions=refined,
                          position_transform=None if refiner is None else refiner.transform,
                          error=np.asarray(self.metrics["error"], np.float64),
                          pixel_size=self.layout.pixel_size_m,
                          config_yaml=self.config.to_yaml(), provenance=prov)

    def save(self, path: str) -> Any:
        """Write the result file (rank 0, atomically). Collective; returns the ResultData.

        A failed write (a full disk) raises the same one-line error on every rank.
        """
        from ..io.results import write_result  # noqa: PLC0415

        data = self.result_data()
        collective(self.comm, lambda: data is not None and write_result(path, data))
        return data

    def resume_from(self, obj: np.ndarray, probe: np.ndarray, iteration: int,
                    history: list[dict] | None = None,
                    positions: np.ndarray | None = None) -> None:
        """Continue from a global object and probe (e.g. a checkpoint on another rank count)
        and, with position refinement, the refined global ``positions``."""
        engine = self._open_engine()
        self.history = list(history or [])
        local = None
        if positions is not None:
            local = (np.asarray(positions, np.float64)[self.tile.indices]
                     - np.asarray(self.tile.origin, np.float64))
        engine.start_from(obj[self.tile.box.slices()], probe, iteration,
                          [h["error"] for h in self.history], local)

    def close(self) -> None:
        """Release the scan file, device memory and the backend (its threads, FFT plans and
        compiled kernels)."""
        source = getattr(self, "source", None)
        if source is not None:
            source.close()
        if getattr(self, "engine", None) is not None:
            self._final_metrics = self.metrics
            self.engine.close()
        self.engine = None  # type: ignore[assignment]
        self._close_backend()

    def _close_backend(self) -> None:
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.close()

    def __enter__(self) -> Reconstruction:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
