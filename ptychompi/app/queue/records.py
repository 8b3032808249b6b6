"""Job records: :class:`Job` (one row of the queue), names made safe for folders, a job's
config validated before it is queued, the queue's one-line error."""

from __future__ import annotations

import json
import math
import re
import sqlite3
from dataclasses import asdict, dataclass

from ...errors import PtychompiError


class QueueError(PtychompiError):
    """The queue folder or a queue operation is not usable as asked."""


def sanitise_name(name: str | None, default: str = "job") -> str:
    """Letters, digits and ``- _ .`` only (at most 64 characters), usable in a path."""
    text = re.sub(r"[^A-Za-z0-9_.-]+", "_", name or "").strip("._")[:64]
    return text or default


@dataclass(frozen=True)
class Job:
    """One row of the queue (a snapshot; re-read with :meth:`QueueStore.get`)."""

    id: int
    name: str
    state: str
    priority: int
    config: dict
    source: str
    email: str | None
    group: int | None
    submitted: float
    started: float | None
    ended: float | None
    output_dir: str
    result_path: str | None
    error: str | None
    iteration: int
    iterations: int
    final_error: float | None
    wall_s: float | None
    bytes_exchanged: int | None
    device: str | None = None
    ranks: int | None = None
    attempts: int = 0
    resumed_from: int | None = None
    cancel_requested: bool = False

    def to_dict(self) -> dict:
        """JSON-safe dict (non-finite floats become ``None``)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        return out


def _row_to_job(row: sqlite3.Row) -> Job:
    return Job(id=row["id"], name=row["name"], state=row["state"], priority=row["priority"],
               config=json.loads(row["config"]), source=row["source"], email=row["email"],
               group=row["grp"], submitted=row["submitted"], started=row["started"],
               ended=row["ended"], output_dir=row["output_dir"],
               result_path=row["result_path"], error=row["error"],
               iteration=row["iteration"], iterations=row["iterations"],
               final_error=row["final_error"], wall_s=row["wall_s"],
               bytes_exchanged=row["bytes_exchanged"], device=row["device"],
               ranks=row["ranks"], attempts=row["attempts"],
               resumed_from=row["resumed_from"],
               cancel_requested=bool(row["cancel_requested"]))


def _job_id(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise QueueError(f"job id {value!r} is not a whole number") from None


def validate_config(config: dict) -> dict:
    """A job config as stored: a validated config dict (all keys), or ``{"ptychopy": CMDSTR}``
    (plus an optional ``output`` section) checked by the ptychopy parser."""
    from ...config import config_from_dict  # noqa: PLC0415

    if not isinstance(config, dict):
        raise QueueError("a job's config must be a mapping of sections")
    if "ptychopy" in config:
        from ...compat.ptychopy import parse  # noqa: PLC0415

        extra = set(config) - {"ptychopy", "output"}
        if extra or not isinstance(config["ptychopy"], str):
            raise QueueError("a ptychopy job is {'ptychopy': '<command string>'} plus an "
                             f"optional output section; not {sorted(extra)}")
        cfg = parse(config["ptychopy"])
        out = {"ptychopy": config["ptychopy"], "output": dict(config.get("output") or {})}
        out["output"].setdefault("directory", None)
        out["algorithm"] = {"iterations": cfg.algorithm.iterations}
        return out
    return config_from_dict(config).to_dict()


def _iterations_of(config: dict) -> int:
    algo = config.get("algorithm") if isinstance(config, dict) else None
    value = algo.get("iterations") if isinstance(algo, dict) else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0
