"""Logging, progress display and the end-of-run summary (rank 0 speaks; others only warn).

``setup_logging`` configures the ``ptychompi`` logger: on rank 0 a log file
``<output_dir>/ptychompi.log`` (everything, with timestamps) and a console handler; on other
ranks only warnings and errors, to stderr, prefixed with the rank. ``Progress`` draws a
progress bar on a terminal and prints one line every N iterations otherwise.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

__all__ = ["setup_logging", "close_logging", "Progress", "format_summary", "format_duration",
           "format_bytes", "LOGGER_NAME", "LOG_FILE"]

LOGGER_NAME = "ptychompi"
LOG_FILE = "ptychompi.log"
_MARK = "_ptychompi_handler"


class _ConsoleFormatter(logging.Formatter):
    """Plain messages; warnings and errors say what they are."""

    def __init__(self, prefix: str = "") -> None:
        super().__init__()
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            msg += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.WARNING:
            msg = f"{record.levelname.lower()}: {msg}"
        return f"{self.prefix}{msg}"


class _QuietFileHandler(logging.FileHandler):
    """The log file; when its disk fills, lines are dropped quietly (no "Logging error"
    traceback on stderr): the run's own one-line error says what happened."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging API
        pass


def close_logging() -> None:
    """Remove and close the handlers :func:`setup_logging` added."""
    logger = logging.getLogger(LOGGER_NAME)
    for h in list(logger.handlers):
        if getattr(h, _MARK, False):
            logger.removeHandler(h)
            h.close()
    logger.propagate = True


def setup_logging(output_dir: str | os.PathLike | None, rank: int = 0, quiet: bool = False,
                  verbose: bool = False, stream: IO[str] | None = None) -> logging.Logger:
    """Configure the ``ptychompi`` logger for this rank; calling again replaces the handlers.

    Rank 0: file handler (DEBUG, timestamps) in ``output_dir`` (none when it is ``None``) and
    a console handler at WARNING (``quiet``), DEBUG (``verbose``) or INFO. Other ranks:
    WARNING and above to ``stream`` (stderr), prefixed ``[rank N]``.
    """
    close_logging()
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # our handlers print it; avoid doubles through the root logger
    stream = stream if stream is not None else sys.stderr
    handlers: list[logging.Handler] = []
    if rank == 0:
        if output_dir is not None:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            fh = _QuietFileHandler(Path(output_dir) / LOG_FILE, encoding="utf-8")
            fh.setLevel(logging.DEBUG)
            fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
            handlers.append(fh)
        console = logging.StreamHandler(stream)
        console.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
        console.setFormatter(_ConsoleFormatter())
        handlers.append(console)
    else:
        console = logging.StreamHandler(stream)
        console.setLevel(logging.WARNING)
        console.setFormatter(_ConsoleFormatter(prefix=f"[rank {rank}] "))
        handlers.append(console)
    for h in handlers:
        setattr(h, _MARK, True)
        logger.addHandler(h)
    return logger


# ----------------------------------------------------------------------------- formatting
def format_duration(seconds: float | None) -> str:
    """``12 s``, ``4 min 05 s``, ``2 h 03 min``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def format_bytes(n: float) -> str:
    """Decimal units: ``1.5 MB``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"  # pragma: no cover


def _fmt_error(error: float | None) -> str:
    if error is None:
        return "n/a"
    return f"{error:.2e}"


class Progress:
    """Progress of the iterations: a redrawn bar on a terminal, plain lines otherwise.

    ``update(iteration, ...)`` takes the number of iterations done so far (``start`` of them
    before this run, e.g. when resuming).
    """

    BAR = 24

    def __init__(self, total_iterations: int, stream: IO[str] | None = None, every: int = 10,
                 enabled: bool = True, start: int = 0, min_interval: float = 0.1) -> None:
        self.total = int(total_iterations)
        self.stream = stream if stream is not None else sys.stderr
        self.every = max(1, int(every))
        self.enabled = enabled
        self.start = int(start)
        self.min_interval = min_interval
        isatty = getattr(self.stream, "isatty", None)
        try:
            self.tty = bool(isatty()) if isatty else False
        except (ValueError, OSError):
            self.tty = False
        self._t0 = time.monotonic()
        self._last_draw = -math.inf
        self._width = 0
        self._drawn = False
        self.note = ""  # shown after the error (follow mode: rows arrived / planned)

    def _line(self, iteration: int, error: float | None, spi: float | None) -> str:
        w = len(str(self.total))
        eta = (self.total - iteration) * spi if spi is not None else None
        rate = f"{spi:.3g} s/it" if spi is not None else "? s/it"
        tail = f"error {_fmt_error(error)}  {rate}  ETA {format_duration(eta)}"
        if self.note:
            tail = f"{tail}  {self.note}"
        if not self.tty:
            return f"iter {iteration}/{self.total}  {tail}"
        frac = min(1.0, iteration / self.total) if self.total > 0 else 1.0
        filled = int(frac * self.BAR)
        bar = "#" * filled + "-" * (self.BAR - filled)
        return f"{iteration:>{w}}/{self.total} [{bar}] {tail}"

    def update(self, iteration: int, error: float | None,
               seconds_per_iteration: float | None = None) -> None:
        """Report ``iteration`` iterations done; the rate defaults to the measured mean."""
        if not self.enabled:
            return
        spi = seconds_per_iteration
        if spi is None and iteration > self.start:
            spi = (time.monotonic() - self._t0) / (iteration - self.start)
        last = iteration >= self.total
        if self.tty:
            now = time.monotonic()
            if not last and self._drawn and now - self._last_draw < self.min_interval:
                return
            self._last_draw = now
            line = self._line(iteration, error, spi)
            pad = " " * max(0, self._width - len(line))
            self.stream.write("\r" + line + pad)
            self._width = len(line)
            self._drawn = True
        elif last or iteration % self.every == 0:
            self.stream.write(self._line(iteration, error, spi) + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line (terminal); idempotent."""
        if self.enabled and self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
        self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _per_rank(metrics: dict[str, Any], key: str) -> list[float]:
    value = metrics.get(key)
    if value is None:
        return []
    if isinstance(value, (int, float)):
        return [value]
    return list(value)


def format_summary(metrics: dict[str, Any]) -> str:
    """The end-of-run block: final error, iterations, wall time, a per-rank table, output.

    Known keys (all optional): ``final_error`` (else the last of ``error``), ``iterations``
    (or ``iterations_done``), ``wall_time_s``, ``algorithm``, ``ranks``, ``devices``,
    per-rank lists ``compute_s``, ``comm_s``, ``bytes_sent``, and ``output``.
    """
    final = metrics.get("final_error")
    if final is None and metrics.get("error") is not None and len(metrics["error"]):
        final = metrics["error"][-1]
    iters = metrics.get("iterations", metrics.get("iterations_done"))
    lines = ["ptychompi run summary"]
    if metrics.get("algorithm"):
        lines.append(f"  algorithm     {metrics['algorithm']}")
    lines.append(f"  iterations    {iters if iters is not None else '?'}")
    lines.append(f"  final error   {_fmt_error(None if final is None else float(final))}")
    wall = metrics.get("wall_time_s")
    if wall is not None:
        text = f"{float(wall):.1f} s"
        if float(wall) >= 60:  # minutes and hours only where they help
            text += f" ({format_duration(float(wall))})"
        lines.append(f"  wall time     {text}")
    compute = _per_rank(metrics, "compute_s")
    comm = _per_rank(metrics, "comm_s")
    sent = _per_rank(metrics, "bytes_sent")
    devices = list(metrics.get("devices") or [])
    n = max(len(compute), len(comm), len(sent), int(metrics.get("ranks") or 0))
    lines.append(f"  ranks         {n}")
    if compute or comm or sent:
        lines.append("  rank  device        compute s    comm s    sent")
        for r in range(n):
            dev = str(devices[r]) if r < len(devices) else "-"
            c = f"{compute[r]:9.2f}" if r < len(compute) else f"{'-':>9}"
            m = f"{comm[r]:9.2f}" if r < len(comm) else f"{'-':>9}"
            s = format_bytes(sent[r]) if r < len(sent) else "-"
            lines.append(f"  {r:>4}  {dev:<12} {c} {m}  {s:>9}")
        if n > 1:
            lines.append(f"  {'all':>4}  {'':<12} {sum(compute):9.2f} {sum(comm):9.2f}  "
                         f"{format_bytes(sum(sent)):>9}")
    if metrics.get("output"):
        lines.append(f"  output        {metrics['output']}")
    return "\n".join(lines)
