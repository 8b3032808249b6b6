"""A watched inbox folder: a config (``.yaml``/``.yml``), an MDA file (``.mda``, with the
queue's template) or a ptychopy command string (``.cmd``/``.txt``) dropped there becomes a job.

The coordinator looks at the folder at its poll interval (no tight loop). A file is taken once
it has not changed for :data:`SETTLE_S` seconds (or write it under a name starting with ``.``
and rename it). Added files move to ``<inbox>/added/``; a file that cannot become a job moves
to ``<inbox>/rejected/`` beside ``<name>.error`` holding the one-line reason.
"""

from __future__ import annotations

import time
from pathlib import Path

from ...errors import PtychompiError
from .jobs import job_from_mda, job_from_ptychopy, job_from_yaml
from .store import QueueStore

__all__ = ["scan_inbox", "SETTLE_S", "SUFFIXES"]

SETTLE_S = 1.0
SUFFIXES = (".yaml", ".yml", ".mda", ".cmd", ".txt")


def _move(path: Path, folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    target = folder / path.name
    n = 1
    while target.exists():
        target = folder / f"{path.stem}.{n}{path.suffix}"
        n += 1
    path.rename(target)
    return target


def _job(path: Path, template: dict | None) -> tuple[dict, str, str]:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return job_from_yaml(path)
    if suffix == ".mda":
        if template is None:
            raise PtychompiError("an MDA file needs a template config: start the queue with "
                                 "--template beamline.yaml")
        return job_from_mda(path, template)
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise PtychompiError("the file is empty; write one ptychopy command string in it")
    return job_from_ptychopy(text)


def scan_inbox(inbox: Path, store: QueueStore, template: dict | None,
               now: float | None = None) -> list[str]:
    """Turn the settled files of ``inbox`` into jobs; returns one line per file handled."""
    lines: list[str] = []
    try:
        entries = sorted(inbox.iterdir(), key=lambda p: (p.stat().st_mtime, p.name))
    except OSError:
        return lines
    now = time.time() if now is None else now
    for path in entries:
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() not in SUFFIXES:
            continue
        try:
            if now - path.stat().st_mtime < SETTLE_S:
                continue  # still being written
        except OSError:
            continue
        try:
            config, name, source = _job(path, template)
            job = store.add(config, name=name, source=source)
        except (PtychompiError, OSError, UnicodeDecodeError) as exc:
            reason = " ".join(str(exc).split())
            try:
                moved = _move(path, inbox / "rejected")
                moved.with_name(moved.name + ".error").write_text(reason + "\n",
                                                                  encoding="utf-8")
            except OSError:
                pass
            lines.append(f"inbox: {path.name} rejected: {reason}")
            continue
        try:
            _move(path, inbox / "added")
        except OSError as exc:
            lines.append(f"inbox: {path.name} queued as job {job.id} but could not be moved "
                         f"({exc.strerror or exc})")
            continue
        lines.append(f"inbox: {path.name} -> job {job.id} ({job.name})")
    return lines
