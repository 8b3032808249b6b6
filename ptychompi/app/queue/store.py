"""The persisted job queue: ``<folder>/queue.sqlite`` (SQLite, busy timeout; WAL journal on a
local file system, the rollback journal on a network one, see :func:`journal_mode`).

Every process that touches the queue (the coordinator of ``ptychompi queue run``,
``ptychompi queue add|cancel|retry|priority``, the GUI) opens its own :class:`QueueStore`;
each change is one short transaction, so adds and cancels from other processes are safe while
the queue runs. Only the coordinator moves jobs to ``running`` and from there to
``done``/``failed``/``cancelled``. Job outputs go to ``<folder>/jobs/<id>-<name>`` unless the
job's config names its own ``output.directory``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ...errors import squash
from .records import (
    Job,
    QueueError,
    _iterations_of,
    _job_id,
    _row_to_job,
    sanitise_name,
    validate_config,
)
from .schema import (
    _ORDER,
    _SCHEMA,
    BUSY_TIMEOUT_MS,
    DB_NAME,
    SCHEMA_VERSION,
    SOURCES,
    STATES,
    journal_mode,
)

__all__ = ["QueueStore", "Job", "STATES", "DB_NAME", "sanitise_name", "validate_config",
           "journal_mode", "QueueError"]


class QueueStore:
    """The queue in ``folder`` (``queue.sqlite`` plus ``jobs/``); ``create`` makes a new one."""

    def __init__(self, folder: str | os.PathLike, *, create: bool = False) -> None:
        self.folder = Path(folder).absolute()
        self.path = self.folder / DB_NAME
        self._lock = threading.Lock()
        if self.folder.exists() and not self.folder.is_dir():
            raise QueueError(f"queue folder {str(self.folder)!r} is a file, not a folder; "
                             "give the queue's folder")
        if self.folder.exists() and not os.access(self.folder, os.R_OK | os.W_OK | os.X_OK):
            raise QueueError(f"queue folder {str(self.folder)!r} is not readable and writable "
                             "by this user; fix its permissions")
        if not self.path.is_file():
            if not create:
                what = "does not exist" if not self.folder.exists() else "is not a queue"
                raise QueueError(f"queue folder {str(self.folder)!r} {what} (no {DB_NAME}); "
                                 "create it with `ptychompi queue add FOLDER ...`")
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                (self.folder / "jobs").mkdir(exist_ok=True)
            except OSError as exc:
                raise QueueError(f"cannot create the queue folder {str(self.folder)!r} "
                                 f"({exc.strerror or exc}); choose a writable folder") from None
        try:
            self._db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000,
                                       isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._db.execute(f"PRAGMA journal_mode = {journal_mode(self.folder)}")
            self._db.execute("PRAGMA synchronous = NORMAL")
            with self._write() as db:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)",
                           (str(SCHEMA_VERSION),))
            version = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise QueueError(f"{self.path}: not a usable queue database ({exc}); move it "
                             "aside and add the jobs again") from None
        if version is None or int(version[0]) > SCHEMA_VERSION:
            raise QueueError(f"{self.path} was written by a newer ptychompi; upgrade ptychompi")

    # ------------------------------------------------------------------ plumbing
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: waits for other writers up to the timeout)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise QueueError(f"{self.path}: the queue is busy or read-only ({exc}); "
                                 "try again") from None
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as exc:
                raise QueueError(f"{self.path}: cannot read the queue ({exc})") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> QueueStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ public API
    def default_output_dir(self, job_id: int, name: str) -> str:
        return str(self.folder / "jobs" / f"{job_id}-{sanitise_name(name)}")

    def add(self, config: dict, *, name: str | None = None, priority: int = 0,
            email: str | None = None, source: str = "yaml") -> Job:
        """Queue one job (validated first). ``config`` is a config dict or
        ``{"ptychopy": CMDSTR}``; its ``output.directory`` is kept when given (use an absolute
        path), else ``<folder>/jobs/<id>-<name>``."""
        if not isinstance(config, dict):
            raise QueueError("a job's config must be a mapping of sections")
        if source not in SOURCES:
            raise QueueError(f"job source {source!r} is not one of {', '.join(SOURCES)}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise QueueError(f"priority {priority!r} must be a whole number")
        clean = sanitise_name(name)
        output = config.get("output") if isinstance(config.get("output"), dict) else None
        given_dir = output.get("directory") if output else None
        if given_dir:
            given_dir = str(Path(str(given_dir)).absolute())  # relative: to this process' cwd
        config = json.loads(json.dumps(validate_config(config)))  # a private, JSON-safe copy
        with self._write() as db:
            if given_dir:
                other = db.execute("SELECT id FROM jobs WHERE output_dir = ?",
                                   (str(given_dir),)).fetchone()
                if other is not None:
                    raise QueueError(f"output.directory {str(given_dir)!r} is already job "
                                     f"{other[0]}'s; give each job its own folder, or leave "
                                     "output.directory out (the queue uses jobs/<id>-<name>)")
            cur = db.execute(
                "INSERT INTO jobs (name, priority, config, source, email, submitted, "
                "iterations) VALUES (?, ?, '{}', ?, ?, ?, ?)",
                (clean, priority, source, email, time.time(), _iterations_of(config)))
            job_id = int(cur.lastrowid)
            out_dir = str(given_dir) if given_dir else self.default_output_dir(job_id, clean)
            config.setdefault("output", {})["directory"] = out_dir
            db.execute("UPDATE jobs SET config = ?, output_dir = ? WHERE id = ?",
                       (json.dumps(config), out_dir, job_id))
        return self.get(job_id)

    def jobs(self, states: tuple[str, ...] | None = None) -> list[Job]:
        """All jobs (or those in ``states``), in dispatch order: priority desc, then FIFO."""
        if states:
            marks = ",".join("?" * len(states))
            rows = self._read(f"SELECT * FROM jobs WHERE state IN ({marks}) {_ORDER}",
                              tuple(states))
        else:
            rows = self._read(f"SELECT * FROM jobs {_ORDER}")
        return [_row_to_job(r) for r in rows]

    def get(self, job_id: int) -> Job:
        job_id = _job_id(job_id)
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (int(job_id),))
        if not rows:
            raise QueueError(f"no job {job_id} in the queue {self.folder}")
        return _row_to_job(rows[0])

    def cancel(self, job_id: int) -> Job:
        """queued -> cancelled; running -> cancel requested (stopped at its next step)."""
        job_id = _job_id(job_id)
        with self._write() as db:
            job = self._get_locked(db, job_id)
            if job.state == "queued":
                db.execute("UPDATE jobs SET state='cancelled', ended=?, error=? WHERE id=?",
                           (time.time(), "cancelled before it started", job_id))
            elif job.state == "running":
                db.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))
            else:
                raise QueueError(f"job {job_id} is {job.state}; only queued or running jobs "
                                 "can be cancelled")
        return self.get(job_id)

    def retry(self, job_id: int) -> Job:
        """failed/cancelled -> queued (it resumes from its checkpoint when it has one)."""
        job_id = _job_id(job_id)
        with self._write() as db:
            job = self._get_locked(db, job_id)
            if job.state not in ("failed", "cancelled"):
                raise QueueError(f"job {job_id} is {job.state}; only failed or cancelled jobs "
                                 "can be retried")
            db.execute("UPDATE jobs SET state='queued', error=NULL, ended=NULL, grp=NULL, "
                       "cancel_requested=0, attempts=0 WHERE id=?", (job_id,))
        return self.get(job_id)

    def set_priority(self, job_id: int, priority: int) -> Job:
        job_id = _job_id(job_id)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise QueueError(f"priority {priority!r} must be a whole number")
        with self._write() as db:
            self._get_locked(db, job_id)
            db.execute("UPDATE jobs SET priority=? WHERE id=?", (priority, job_id))
        return self.get(job_id)

    def groups(self) -> list[dict]:
        """Per-group accounting of the last ``queue run``."""
        return [dict(r) for r in self._read("SELECT * FROM groups ORDER BY grp")]

    # ------------------------------------------------------------------ coordinator side
    @staticmethod
    def _get_locked(db: sqlite3.Connection, job_id: int) -> Job:
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (int(job_id),)).fetchone()
        if row is None:
            raise QueueError(f"no job {job_id} in the queue")
        return _row_to_job(row)

    def recover(self, max_attempts: int) -> tuple[list[int], list[int]]:
        """At start-up: jobs left ``running`` by a killed queue go back to ``queued`` (they
        resume from their checkpoint); a job that was running in ``max_attempts`` queue runs
        that all ended without it finishing is failed. Returns (requeued, failed) ids."""
        requeued, failed = [], []
        with self._write() as db:
            for row in db.execute("SELECT * FROM jobs WHERE state='running'").fetchall():
                job = _row_to_job(row)
                if job.cancel_requested:
                    db.execute("UPDATE jobs SET state='cancelled', ended=?, error=? WHERE id=?",
                               (time.time(), "cancelled (the queue stopped while it ran)",
                                job.id))
                elif job.attempts >= max_attempts:
                    db.execute("UPDATE jobs SET state='failed', ended=?, error=? WHERE id=?",
                               (time.time(), f"the queue ended {job.attempts} times while this "
                                "job ran (a fault inside a collective?); retry it alone",
                                job.id))
                    failed.append(job.id)
                else:
                    db.execute("UPDATE jobs SET state='queued', grp=NULL WHERE id=?", (job.id,))
                    requeued.append(job.id)
            db.execute("DELETE FROM groups")
        return requeued, failed

    def claim_next(self, group: int, ranks: int) -> Job | None:
        """The next queued job (priority, then FIFO), marked running on ``group``."""
        with self._write() as db:
            row = db.execute(f"SELECT * FROM jobs WHERE state='queued' {_ORDER} LIMIT 1"
                             ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state='running', grp=?, ranks=?, started=?, ended=NULL, "
                       "error=NULL, attempts=attempts+1 WHERE id=?",
                       (group, ranks, time.time(), row["id"]))
        return self.get(row["id"])

    def progress(self, job_id: int, iteration: int, error: float | None = None) -> None:
        with self._write() as db:
            db.execute("UPDATE jobs SET iteration=?, final_error=? WHERE id=?",
                       (int(iteration), error, job_id))

    def finish(self, job_id: int, state: str, *, error: str | None = None,
               **accounting: Any) -> Job:
        """running -> done | failed | cancelled, with the one-line reason and accounting
        (``result_path``, ``iteration``, ``final_error``, ``wall_s``, ``bytes_exchanged``,
        ``device``, ``resumed_from``)."""
        if state not in ("done", "failed", "cancelled", "queued"):
            raise QueueError(f"cannot finish a job as {state!r}")
        allowed = {"result_path", "iteration", "final_error", "wall_s", "bytes_exchanged",
                   "device", "resumed_from"}
        extra = {k: v for k, v in accounting.items() if k in allowed}
        sets = ", ".join(f"{k}=?" for k in extra)
        with self._write() as db:
            db.execute(f"UPDATE jobs SET state=?, ended=?, error=?{', ' if sets else ''}{sets} "
                       "WHERE id=?", (state, time.time(),
                                      squash(error, 500) if error else None,
                                      *extra.values(), job_id))
        return self.get(job_id)

    def cancel_requests(self) -> list[int]:
        """Running jobs whose cancel was requested."""
        rows = self._read("SELECT id FROM jobs WHERE state='running' AND cancel_requested=1")
        return [int(r[0]) for r in rows]

    def count(self, state: str) -> int:
        return int(self._read("SELECT COUNT(*) FROM jobs WHERE state=?", (state,))[0][0])

    def record_group(self, group: int, ranks: list[int], devices: list[str] | None = None,
                     *, outcome: str | None = None, busy_s: float = 0.0,
                     bytes_exchanged: int = 0, iterations: int = 0) -> None:
        """Create or add to one group's accounting row."""
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO groups (grp, ranks) VALUES (?, ?)",
                       (group, json.dumps(ranks)))
            if devices is not None:
                db.execute("UPDATE groups SET devices=? WHERE grp=?",
                           (json.dumps(devices), group))
            column = {"done": "jobs_done", "failed": "jobs_failed",
                      "cancelled": "jobs_cancelled"}.get(outcome or "")
            if column:
                db.execute(f"UPDATE groups SET {column}={column}+1 WHERE grp=?", (group,))
            db.execute("UPDATE groups SET busy_s=busy_s+?, bytes_exchanged=bytes_exchanged+?, "
                       "iterations=iterations+?, updated=? WHERE grp=?",
                       (busy_s, int(bytes_exchanged), int(iterations), time.time(), group))
