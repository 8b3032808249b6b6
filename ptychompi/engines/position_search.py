"""A wide-reach search for positions stuck far from their truth (issue 18).

The least-squares gradient of :mod:`.positions` reaches about a pixel: a position whose error
is several pixels sees an object that does not match its data anywhere near, its gradient is
noise, and it stays where it is or runs off. Such a position stands out by its data misfit.
Every ``search_every`` iterations of an active refinement (:func:`search_due`, a function of
the iteration number alone: nothing to keep in a checkpoint), after the position update:

1. each of this rank's positions' amplitude misfit ``Σ_valid (|F(P_j·O_j)| − A_j)²`` at its
   current position (one forward propagation per position, the engine's own sub-pixel probes
   and windows: :func:`position_misfits`; with LSQML, ``Σ|χ|²`` of the residuals it handed
   over in that iteration, the same misfit up to the transform's scale: no pass);
2. the candidates: positions whose misfit exceeds ``FACTOR`` times the median misfit of the
   whole scan (the misfits of all ranks gathered: n numbers; every rank, and one rank,
   decides alike);
3. for each candidate, the misfit with its window moved by every whole-pixel offset within
   ``search_radius`` (same sub-pixel probe; the window's corner within the tile and the
   position within ``max_total`` per axis of its input plus the positions' common offset, as
   the refiner holds them); it moves to the best offset when that misfit is below ``GAIN``
   times its current one, and its momentum and step gain start afresh.

The moved positions are placed in one :meth:`Engine.move_positions` on every rank when any
rank has a candidate (a decision from the gathered misfits). The gradient then refines them
to a fraction of a pixel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..model.physics import Windows, model_amplitude, window_index
from .positions import DEFAULT_EVERY, DRIFT_PX

if TYPE_CHECKING:
    from .base import Engine
    from .positions import PositionRefiner

FACTOR = 2.0  # candidates: misfit above this multiple of the scan's median misfit
GAIN = 0.8  # a candidate moves when its best offset's misfit is below this fraction of its own


def search_due(cfg: Any, iteration: int) -> bool:
    """Whether the search runs after the position update of ``iteration`` (0-based): once
    in every ``search_every`` iterations from ``start``, at the update that falls first in
    that span (updates come every ``update_every`` iterations, by default every iteration
    or every ``DEFAULT_EVERY``-th: the one of the regular ones in the span)."""
    every = cfg.search_every
    if every is None or iteration < cfg.start:
        return False
    step = DEFAULT_EVERY if cfg.update_every is None else cfg.update_every
    k = iteration - cfg.start
    return k % step == 0 and k % every < step


def frame_misfits(backend: Any, wave: Any, amplitude: Any) -> np.ndarray:
    """``Σ_valid (|Ψ_j| − A_j)²`` per position (host float64) of detector-plane waves
    (B, K, M, M) against amplitudes (B, M, M) or one frame's (M, M); masked pixels are < 0."""
    model = model_amplitude(backend, wave)
    diff = model - amplitude
    diff *= amplitude >= 0
    diff *= diff
    return np.asarray(backend.asnumpy(diff.sum(axis=(1, 2), dtype=np.float64)), np.float64)


def position_misfits(engine: Engine, probe_ft: Any = None) -> np.ndarray:
    """Each of this rank's positions' misfit at its current position (host float64, (n,)):
    one pass in chunks."""
    be, data, obj = engine.backend, engine.data, engine.object
    n = len(engine.rows)

    def part(_: int, sl: slice) -> np.ndarray:
        probes, probe_of = engine.probe_set(sl, probe_ft)
        psi = be.ops.exit_waves(probes, obj, engine.windows(sl), probe_of)
        return frame_misfits(be, data.propagator.forward(psi), data.amplitudes[sl])

    parts = engine.map_chunks(part, n) if n else []
    return np.concatenate(parts) if parts else np.zeros(0)


def offsets(radius: int) -> np.ndarray:
    """Whole-pixel offsets (m, 2) within ``radius`` per axis, nearest first ((0, 0) first;
    a tie in misfit goes to the shorter move)."""
    r = np.arange(-radius, radius + 1)
    grid = np.stack(np.meshgrid(r, r, indexing="ij"), axis=-1).reshape(-1, 2)
    order = np.lexsort((grid[:, 1], grid[:, 0], (grid * grid).sum(axis=1)))
    return grid[order]


def offset_misfits(engine: Engine, j: int, moves: np.ndarray, probe_ft: Any = None) -> np.ndarray:
    """Position ``j``'s misfit with its window moved by each of ``moves`` (m, 2) whole pixels
    (its own sub-pixel probe), in chunks of the engine's chunk size: (m,) host float64."""
    be, data, obj = engine.backend, engine.data, engine.object
    frame, width = data.frame, data.box_shape[1]
    probes, probe_of = engine.probe_set(np.array([j]), probe_ft)
    probe = probes if probe_of is None else probes[probe_of]  # (1, K, M, M)
    amplitude = data.amplitudes[j]
    out = []
    for start in range(0, len(moves), engine.chunk_size):
        d = moves[start:start + engine.chunk_size]
        rows, cols = engine.rows[j] + d[:, 0], engine.cols[j] + d[:, 1]
        index = None if engine.index is None else be.xp.asarray(
            window_index(rows, cols, frame, width))
        psi = be.ops.exit_waves(probe, obj, Windows(rows, cols, index, frame))
        out.append(frame_misfits(be, data.propagator.forward(psi), amplitude))
    return np.concatenate(out)


def search(refiner: PositionRefiner, engine: Engine) -> np.ndarray | None:
    """This rank's positions after the search, or None when no position of the scan is a
    candidate (the same answer on every rank). Collective: every rank calls it."""
    cfg, ex = refiner.cfg, engine.exchange
    model = engine.refined_by()
    current = np.asarray(engine.data.positions, np.float64).reshape(-1, 2)
    probe_ft = model.backend.fft2(model.probe) if model.use_subpixel else None
    mine = refiner.residual_misfits(engine.iteration)
    if ex.allreduce(np.array([float(mine is None)]))[0] > 0:  # a pass where any rank lacks them
        mine = position_misfits(model, probe_ft)
    every = ex.allgather(mine)
    median = float(np.median(every)) if len(every) else 0.0
    candidates = np.flatnonzero(mine > FACTOR * median)
    any_candidate = bool(np.any(every > FACTOR * median))
    if not any_candidate:
        return None
    dev = current - refiner.initial
    total = ex.allreduce(np.array([*dev.sum(axis=0), float(len(dev))]))
    common = np.clip(total[:2] / max(total[2], 1.0), -DRIFT_PX, DRIFT_PX)
    moves = offsets(int(cfg.search_radius))
    moved = current.copy()
    for j in candidates:
        target = current[j] + moves
        own = target - refiner.initial[j] - common
        fits = (np.all(np.abs(own) <= cfg.max_total, axis=1)
                & np.all((target >= 0.0) & (target <= refiner.high), axis=1))
        fits[0] = True  # where it is (compared against, never moved to)
        tried = moves[fits]
        misfit = offset_misfits(model, int(j), tried, probe_ft)
        best = int(np.argmin(misfit))
        if best > 0 and misfit[best] < GAIN * misfit[0]:
            moved[j] = current[j] + tried[best]
            refiner.velocity[j] = 0.0
            refiner.gain[j] = 1.0
    return moved


def maybe_search(refiner: PositionRefiner, engine: Engine) -> None:
    """The search when it is due (:func:`search_due`), its result placed on every rank
    (collective: every rank calls it after each position update)."""
    if not search_due(refiner.cfg, engine.iteration):
        return
    moved = search(refiner, engine)
    if moved is not None:
        engine.move_positions(moved)
