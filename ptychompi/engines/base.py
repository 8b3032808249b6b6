"""The engine contract (DESIGN.md section 5) and what all engines share.

An engine is built from the algorithm config, one rank's tile of data and an exchange; each
:meth:`Engine.step` runs one iteration and returns its metrics. Every cross-tile sum goes
through the exchange (``halo_sum`` for object-shaped arrays, ``allreduce`` for the probe and
scalars), so the same engine runs on one rank or on many.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import fused_kernels
from ..backend import Backend
from ..config import AlgorithmConfig
from ..physics import (
    Propagator,
    Windows,
    apply_amplitude_limits,
    orthogonalize_modes,
    reduce_accumulators,
    runs_of,
    scatter_add,
    shifted_probes,
    subpixel_grid,
    subpixel_ramps,
    window_index,
)
from .positions import make_refiner

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

    @property
    def frame(self) -> int:
        return int(self.amplitudes.shape[-1])


@dataclass
class Schedule:
    """When to exchange: object every ``share_frequency``, probe every
    ``probe_share_frequency`` iterations."""

    share_frequency: int = 1
    probe_share_frequency: int = 1

    def share_object(self, iteration: int) -> bool:
        return (iteration + 1) % self.share_frequency == 0

    def share_probe(self, iteration: int) -> bool:
        return (iteration + 1) % self.probe_share_frequency == 0


class Engine:
    """Shared state and helpers; subclasses implement :meth:`_iterate`."""

    name = "engine"

    def __init__(self, cfg: AlgorithmConfig, data: TileData, exchange: Any, backend: Backend,
                 probe: np.ndarray, obj: np.ndarray, schedule: Schedule | None = None) -> None:
        self.cfg = cfg
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
                                    data.box_shape, frame)
        self.probe = backend.asarray(probe, backend.complex_dtype)
        self.object = backend.asarray(obj, backend.complex_dtype)
        self.seconds_compute = 0.0
        self.chunk_size = GPU_CHUNK if backend.is_gpu else CPU_CHUNK
        # CPU, FFTW, single precision: an engine may run a chunk of positions in one compiled
        # call (ptychompi.fused_kernels; the same result as the chunked path)
        self.fused = (not backend.is_gpu and backend.fft == "fftw"
                      and backend.complex_dtype == np.complex64
                      and fused_kernels.available((frame, frame)))
        self._pool: ThreadPoolExecutor | None = None
        self._accumulators: dict[tuple, np.ndarray] = {}
        self._dirty: set[int] = set()

    def _place(self, positions: np.ndarray) -> None:
        """Window corners, sub-pixel shift table, ramps and window index of ``positions``."""
        cfg, backend, frame = self.cfg, self.backend, self.data.frame
        top, table, ramp_id = subpixel_grid(positions, cfg.subpixel_bins if cfg.subpixel else 0)
        self.rows, self.cols = top[:, 0], top[:, 1]
        self.ramp_id = ramp_id  # each position's row of the shift table
        self._ramp_id_device = backend.xp.asarray(ramp_id)  # the same on the device (one copy)
        self.fractions = table[ramp_id]
        # flat window indices (B, M, M), 8 bytes a pixel a position: only the GPU kernels
        # take them (the CPU ones take the corners), so a CPU engine does not build them
        self.index = (backend.xp.asarray(window_index(self.rows, self.cols, frame,
                                                      self.data.box_shape[1]))
                      if backend.is_gpu else None)
        use_ramps = cfg.subpixel and len(top) and np.abs(self.fractions).max() > 1e-3
        self.use_subpixel = bool(use_ramps)
        # the ramps (2 x G x M) of the shifts, computed once per placement
        self._ramps = subpixel_ramps(backend, table, frame) if self.use_subpixel else None

    def move_positions(self, positions: np.ndarray) -> None:
        """Place this tile's positions anew (tile-local pixels; every window inside the tile)
        and drop what was cached for the old ones (:meth:`_positions_moved`)."""
        self.data.positions = np.array(positions, np.float64).reshape(-1, 2)
        self._place(self.data.positions)
        self._positions_moved()

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
    def updates_probe(self) -> bool:
        return self.iteration >= self.cfg.probe_update_start

    # ------------------------------------------------------------------ helpers
    def _device_sel(self, sel: Any) -> Any:
        """A position selection (slice or host index array) usable on the device."""
        return sel if isinstance(sel, slice) else self.backend.xp.asarray(sel)

    def ramps(self, sel: Any = slice(None)) -> tuple[Any, Any] | None:
        """Sub-pixel Fourier ramps (B, M) per axis of positions ``sel``, or None."""
        if self._ramps is None:
            return None
        ids = self.shift_rows(sel)
        return self._ramps[0][ids], self._ramps[1][ids]

    def shift_rows(self, sel: Any) -> Any:
        """Each position's row of the shift table (its ramps, its shifted probe), on the
        device."""
        return self._ramp_id_device[self._device_sel(sel)]

    def runs(self, sel: Any) -> np.ndarray | None:
        """Start offsets (within ``sel``) of the runs of positions that share one sub-pixel
        shift (None without shifts, or with exact positions, which never share one). Runs
        of one position count too: a run's terms are back-shifted in double precision
        whatever its length, so the result does not depend on how the positions are split
        over tiles."""
        if self._ramps is None or self.cfg.subpixel_bins <= 0:
            return None
        return runs_of(self.ramp_id[sel])

    def windows(self, sel: Any) -> Windows:
        """The object windows of positions ``sel`` (flat indices only on a GPU)."""
        index = self.index[self._device_sel(sel)] if self.backend.is_gpu else None
        return Windows(self.rows[sel], self.cols[sel], index)

    def probes_at(self, sel: Any, probe_ft: Any | None = None) -> Any:
        """Probes (B, K, M, M) at positions ``sel`` (sub-pixel shifted) or (1, K, M, M).

        Positions that share a shift share one inverse FFT (see :meth:`probe_set`).
        """
        distinct, member = self.probe_set(sel, probe_ft)
        return distinct if member is None else distinct[member]

    def probe_set(self, sel: Any, probe_ft: Any | None = None) -> tuple[Any, Any | None]:
        """The distinct shifted probes (G, K, M, M) of positions ``sel`` and each position's
        row in them (None: one row per position, or the unshifted probe (1, K, M, M))."""
        if self._ramps is None:
            return self.probe[None], None
        if probe_ft is None:
            probe_ft = self.backend.fft2(self.probe)
        ids, member = np.unique(self.ramp_id[sel], return_inverse=True)
        if len(ids) == len(member):
            return shifted_probes(self.backend, probe_ft, self.ramps(sel), self.probe), None
        dids = self.backend.xp.asarray(ids)
        ramps = self._ramps[0][dids], self._ramps[1][dids]
        return (shifted_probes(self.backend, probe_ft, ramps, self.probe),
                self.backend.xp.asarray(member.reshape(-1)))

    def illumination(self) -> Any:
        """Σ_j S_jᵀ Σ_k |P_k|² over this tile's positions (the assembly weight)."""
        xp = self.backend.xp
        weight = xp.zeros(self.data.box_shape, dtype=self.backend.real_dtype)
        power = (xp.abs(self.probe) ** 2).sum(axis=0).astype(self.backend.real_dtype)
        n = len(self.rows)
        values = xp.broadcast_to(power, (n, *power.shape))
        scatter_add(self.backend, weight, values, self.rows, self.cols)
        return weight

    def merge_object(self) -> None:
        """Illumination-weighted average of the tiles over their halos (halo sum of w·O, w)."""
        if self.exchange.size == 1:
            return
        xp = self.backend.xp
        w = self.illumination()
        num = self.object * w
        den = w.copy()
        self.exchange.halo_sum(num, den)
        lit = den > 0
        self.object = xp.where(lit, num / xp.where(lit, den, 1), self.object).astype(
            self.object.dtype)

    def average_probe(self) -> None:
        """Mean of the ranks' probes (for engines whose probe drifts between shares)."""
        if self.exchange.size == 1:
            return
        self.probe = self.exchange.allreduce(self.probe) / self.exchange.size

    def chunks(self, n: int, size: int | None = None) -> list[slice]:
        """Consecutive slices of ``size`` positions (default :attr:`chunk_size`)."""
        size = size or self.chunk_size
        return [slice(i, min(i + size, n)) for i in range(0, n, size)]

    def map_chunks(self, fn: Callable[[int, slice], Any], n: int,
                   size: int | None = None) -> list[Any]:
        """``fn(thread, chunk)`` for every chunk of ``n`` positions; results in chunk order.

        On a CPU backend with several cores the chunks are spread over that many threads
        (numpy and pocketfft release the GIL), thread t taking chunks t, t+T, ...; each FFT
        inside uses one core. The static assignment keeps every sum deterministic: ``fn``
        accumulates into per-thread buffers indexed by ``thread``, summed in thread order.
        The calling thread does thread 0's share itself (one hand-off fewer per call: the
        engines make hundreds of these calls per iteration).
        """
        chunks = self.chunks(n, size)
        threads = min(self.backend.threads, len(chunks))
        if threads <= 1:
            return [fn(0, sl) for sl in chunks]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.backend.threads - 1,
                                            thread_name_prefix="ptychompi")

        def work(t: int) -> list[tuple[int, Any]]:
            with self.backend.single_threaded():
                return [(i, fn(t, sl)) for i, sl in enumerate(chunks) if i % threads == t]

        others = [self._pool.submit(work, t) for t in range(1, threads)]
        try:
            parts = [work(0)]
        except BaseException:
            wait(others)  # no worker may still write into shared buffers
            raise
        parts += [f.result() for f in others]
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
            totals = [reduce_accumulators(self.backend, acc, dtype) for acc, dtype in pairs]
        else:
            totals = [np.empty(acc.shape[1:], dtype=dtype) for acc, dtype in pairs]

            def band_sums(band: slice) -> None:
                local = None
                if spans is not None:  # the spans in the band's rows
                    local = np.clip(np.asarray(spans) - band.start, 0, band.stop - band.start)
                for (acc, dtype), total in zip(pairs, totals, strict=True):
                    reduce_accumulators(self.backend, acc[:, band], dtype, total[band], local)

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
        """Stop the worker threads."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

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

    def _reset(self) -> None:  # noqa: B027 - engines with extra state override
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

    def _restore_extra(self, state: dict[str, np.ndarray]) -> None:  # noqa: B027
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
