"""Issue 21 under real ``mpiexec``: no hang, one line, one run per output folder.

A truncated state file on one rank (item 1), SIGINT/SIGTERM sent from outside to one rank
(item 2) and two runs into one folder (item 4). Every launch has a timeout; a hang fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import h5py
import pytest
import yaml

BIN = Path(sys.executable).parent
MPIEXEC, PTYCHOMPI = BIN / "mpiexec", BIN / "ptychompi"

pytestmark = pytest.mark.skipif(not (MPIEXEC.exists() and PTYCHOMPI.exists()),
                                reason="no mpiexec or ptychompi beside the interpreter")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "HYDRA_"))}
    return {**env, **extra}


def mpirun(n: int, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(MPIEXEC), "-n", str(n), str(PTYCHOMPI), "run", *args],
                          capture_output=True, text=True, timeout=timeout, env=_env())


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("ptychompi:")]


def config(tmp: Path, scan: Path, iterations: int, every: int = 2) -> Path:
    cfg = {"data": {"path": str(scan)},
           "algorithm": {"name": "dm", "iterations": iterations, "probe_diameter_m": 1.17e-6},
           "parallel": {"device": "cpu"},
           "output": {"directory": str(tmp / "out"), "checkpoint_every": every,
                      "live_every": 0}}
    path = tmp / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ------------------------------------------------------------------ item 1
@pytest.mark.parametrize("damaged", [0, 1])
def test_truncated_state_of_one_rank_is_one_line_not_a_hang(tmp_path, scan, damaged):
    cfg = config(tmp_path, scan, 5)
    assert mpirun(2, str(cfg), "--quiet").returncode == 0
    state = tmp_path / "out" / "checkpoint" / f"rank{damaged}of2.h5"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    start = time.monotonic()
    proc = mpirun(2, str(cfg), "--quiet", "--resume", "--set", "algorithm.iterations=8")
    assert time.monotonic() - start < 30
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert f"rank {damaged}:" in lines[0] and f"rank{damaged}of2.h5" in lines[0], lines


# ------------------------------------------------------------------ item 2
def rank_pids(tag: str, timeout: float = 60) -> dict[int, int]:
    """PIDs of the ranks whose environment holds ``PTYCHOMPI_TEST_TAG=tag``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"PTYCHOMPI_TEST_TAG={tag}".encode() in env:
                rank = [e for e in env if e.startswith(b"PMI_RANK=")]
                if rank:
                    found[int(rank[0].split(b"=")[1])] = int(entry.name)
        if len(found) == 2:
            return found
        time.sleep(0.2)
    pytest.fail("the ranks did not start")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
@pytest.mark.parametrize(("rank", "signum"), [(1, signal.SIGINT), (0, signal.SIGINT),
                                              (1, signal.SIGTERM)])
def test_signal_to_one_rank_ends_the_job(tmp_path, scan, rank, signum, kill_tree):
    cfg = config(tmp_path, scan, 100_000)
    tag = uuid.uuid4().hex
    proc = subprocess.Popen([str(MPIEXEC), "-n", "2", str(PTYCHOMPI), "run", str(cfg),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(PTYCHOMPI_TEST_TAG=tag),
                            start_new_session=True)
    try:
        pids = rank_pids(tag)
        ckpt = tmp_path / "out" / "checkpoint.h5"
        deadline = time.monotonic() + 60
        while not ckpt.exists() and time.monotonic() < deadline:  # iterating by now
            time.sleep(0.1)
        os.kill(pids[rank], signum)
        start = time.monotonic()
        _, stderr = proc.communicate(timeout=20)
        elapsed = time.monotonic() - start
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    assert elapsed < 10, elapsed
    assert proc.returncode == 128 + signum, stderr
    lines = error_lines(stderr)
    assert lines == [f"ptychompi: interrupted by {signal.Signals(signum).name} on rank {rank}; "
                     "the last checkpoint is kept (continue with --resume)"], stderr
    with h5py.File(tmp_path / "out" / "checkpoint.h5", "r") as f:
        assert f["provenance"].attrs["checkpoint_iteration"] >= 2


def test_ctrl_c_on_mpiexec_says_it_once(tmp_path, scan, kill_tree):
    """Item 14: every rank receives the signal; the line appears once."""
    cfg = config(tmp_path, scan, 100_000)
    proc = subprocess.Popen([str(MPIEXEC), "-n", "2", str(PTYCHOMPI), "run", str(cfg),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(), start_new_session=True)
    try:
        ckpt = tmp_path / "out" / "checkpoint.h5"
        deadline = time.monotonic() + 60
        while not ckpt.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)  # mpiexec forwards it to every rank
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    assert proc.returncode == 130, stderr
    assert len(error_lines(stderr)) == 1 and "interrupted by SIGINT" in stderr, stderr


# ------------------------------------------------------------------ item 4
def test_second_run_into_a_locked_folder_names_the_holder(tmp_path, scan):
    cfg = config(tmp_path, scan, 100_000, every=0)
    first = subprocess.Popen([str(PTYCHOMPI), "run", str(cfg), "--quiet"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=_env(), start_new_session=True)
    try:
        lock = tmp_path / "out" / ".ptychompi.lock"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (lock.exists() and lock.read_text()):
            time.sleep(0.1)
        assert f"pid {first.pid} " in lock.read_text()
        log = (tmp_path / "out" / "ptychompi.log").read_text()
        second = mpirun(2, str(cfg), "--quiet", "--set", "algorithm.iterations=3")
        assert second.returncode == 2, second.stderr
        lines = error_lines(second.stderr)
        assert len(lines) == 1 and "in use by another ptychompi run" in lines[0], lines
        assert f"pid {first.pid} on " in lines[0], lines
        assert not (tmp_path / "out" / "result.h5").exists()
        assert (tmp_path / "out" / "ptychompi.log").read_text().startswith(log)
        assert first.poll() is None  # the first run goes on
    finally:
        os.killpg(first.pid, signal.SIGINT)
        _, stderr = first.communicate(timeout=30)
    assert first.returncode == 130, stderr
    assert stderr.strip().splitlines() == [
        "ptychompi: interrupted by SIGINT; the last checkpoint is kept (continue with --resume)"]
    # the lock went with the process: the folder is free again
    assert mpirun(2, str(cfg), "--quiet", "--set", "algorithm.iterations=3").returncode == 0
