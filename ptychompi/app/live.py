"""Live snapshots of a running reconstruction, for the GUI's live view.

Every ``output.live_every`` iterations the ranks assemble the object (collective) and rank 0
writes, into ``<output.directory>/live/``:

* ``status.json``: ``{"iteration", "iterations", "error": [...], "eta_s", "state",
  "updated"}`` (state: running, done or failed);
  With position refinement, ``"positions": {"rms_shift_px", "max_shift_px"}``: how far the
  refined positions have moved from the input ones;
* ``snapshot.npz``: ``amplitude`` and ``phase`` of the object (float32, block-averaged to at
  most :data:`MAX_SIDE` pixels a side, global phase removed), ``probe`` (K, M, M) mode
  amplitudes, ``pixel_size`` (metres, of the downsampled image) and ``iteration``.

Both files are written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LiveWriter", "downsample", "read_status", "read_snapshot", "MAX_SIDE"]

MAX_SIDE = 1024


def downsample(a: np.ndarray, max_side: int = MAX_SIDE) -> tuple[np.ndarray, int]:
    """Block mean of ``a`` by the smallest integer factor that brings both sides <= max_side."""
    f = max(1, math.ceil(max(a.shape) / max_side))
    if f == 1:
        return a, 1
    h, w = (a.shape[0] // f) * f, (a.shape[1] // f) * f
    return a[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3)), f


def _write_atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


class LiveWriter:
    """Writes the live files of one run; ``update`` is collective, the writing is rank 0's."""

    def __init__(self, directory: str | os.PathLike, every: int, total: int, rank: int) -> None:
        self.folder = Path(directory) / "live"
        self.every = int(every)
        self.total = int(total)
        self.rank = rank
        self.seconds = 0.0  # time spent in update() on this rank
        if self.every > 0 and rank == 0:
            self.folder.mkdir(parents=True, exist_ok=True)

    def due(self, iteration: int) -> bool:
        """Whether ``iteration`` (just finished) gets a snapshot."""
        return self.every > 0 and (iteration % self.every == 0 or iteration == self.total)

    def _status(self, iteration: int, history: list[dict], state: str,
                follow: dict | None = None, moved: dict | None = None) -> None:
        recent = [m["seconds"] for m in history[-10:] if "seconds" in m]
        eta = (self.total - iteration) * float(np.mean(recent)) if recent else None
        status = {"iteration": int(iteration), "iterations": self.total,
                  "error": [float(m["error"]) for m in history], "eta_s": eta,
                  "state": state, "updated": time.time()}
        if follow is not None:  # run --follow: rows arrived / planned
            status["follow"] = follow
        if moved is not None:  # position refinement
            status["positions"] = moved
        data = json.dumps(status).encode()
        _write_atomic(self.folder / "status.json", lambda fh: fh.write(data))

    def update(self, recon: Any) -> None:
        """Snapshot ``recon`` now (every rank calls this: the object assembly is collective)."""
        if self.every <= 0:
            return
        t0 = time.perf_counter()
        obj = recon.object
        moved = position_shifts(recon)  # collective, as the object
        if self.rank == 0 and obj is not None:
            small, f = downsample(obj)
            total = np.sum(small, dtype=np.complex128)
            ref = np.conj(total / abs(total)) if abs(total) > 0 else 1.0
            probe = np.abs(recon.probe).astype(np.float32)
            arrays = {"amplitude": np.abs(small).astype(np.float32),
                      "phase": np.angle(small * ref).astype(np.float32),
                      "probe": probe,
                      "pixel_size": np.float64(recon.layout.pixel_size_m * f),
                      "iteration": np.int64(recon.iteration)}
            _write_atomic(self.folder / "snapshot.npz", lambda fh: np.savez(fh, **arrays))
            self._status(recon.iteration, recon.history, "running",
                         getattr(recon, "follow_status", None), moved)
        self.seconds += time.perf_counter() - t0

    def finish(self, recon: Any, state: str) -> None:
        """Mark the run ``done`` or ``failed`` in status.json (rank 0; no collective)."""
        if self.every <= 0 or self.rank != 0:
            return
        try:
            self._status(recon.iteration, recon.history, state,
                         getattr(recon, "follow_status", None))
        except OSError:  # a failing disk must not hide the run's own error
            pass


def position_shifts(recon: Any) -> dict | None:
    """RMS and largest distance (px) of the refined positions from the input ones, or None
    without position refinement. Collective."""
    refined_positions = getattr(recon, "refined_positions", None)
    refined = refined_positions() if refined_positions is not None else None
    if refined is None:
        return None
    d = np.asarray(refined, np.float64) - np.asarray(recon.positions, np.float64)
    dist = np.hypot(d[:, 0], d[:, 1]) if d.size else np.zeros(1)
    return {"rms_shift_px": float(np.sqrt(np.mean(dist ** 2))),
            "max_shift_px": float(dist.max())}


def read_status(folder: str | os.PathLike) -> dict | None:
    """``live/status.json`` of an output folder, or None when absent or unreadable."""
    try:
        return json.loads((Path(folder) / "live" / "status.json").read_text())
    except (OSError, ValueError):
        return None


def read_snapshot(folder: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """The arrays of ``live/snapshot.npz``, or None when absent or unreadable."""
    try:
        with np.load(Path(folder) / "live" / "snapshot.npz") as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError):
        return None
