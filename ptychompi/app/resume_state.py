"""A resume on another rank count: each new rank's engine state made from the old ranks' files.

On the same rank count every rank restores its own state file (bit for bit). On another count
:func:`carried_state` builds, on each new rank, the state its engine would hold, from the old
ranks' state files of the checkpoint's iteration, for :meth:`Engine.restore`:

* arrays over the tile's box (:data:`TILE_KEYS`: the object, ePIE's momentum, DM's best
  object) are cut from the old tiles' boxes that meet the new box (each old file is read only
  there; where old boxes overlap, the later rank's pixels, those of the old rank that held
  exactly this rank's frames last); pixels no old tile held take the checkpoint's global
  object (a velocity: zero);
* arrays with one row per position (:data:`POSITION_KEYS`: DM's exit waves, the momentum and
  step factors of the position moves; :data:`LOCAL_KEYS`: refined positions in tile pixels,
  moved to the new tile's) are gathered by global frame index;
* everything else (:data:`GLOBAL_KEYS`: probe, errors, the affine fit, the probe's reference
  centroid, DM's stage) is the same on every rank: from the old rank that held exactly this
  rank's frames, else from old rank 0;
* the random generator: from the old rank that held exactly this rank's frames, else old rank
  0's when every old rank's is the same (LSQML draws its batches over the whole scan, alike on
  every rank), else seeded afresh by the iteration (ePIE draws per tile).

A missing or damaged file, a box not recorded (a checkpoint of an older version) or a key
this module does not know gives None: the caller then rebuilds the engine's state from the
global object and probe.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

TILE_KEYS = frozenset({"object", "momentum_last", "momentum_velocity", "best_object"})
POSITION_KEYS = frozenset({"waves", "position_velocity", "position_gain",
                           "position_last_move"})
# (n, 2) tile-local pixels
LOCAL_KEYS = frozenset({"positions", "best_positions", "position_best", "position_ran_with"})
GLOBAL_KEYS = frozenset({"probe", "iteration", "errors", "refined", "best_probe",
                         "position_transform", "probe_reference",
                         "position_linear_velocity", "position_guard"})
BOOK_KEYS = frozenset({"indices", "box", "rng", "history_error", "history_seconds"})
ZERO_FILL = frozenset({"momentum_velocity"})  # pixels no old tile held: zero, not the object


def tile_box(engine: Any) -> np.ndarray:
    """``[r0, c0, r1, c1]`` of the engine's tile box in the global object (for the state)."""
    r0, c0 = (int(v) for v in engine.data.origin)
    h, w = (int(v) for v in engine.data.box_shape)
    return np.array([r0, c0, r0 + h, c0 + w], np.int64)


def carried_state(paths: list[Path] | None, iteration: int, engine: Any,
                  global_object: np.ndarray) -> dict[str, np.ndarray] | None:
    """This rank's engine state from the old ranks' state files ``paths`` (rank order, all
    of ``iteration``), or None when they cannot give all of it (module docstring)."""
    if not paths:
        return None
    try:
        with _Files(paths) as old:
            return _assemble(old, iteration, engine, global_object)
    except Exception:  # noqa: BLE001 - damaged or unexpected: the state is rebuilt instead
        return None


def frame_rows(paths: list[Path], iteration: int, indices: Any,
               held: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The per-position arrays ``held`` names (with their shapes per position) for the frames
    ``indices``, gathered by frame from the old ranks' state files ``paths`` of
    ``iteration``; None when a file is damaged, of another iteration or shape, or lacks a
    frame."""
    try:
        with _Files(paths) as old:
            if any(int(f["iteration"][()]) != iteration or any(k not in f for k in held)
                   or any(f[k].shape[1:] != tuple(v.shape[1:]) for k, v in held.items())
                   for f in old):
                return None
            olds = [np.asarray(f["indices"][()], np.int64) for f in old]
            return _rows(old, olds, np.asarray(indices, np.int64), np.zeros(4, np.int64),
                         set(held))
    except Exception:  # noqa: BLE001 - damaged or unexpected: the state is rebuilt instead
        return None


class _Files:
    """The old ranks' state files, open for reading (closed together)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.files: list[h5py.File] = []

    def __enter__(self) -> list[h5py.File]:
        try:
            for path in self.paths:
                self.files.append(h5py.File(path, "r"))
        except BaseException:  # one damaged: those already open are closed too
            self.__exit__()
            raise
        return self.files

    def __exit__(self, *exc: object) -> None:
        for f in self.files:
            f.close()


def _assemble(old: list[h5py.File], iteration: int, engine: Any,
              global_object: np.ndarray) -> dict[str, np.ndarray] | None:
    keys = set(old[0])
    known = TILE_KEYS | POSITION_KEYS | LOCAL_KEYS | GLOBAL_KEYS | BOOK_KEYS
    if any(set(f) != keys for f in old) or not keys <= known or "box" not in keys:
        return None
    if any(int(f["iteration"][()]) != iteration for f in old):
        return None
    indices = np.asarray(engine.data.indices, np.int64)
    box = tile_box(engine)
    olds = [np.asarray(f["indices"][()], np.int64) for f in old]
    same = [i for i, o in enumerate(olds) if np.array_equal(np.sort(o), np.sort(indices))]
    template = old[same[0]] if same else old[0]
    state: dict[str, np.ndarray] = {k: template[k][()] for k in keys & GLOBAL_KEYS}
    state["rng"] = _generator(old, template if same else None, engine, iteration)
    rows = _rows(old, olds, indices, box, keys & (POSITION_KEYS | LOCAL_KEYS))
    if rows is None:
        return None
    state.update(rows)
    # the old tile of this rank's own frames last: where old boxes overlap (halos whose
    # sums differ in rounding between ranks), its pixels win
    order = [f for i, f in enumerate(old) if i not in same[:1]] + [old[i] for i in same[:1]]
    for key in keys & TILE_KEYS:
        state[key] = _tile(order, key, box, global_object)
    return state


def _generator(old: list[h5py.File], own: h5py.File | None, engine: Any,
               iteration: int) -> np.ndarray:
    """The random generator's state (the bytes :meth:`Engine.state` writes)."""
    if own is not None:
        return np.asarray(own["rng"][()])
    states = [bytes(np.asarray(f["rng"][()])) for f in old]
    if all(s == states[0] for s in states):
        return np.asarray(old[0]["rng"][()])
    fresh = np.random.default_rng([engine.cfg.seed, int(iteration)]).bit_generator.state
    return np.frombuffer(json.dumps(fresh).encode(), dtype=np.uint8).copy()


def _rows(old: list[h5py.File], olds: list[np.ndarray], indices: np.ndarray, box: np.ndarray,
          keys: set[str]) -> dict[str, np.ndarray] | None:
    """The per-position arrays of this rank's frames, by global frame index; None unless
    every frame is found."""
    wanted = {int(g): i for i, g in enumerate(indices)}
    out: dict[str, np.ndarray] = {}
    found = np.zeros(len(indices), bool)
    for f, old_indices in zip(old, olds, strict=True):
        take = [(j, wanted[int(g)]) for j, g in enumerate(old_indices) if int(g) in wanted]
        if not take:
            continue
        src, dst = (np.asarray(t, np.int64) for t in zip(*take, strict=True))
        shift = (np.asarray(f["box"][()], np.int64)[:2] - box[:2]).astype(np.float64)
        for key in keys:
            ds = f[key]
            if key not in out:
                out[key] = np.zeros((len(indices), *ds.shape[1:]), ds.dtype)
            values = ds[src] if len(src) < ds.shape[0] else ds[()]
            if key in LOCAL_KEYS and np.any(shift):
                values = values + shift
            out[key][dst] = values
        found[dst] = True
    return out if found.all() else None


def _tile(old: list[h5py.File], key: str, box: np.ndarray,
          global_object: np.ndarray) -> np.ndarray:
    """``key`` over this rank's box from the old tiles' boxes that meet it."""
    r0, c0, r1, c1 = (int(v) for v in box)
    first = old[0][key]
    shape = (*first.shape[:-2], r1 - r0, c1 - c0)
    if key in ZERO_FILL:
        out = np.zeros(shape, first.dtype)
    else:
        out = np.empty(shape, first.dtype)
        out[...] = global_object[r0:r1, c0:c1]
    for f in old:
        o0, p0, o1, p1 = (int(v) for v in f["box"][()])
        a0, b0, a1, b1 = max(r0, o0), max(c0, p0), min(r1, o1), min(c1, p1)
        if a0 < a1 and b0 < b1:
            out[..., a0 - r0:a1 - r0, b0 - c0:b1 - c0] = \
                f[key][..., a0 - o0:a1 - o0, b0 - p0:b1 - p0]
    return out
