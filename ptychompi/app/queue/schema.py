"""The queue's SQLite file: name, states, schema, busy timeout and the journal mode chosen by
the file system it lives on."""

from __future__ import annotations

import os
from pathlib import Path

DB_NAME = "queue.sqlite"
STATES = ("queued", "running", "done", "failed", "cancelled")
SOURCES = ("yaml", "ptychopy", "mda", "dict")
BUSY_TIMEOUT_MS = 30_000
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    priority INTEGER NOT NULL DEFAULT 0,
    config TEXT NOT NULL,
    source TEXT NOT NULL,
    email TEXT,
    grp INTEGER,
    submitted REAL NOT NULL,
    started REAL,
    ended REAL,
    output_dir TEXT NOT NULL DEFAULT '',
    result_path TEXT,
    error TEXT,
    iteration INTEGER NOT NULL DEFAULT 0,
    iterations INTEGER NOT NULL DEFAULT 0,
    final_error REAL,
    wall_s REAL,
    bytes_exchanged INTEGER,
    device TEXT,
    ranks INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    resumed_from INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_order ON jobs (state, priority DESC, id);
CREATE TABLE IF NOT EXISTS groups (
    grp INTEGER PRIMARY KEY,
    ranks TEXT NOT NULL,
    devices TEXT,
    jobs_done INTEGER NOT NULL DEFAULT 0,
    jobs_failed INTEGER NOT NULL DEFAULT 0,
    jobs_cancelled INTEGER NOT NULL DEFAULT 0,
    iterations INTEGER NOT NULL DEFAULT 0,
    busy_s REAL NOT NULL DEFAULT 0,
    bytes_exchanged INTEGER NOT NULL DEFAULT 0,
    updated REAL
);
"""
_ORDER = "ORDER BY priority DESC, id ASC"


NETWORK_FS = ("nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "beegfs", "ceph",
              "fuse.sshfs", "glusterfs", "fuse.glusterfs", "panfs", "afs", "9p", "wekafs")


def journal_mode(folder: str | os.PathLike, mountinfo: str | None = None) -> str:
    """``WAL`` on a local file system; ``DELETE`` (rollback journal) on a network one, where
    processes on different hosts (a login node adding jobs, a compute node running them)
    cannot share WAL's memory-mapped index. ``mountinfo``: the text of /proc/self/mountinfo."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "WAL"
    target = os.path.realpath(folder)
    best, fstype = "", ""
    for line in mountinfo.splitlines():
        fields = line.split(" - ", 1)
        left = fields[0].split()
        if len(fields) != 2 or len(left) < 5 or not fields[1].split():
            continue
        point = left[4].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, fields[1].split()[0]
    return "DELETE" if fstype.lower() in NETWORK_FS else "WAL"
