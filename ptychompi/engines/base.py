"""The engine contract (DESIGN.md section 5) and what all engines share.

An engine is built from the algorithm config, one rank's tile of data and an exchange; each
:meth:`Engine.step` runs one iteration and returns its metrics. Every cross-tile sum goes
through the exchange (``halo_sum`` for object-shaped arrays, ``allreduce`` for the probe and
scalars), so the same engine runs on one rank or on many.

This module holds the contract and the state (:class:`Engine`, :class:`TileData`,
:class:`Schedule`); the helpers are split by concern into :mod:`.shift_tables`,
:mod:`.merging` and :mod:`.chunking`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends import Backend
from ..config import AlgorithmConfig
from ..model.physics import Propagator, apply_amplitude_limits, orthogonalize_modes
from .chunking import ChunkRunner
from .merging import TileMerging
from .noise import poisson_floor
from .positions import make_refiner, placement_config
from .shift_tables import ShiftTables

GPU_CHUNK = 128  # positions per chunk on a GPU (enough work per launch)
CPU_CHUNK = 16  # on a CPU: a chunk's waves (2 MiB at 128²) stay in cache between passes


@dataclass
class TileData:
    """One rank's share of the scan, on the device."""

    amplitudes: Any  # (n, M, M) sqrt(I), invalid = -1, far field ifftshifted
    positions: np.ndarray  # (n, 2) float64 top-left corners, tile-local pixels
    indices: np.ndarray  # (n,) global frame indices
    box_shape: tuple[int, int]
    n_global: int
    power_global: float  # Σ_valid I over the whole scan
    propagator: Propagator
    origin: tuple[int, int] = (0, 0)  # the tile box's corner in the global object
    noise_level: float | None = None  # Engine.noise_level, once asked for

    @property
    def frame(self) -> int:
        return int(self.amplitudes.shape[-1])


@dataclass
class Schedule:
    """When and how to exchange: object every ``share_frequency``, probe every
    ``probe_share_frequency`` iterations; ``halo``: how LSQML's per-batch halo sums travel
    (``full``, ``touched`` or ``compact``, see ``parallel.halo``)."""

    share_frequency: int = 1
    probe_share_frequency: int = 1
    halo: str = "full"

    @classmethod
    def from_config(cls, parallel: Any, comm: Any | None) -> Schedule:
        """From the ``parallel`` section; ``halo: auto`` resolved (collective: compact where
        the ranks span several nodes, full on one node, where a byte sent is a copy in
        memory and the compact coding's CPU time is not repaid)."""
        from ..parallel.node import spans_nodes  # noqa: PLC0415

        halo = parallel.halo
        if halo == "auto":
            halo = "compact" if spans_nodes(comm) else "full"
        return cls(parallel.share_frequency, parallel.probe_share_frequency, halo)

    def share_object(self, iteration: int) -> bool:
        return (iteration + 1) % self.share_frequency == 0

    def share_probe(self, iteration: int) -> bool:
        return (iteration + 1) % self.probe_share_frequency == 0


class Engine(ShiftTables, TileMerging, ChunkRunner):
    """The contract and the state; subclasses implement :meth:`_iterate`. The helpers live
    by concern in mixins: window placement and sub-pixel shift tables
    (:mod:`.shift_tables`), tile merging (:mod:`.merging`), chunks over the worker threads and
    their reductions (:mod:`.chunking`)."""

    name = "engine"
    #: the position refinement that asks for this engine's residuals this iteration (LSQML
    #: hands them over: :meth:`ptychompi.engines.positions.PositionRefiner.collect`)
    position_collector: Any = None

    def __init__(self, cfg: AlgorithmConfig, data: TileData, exchange: Any, backend: Backend,
                 probe: np.ndarray, obj: np.ndarray, schedule: Schedule | None = None) -> None:
        self.cfg = cfg = placement_config(cfg, self.name)
        self.exchange = exchange
        self.backend = backend
        self.schedule = schedule or Schedule()
        self.iteration = 0
        self.errors: list[float] = []  # the global error of every iteration so far
        self.rng = np.random.default_rng(cfg.seed)
        frame = data.frame
        self.data = data
        self._place(data.positions)
        self.refiner = make_refiner(cfg.position_correction, data.positions, data.origin,
                                    data.box_shape, frame, self.name)
        self.probe = backend.asarray(probe, backend.complex_dtype)
        self.object = backend.asarray(obj, backend.complex_dtype)
        self.seconds_compute = 0.0
        self.chunk_size = GPU_CHUNK if backend.is_gpu else CPU_CHUNK
        self._accumulators: dict[tuple, np.ndarray] = {}
        self._dirty: set[int] = set()

    def noise_level(self) -> float:
        """The data's Poisson noise level: :func:`~.noise.poisson_floor` of the whole scan
        relative to ``Σ I`` (the units of the error). One collective the first time; kept with
        the tile's data, so an engine built on the same data (DM's refinement) reuses it."""
        if self.data.noise_level is None:
            local = poisson_floor(self.backend, self.data.amplitudes)
            total = self.exchange.allreduce(local)
            self.data.noise_level = total / max(self.data.power_global, 1e-30)
        return self.data.noise_level

    def move_positions(self, positions: np.ndarray) -> None:
        """Place this tile's positions anew (tile-local pixels; every window inside the tile)
        and drop what was cached for the old ones (:meth:`_positions_moved`)."""
        self.data.positions = np.array(positions, np.float64).reshape(-1, 2)
        self._place(self.data.positions)
        self._positions_moved()

    def refined_by(self) -> Engine:
        """The engine whose placement, object and probe the position refinement evaluates."""
        return self

    def _positions_moved(self) -> None:
        """Drop state cached for the old positions; engines with more extend this. DM's
        table of shifted probes and its shift-sorted order are handled here by name, so
        that dm.py needs no change."""
        if hasattr(self, "_table"):
            self._table = None
        if hasattr(self, "_by_shift"):
            shared = self.use_subpixel and self.cfg.subpixel_bins > 0
            self._by_shift = np.argsort(self.ramp_id, kind="stable") if shared else None

    # ------------------------------------------------------------------ contract
    def step(self) -> dict:
        """Run one iteration; return its metrics (global Fourier error, seconds)."""
        t0 = time.perf_counter()
        comm0 = self.exchange.stats.seconds
        if self.refiner is not None:
            self.refiner.arm(self)
        err_num = self._iterate()
        if self.probe.shape[0] > 1:
            self.probe = orthogonalize_modes(self.backend, self.probe)
        apply_amplitude_limits(self.backend, self.object, self.cfg.object_amplitude_min,
                               self.cfg.object_amplitude_max)
        if self.refiner is not None and self.refiner.due(self.iteration):
            self.refiner.update(self)
        err = self.exchange.allreduce(float(err_num)) / max(self.data.power_global, 1e-30)
        self.backend.synchronize()
        self.iteration += 1
        self.errors.append(err)
        seconds = time.perf_counter() - t0
        self.seconds_compute += seconds - (self.exchange.stats.seconds - comm0)
        return {"iteration": self.iteration, "error": err, "seconds": seconds}

    def _iterate(self) -> float:
        raise NotImplementedError

    @property
    def fused(self) -> bool:
        """Whether this engine's per-position pipelines run as one compiled call per chunk
        (recorded in the provenance; the backend's operations decide)."""
        ops = self.backend.ops
        return bool(ops.compiled and ops.fuses((self.data.frame, self.data.frame)))

    @property
    def updates_probe(self) -> bool:
        return self.iteration >= self.cfg.probe_update_start

    def start_from(self, obj: np.ndarray, probe: np.ndarray, iteration: int,
                   errors: list[float] | None = None,
                   positions: np.ndarray | None = None) -> None:
        """Continue from an object tile and probe at ``iteration`` with the global errors of
        the iterations so far (engine-specific state is rebuilt from them, as at the
        start) and, with position refinement, this tile's refined ``positions``."""
        xp = self.backend.xp
        if positions is not None and self.refiner is not None:
            self.move_positions(positions)
        self.errors = [float(e) for e in (errors or [])]
        self.object = xp.asarray(obj, dtype=self.backend.complex_dtype)
        self.probe = xp.asarray(probe, dtype=self.backend.complex_dtype)
        self.iteration = int(iteration)
        self.rng = np.random.default_rng([self.cfg.seed, self.iteration])
        self._reset()

    def _reset(self) -> None:  # engines with extra state override
        """Rebuild engine-specific state from the current object and probe."""

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to continue bit for bit, as host arrays."""
        rng = json.dumps(self.rng.bit_generator.state).encode()
        out = {"object": np.array(self.backend.asnumpy(self.object)),
               "probe": np.array(self.backend.asnumpy(self.probe)),
               "iteration": np.array(self.iteration),
               "errors": np.asarray(self.errors, dtype=np.float64),
               "rng": np.frombuffer(rng, dtype=np.uint8).copy()}
        out.update({k: np.array(self.backend.asnumpy(v)) for k, v in self._extra_state().items()})
        if self.refiner is not None:
            out.update(self.refiner.state(self))
        return out

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Continue from :meth:`state`'s output."""
        xp = self.backend.xp
        self.object = xp.asarray(state["object"], dtype=self.backend.complex_dtype)
        self.probe = xp.asarray(state["probe"], dtype=self.backend.complex_dtype)
        self.iteration = int(state["iteration"])
        self.errors = [float(e) for e in np.asarray(state.get("errors", []))]
        self.rng.bit_generator.state = json.loads(bytes(np.asarray(state["rng"])).decode())
        self._restore_extra(state)
        if self.refiner is not None:
            self.refiner.restore(self, state)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _restore_extra(self, state: dict[str, np.ndarray]) -> None:
        pass

    # ------------------------------------------------------------------ state hooks
    def state_nbytes(self) -> int:
        """Bytes of this tile's checkpoint state as it stands (object, probe and the
        engine's own state, e.g. DM's exit waves), without the small scalars."""
        own = sum(int(v.nbytes) for v in self._extra_state().values() if v is not None)
        return int(self.object.nbytes) + int(self.probe.nbytes) + own

    def position_state(self) -> dict[str, Any]:
        """The engine's own state arrays with one row per position of this tile (first
        axis), which a run on another rank count takes over position by position
        (:meth:`adopt_positions`); none by default."""
        return {}

    def adopt_positions(self, rows: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
        """Rows ``rows`` (this tile's positions) of :meth:`position_state`'s arrays, taken
        from another run's checkpoint."""
        held, xp = self.position_state(), self.backend.xp
        for key, values in arrays.items():
            held[key][xp.asarray(rows)] = self.backend.asarray(values)

    def rebuild_state(self) -> None:
        """The engine's own state made again from the object and probe (an adoption by
        :meth:`adopt_positions` that found only some positions is undone this way)."""
        self._reset()
