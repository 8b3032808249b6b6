"""Logging set-up, the progress display and the summary block."""

from __future__ import annotations

import io
import logging

import pytest

from ptychompi.app.monitor import (
    LOG_FILE,
    Progress,
    close_logging,
    format_duration,
    format_summary,
    setup_logging,
)


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _clean_logging():
    yield
    close_logging()


def _ours(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers if getattr(h, "_ptychompi_handler", False)]


def test_rank0_file_and_console(tmp_path):
    err = io.StringIO()
    log = setup_logging(tmp_path / "out", rank=0, stream=err)
    assert log.name == "ptychompi"
    log.debug("debug detail")
    log.info("iteration 1 error 0.5")
    log.warning("something odd")
    for h in log.handlers:
        h.flush()
    text = (tmp_path / "out" / LOG_FILE).read_text()
    assert "debug detail" in text and "iteration 1 error 0.5" in text
    assert "WARNING" in text and "something odd" in text
    assert text.splitlines()[0][:4].isdigit()  # timestamped
    console = err.getvalue()
    assert "iteration 1 error 0.5" in console
    assert "debug detail" not in console
    assert "warning: something odd" in console


@pytest.mark.parametrize(("quiet", "verbose", "shown", "hidden"), [
    (True, False, ["warn"], ["info", "debug"]),
    (False, True, ["warn", "info", "debug"], []),
    (False, False, ["warn", "info"], ["debug"]),
])
def test_console_levels(tmp_path, quiet, verbose, shown, hidden):
    err = io.StringIO()
    log = setup_logging(tmp_path, rank=0, quiet=quiet, verbose=verbose, stream=err)
    log.debug("debug")
    log.info("info")
    log.warning("warn")
    out = err.getvalue()
    for word in shown:
        assert word in out
    for word in hidden:
        assert word not in out.replace("warning", "")


def test_other_ranks_only_warn_with_prefix(tmp_path):
    err = io.StringIO()
    log = setup_logging(tmp_path, rank=3, stream=err)
    log.info("chatty")
    log.error("out of memory")
    assert err.getvalue() == "[rank 3] error: out of memory\n"
    assert not (tmp_path / LOG_FILE).exists()


def test_idempotent(tmp_path):
    err = io.StringIO()
    setup_logging(tmp_path, rank=0, stream=err)
    log = setup_logging(tmp_path, rank=0, stream=err)
    assert len(_ours(log)) == 2
    log.info("once")
    assert err.getvalue().count("once") == 1
    for h in log.handlers:
        h.flush()
    assert (tmp_path / LOG_FILE).read_text().count("once") == 1
    close_logging()
    assert _ours(log) == []
    assert log.propagate


def test_progress_plain_lines():
    out = io.StringIO()
    p = Progress(100, stream=out, every=10)
    for i in range(1, 101):
        p.update(i, 0.0123, 0.15)
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[1] == "iter 20/100  error 1.23e-02  0.15 s/it  ETA 12 s"
    assert lines[-1].startswith("iter 100/100") and "ETA 0 s" in lines[-1]
    assert "\r" not in out.getvalue()


def test_progress_plain_last_iteration_off_grid():
    out = io.StringIO()
    p = Progress(25, stream=out, every=10, start=5)
    for i in range(6, 26):
        p.update(i, 0.5, 1.0)
    assert [ln.split()[1] for ln in out.getvalue().splitlines()] == ["10/25", "20/25", "25/25"]


def test_progress_tty_redraws_one_line():
    out = FakeTTY()
    p = Progress(50, stream=out, min_interval=0.0)
    for i in range(1, 51):
        p.update(i, 2e-3, 90.0)
    p.close()
    text = out.getvalue()
    assert text.count("\r") == 50
    assert text.endswith("\n") and text.count("\n") == 1
    last = text.split("\r")[-1]
    assert last.startswith("50/50 [" + "#" * Progress.BAR + "]")
    first = text.split("\r")[1]
    assert first.startswith(" 1/50 [") and "ETA 1 h 13 min" in first and "90 s/it" in first


def test_progress_tty_throttles_but_draws_last():
    out = FakeTTY()
    p = Progress(1000, stream=out, min_interval=3600.0)
    for i in range(1, 1001):
        p.update(i, 1.0, 0.001)
    assert out.getvalue().count("\r") == 2  # the first and the last


def test_progress_disabled_and_measured_rate():
    out = io.StringIO()
    Progress(10, stream=out, enabled=False).update(10, 1.0, 0.1)
    assert out.getvalue() == ""
    p = Progress(4, stream=out, every=2)
    p.update(2, None)
    assert "error n/a" in out.getvalue() and "s/it" in out.getvalue()


def test_format_duration():
    assert format_duration(12.4) == "12 s"
    assert format_duration(245) == "4 min 05 s"
    assert format_duration(7380) == "2 h 03 min"
    assert format_duration(None) == "?"


def test_format_summary():
    text = format_summary({
        "error": [0.5, 0.25, 0.0123], "iterations": 3, "wall_time_s": 65.0, "algorithm": "dm",
        "devices": ["cuda:0", "cuda:1"], "compute_s": [50.0, 48.5], "comm_s": [2.0, 3.25],
        "bytes_sent": [1_500_000, 2_500_000], "output": "out/result.h5"})
    assert "final error   1.23e-02" in text
    assert "iterations    3" in text
    assert "1 min 05 s" in text
    assert "ranks         2" in text
    rows = [ln.split() for ln in text.splitlines() if ln.strip().startswith(("0 ", "1 "))]
    assert rows[0] == ["0", "cuda:0", "50.00", "2.00", "1.5", "MB"]
    assert rows[1] == ["1", "cuda:1", "48.50", "3.25", "2.5", "MB"]
    assert "4.0 MB" in text.splitlines()[-2]  # the total row
    assert text.splitlines()[-1].split() == ["output", "out/result.h5"]
