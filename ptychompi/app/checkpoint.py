"""Checkpoints: the global result file plus each rank's exact engine state.

``<out>/checkpoint.h5`` is a result file (object, probe, errors, config) written by rank 0;
``<out>/checkpoint/rank<r>of<n>.h5`` holds rank r's engine state. Every file is written to a
temporary name and renamed, so a crash leaves the previous checkpoint intact. The ranks write
their states first and ``checkpoint.h5`` last, so a crash in between leaves states newer than
``checkpoint.h5``: each rank therefore keeps its previous state as ``rank<r>of<n>.prev.h5``
until the next one, and resuming takes whichever of the two matches ``checkpoint.h5``.
Resuming on the same rank count restores every rank's state (bit for bit); on another count
each rank's state is made from the old ranks' states (:mod:`.resume_state`: the tiles' arrays
cut from the old tiles', per-position arrays by frame, the rest from any rank), or, where
they cannot give it all, rebuilt from the global object and probe at the checkpoint's
iteration.

Writing and reading are collective-safe: a full disk or an unreadable (truncated) state file on
any rank is agreed on, so every rank ends with the same one-line error instead of some ranks
waiting for the one that failed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

from ..errors import DataError, PtychompiError, os_reason
from ..io.atomic import atomic_h5
from .api import collective
from .resume_state import carried_state, frame_rows, tile_box

RESULT_NAME = "checkpoint.h5"
INCOMPATIBLE = (("algorithm", "name"), ("algorithm", "probe_modes"), ("preprocess", "crop_size"),
                ("preprocess", "binning"), ("geometry", "propagation"), ("data", "path"),
                ("data", "n_frames"))


def state_path(out_dir: str | Path, rank: int, size: int) -> Path:
    return Path(out_dir) / "checkpoint" / f"rank{rank}of{size}.h5"


def previous_path(path: Path) -> Path:
    """Where a rank's previous state waits until ``checkpoint.h5`` names the new one."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _write_state(path: Path, state: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():  # checkpoint.h5 still names this one until every rank has written
        os.replace(path, previous_path(path))
    with atomic_h5(path) as f:
        for key, value in state.items():
            f.create_dataset(key, data=np.asarray(value))


def _read_state(path: Path) -> dict[str, np.ndarray]:
    try:
        with h5py.File(path, "r") as f:
            state = {key: f[key][()] for key in f}
        int(state["iteration"])
    except Exception as exc:  # noqa: BLE001 - any damage reads as one line
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"checkpoint state {path} is unreadable ({reason}); it was damaged "
                        f"after it was written: delete the folder {path.parent} to resume from "
                        f"{RESULT_NAME} alone (not bit for bit), or run again without "
                        "--resume") from None
    return state


def _matching_state(path: Path, iteration: int) -> dict[str, np.ndarray] | None:
    """The state at ``iteration``: the current file or the previous one (a crash between the
    states and checkpoint.h5 leaves the current one a checkpoint ahead)."""
    for candidate in (path, previous_path(path)):
        if candidate.is_file():
            state = _read_state(candidate)
            if int(state["iteration"]) == iteration:
                return state
    return None


def _generation(path: Path, iteration: int) -> Path | None:
    """The current or previous state file of an old rank that holds ``iteration``."""
    for candidate in (path, previous_path(path)):
        try:
            with h5py.File(candidate, "r") as f:
                if int(f["iteration"][()]) == iteration:
                    return candidate
        except (OSError, KeyError, ValueError):
            continue
    return None


def _written(what: str, path: Path, write: Any, *args: Any) -> None:
    """``write(*args)``; a failing disk becomes one line saying the last checkpoint is kept."""
    try:
        write(*args)
    except OSError as exc:
        raise PtychompiError(f"cannot write the {what} {path} ({os_reason(exc)}); the "
                             "previous checkpoint is kept: free space and continue with "
                             "--resume") from None


def write_checkpoint(recon: Any, out_dir: str | Path) -> None:
    """Write the checkpoint of a running reconstruction. Collective."""
    from ..io.results import write_result  # noqa: PLC0415

    state = recon.engine.state()
    state["indices"] = np.asarray(recon.engine.data.indices)
    state["box"] = tile_box(recon.engine)  # where the tile lies: a resume on another count
    state["history_error"] = np.asarray([m["error"] for m in recon.history], np.float64)
    state["history_seconds"] = np.asarray([m["seconds"] for m in recon.history], np.float64)
    mine = state_path(out_dir, recon.rank, recon.size)
    # every rank's state is on disk (agreed) before the result names it
    collective(recon.comm, _written, "checkpoint state", mine, _write_state, mine, state)
    data = recon.result_data()
    path = Path(out_dir) / RESULT_NAME
    if data is not None:
        data.provenance["checkpoint_iteration"] = recon.iteration
    collective(recon.comm, lambda: data is not None and _written(
        "checkpoint", path, write_result, str(path), data))


def check_compatible(saved_yaml: str, cfg: Any) -> None:
    """Raise if the checkpoint was made with a setting the resumed run cannot continue."""
    saved = yaml.safe_load(saved_yaml) or {}
    now = cfg.to_dict()
    for section, key in INCOMPATIBLE:
        old, new = saved.get(section, {}).get(key), now[section][key]
        if old != new:
            raise PtychompiError(f"cannot resume: {section}.{key} was {old!r} in the checkpoint "
                                 f"and is {new!r} now; restore it or start a new run")


def resume(recon: Any, out_dir: str | Path) -> int:
    """Continue ``recon`` from the checkpoint in ``out_dir``; returns the iteration."""
    from ..io.results import read_result  # noqa: PLC0415

    path = Path(out_dir) / RESULT_NAME

    def read_global() -> Any:
        if not path.is_file():
            raise PtychompiError(f"--resume: no checkpoint at {path}; run without --resume, or "
                                 "set output.checkpoint_every")
        data = read_result(str(path))
        check_compatible(data.config_yaml, recon.config)
        return data

    data = collective(recon.comm, read_global)
    iteration = int(data.provenance.get("checkpoint_iteration",
                                        data.provenance.get("iterations_done", 0)))
    same = data.provenance.get("ranks") == recon.size
    mine = state_path(out_dir, recon.rank, recon.size)
    state = collective(recon.comm, lambda: _matching_state(mine, iteration) if same else None)
    if recon.comm is not None:
        ok = recon.comm.allreduce(int(state is not None), op=__import__("mpi4py").MPI.MIN)
        state = state if ok else None
    collective(recon.comm, _restore, recon, out_dir, data, state, iteration)
    return iteration


def _restore(recon: Any, out_dir: str | Path, data: Any, state: dict | None,
             iteration: int) -> None:
    """This rank's engine from its own state, else from the global object and probe."""
    if state is not None:
        recon.engine.restore(state)
        recon.history = [{"iteration": i + 1, "error": float(e), "seconds": float(s)}
                         for i, (e, s) in enumerate(zip(state["history_error"],
                                                        state["history_seconds"], strict=True))]
    else:
        history = [{"iteration": i + 1, "error": float(e), "seconds": 0.0}
                   for i, e in enumerate(data.error)]
        old_size = int(data.provenance.get("ranks", 0))
        carried = _carried(recon, out_dir, old_size, iteration, data.object)
        if carried is not None:
            recon.history = history
            recon.engine.restore(carried)
            return
        recon.resume_from(data.object, data.probe, iteration, history,
                          data.refined_positions)
        _adopt_position_state(recon, out_dir, old_size, iteration)


def _carried(recon: Any, out_dir: str | Path, old_size: int, iteration: int,
             global_object: np.ndarray) -> dict | None:
    """This rank's state made from the old ranks' states (:mod:`.resume_state`), or None on
    every rank when any rank cannot have all of it (agreed)."""
    paths = [_generation(state_path(out_dir, rank, old_size), iteration)
             for rank in range(max(old_size, 0))]
    state = None
    if paths and all(p is not None for p in paths):
        state = carried_state(paths, iteration, recon.engine, global_object)
    if recon.comm is not None:
        ok = recon.comm.allreduce(int(state is not None), op=__import__("mpi4py").MPI.MIN)
        state = state if ok else None
    return state


def _adopt_position_state(recon: Any, out_dir: str | Path, old_size: int,
                          iteration: int) -> None:
    """A new rank count whose states cannot give all of the engine's (e.g. an older
    checkpoint, no tile boxes): the engine's per-position state (:meth:`Engine.position_state`,
    e.g. DM's exit waves) gathered by frame from the old ranks' states
    (:func:`.resume_state.frame_rows`), else the state rebuilt from object and probe."""
    engine = recon.engine
    held = engine.position_state()
    if not held or old_size < 1:  # none kept (e.g. DM refining)
        return
    paths = [_generation(state_path(out_dir, rank, old_size), iteration)
             for rank in range(old_size)]
    if any(p is None for p in paths):
        return
    rows = frame_rows(paths, iteration, engine.data.indices, held)
    if rows is None:  # incomplete or damaged: the state rebuilt from object and probe
        engine.rebuild_state()
        return
    engine.adopt_positions(np.arange(len(engine.data.indices)), rows)
