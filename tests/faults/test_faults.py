"""Fault injection (issue 21): kill -9, signals, a disk that fills, damaged files; then resume.

Every case runs the real command line (``driver.py`` injects the fault into ``ptychompi``),
under a timeout, and checks that the run ends (no hang) with one line, that no half-written
file is left, and that continuing afterwards (``--resume``, or again from the start where no
checkpoint was written yet) gives a result bit-identical to an uninterrupted run on the same
rank count. Scans are tiny (64 px frames, 8x8 positions, DM, 6 iterations, checkpoints every
2); the whole file runs in about a minute and a half on two cores.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

BIN = Path(sys.executable).parent
MPIEXEC = BIN / "mpiexec"
DRIVER = Path(__file__).with_name("driver.py")
ITERATIONS, EVERY = 6, 2
FORMATS = ["hdf5", "csv", "png"]
TIMEOUT = 90
RNG = random.Random(21)  # the "random" iterations, the same on every run of the suite

pytestmark = pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec beside the interpreter")


# ----------------------------------------------------------------------------- helpers
def _env(fault: dict | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "HYDRA_"))}
    env["PTYCHOMPI_FAULT"] = json.dumps(fault or {})
    return env


def run(cfg: Path, ranks: int, *extra: str, fault: dict | None = None,
        timeout: float = TIMEOUT) -> tuple[subprocess.CompletedProcess, float]:
    """``ptychompi run CFG`` through the driver; fails the test on a hang."""
    cmd = [sys.executable, str(DRIVER), "run", str(cfg), "--quiet", *extra]
    if ranks > 1:
        cmd = [str(MPIEXEC), "-n", str(ranks), *cmd]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=_env(fault))
    except subprocess.TimeoutExpired:
        pytest.fail(f"hang: {cmd} still running after {timeout} s")
    return proc, time.monotonic() - start


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("ptychompi:")]


def arrays(result: Path) -> tuple[np.ndarray, ...]:
    with h5py.File(result, "r") as f:
        return f["object"][()], f["probe"][()], f["error"][()]


def assert_same_result(out: Path, reference: Path) -> None:
    got, want = arrays(out / "result.h5"), arrays(reference / "result.h5")
    assert len(got[2]) == ITERATIONS
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape and np.array_equal(a, b)
    for ref in reference.glob("result_*"):
        assert (out / ref.name).read_bytes() == ref.read_bytes(), ref.name


def assert_nothing_torn(out: Path, reference: Path | None = None,
                        temporaries: bool = False) -> None:
    """Every HDF5 file opens; every export present is complete; no temporary is left, except
    (``temporaries``) after a kill, which can land in the middle of any rank's write: the
    next run in the folder removes them."""
    if not temporaries:
        assert not [p for p in out.rglob("*") if ".tmp-" in p.name], sorted(out.rglob("*"))
    for p in out.rglob("*.h5"):
        with h5py.File(p, "r") as f:
            assert len(f.keys()) > 0, p
    if reference is not None:
        for p in out.glob("result_*"):
            assert p.read_bytes() == (reference / p.name).read_bytes(), p.name


def assert_torn_temporary(out: Path) -> None:
    """A kill mid-write left a temporary (proof the fault hit a write), never a torn file."""
    assert [p for p in out.rglob("*") if ".tmp-" in p.name], sorted(out.rglob("*"))


def continue_run(cfg: Path, ranks: int, out: Path) -> subprocess.CompletedProcess:
    """What a user does next: --resume from a checkpoint, else run again from the start."""
    extra = ("--resume",) if (out / "checkpoint.h5").exists() else ()
    proc, _ = run(cfg, ranks, *extra)
    assert proc.returncode == 0, proc.stderr
    return proc


def write_config(folder: Path, scan: Path, out: Path, formats: list[str] = FORMATS) -> Path:
    cfg = {"data": {"path": str(scan)},
           "algorithm": {"name": "dm", "iterations": ITERATIONS, "probe_diameter_m": 1.17e-6},
           "parallel": {"device": "cpu"},
           "output": {"directory": str(out), "checkpoint_every": EVERY, "formats": formats,
                      "live_every": 0}}
    path = folder / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, scan) -> dict[int, Path]:
    """Uninterrupted runs on 1 and 2 ranks."""
    refs = {}
    for ranks in (1, 2):
        folder = tmp_path_factory.mktemp(f"ref{ranks}")
        cfg = write_config(folder, scan, folder / "out")
        proc, _ = run(cfg, ranks)
        assert proc.returncode == 0, proc.stderr
        refs[ranks] = folder / "out"
    return refs


# ----------------------------------------------------------------------------- kill -9
@pytest.mark.parametrize(("ranks", "victim"), [(2, 0), (2, 1), (1, 0)])
def test_kill_a_rank_at_an_iteration_then_resume(tmp_path, scan, reference, ranks, victim):
    iteration = RNG.randint(EVERY + 1, ITERATIONS - 1)
    out = tmp_path / "out"
    cfg = write_config(tmp_path, scan, out)
    proc, elapsed = run(cfg, ranks, fault={"kind": "kill", "rank": victim,
                                           "iteration": iteration})
    assert proc.returncode != 0 and elapsed < 60, proc.stderr
    assert not (out / "result.h5").exists()
    assert_nothing_torn(out, temporaries=True)
    continue_run(cfg, ranks, out)
    assert_nothing_torn(out)
    assert_same_result(out, reference[ranks])


@pytest.mark.parametrize(("where", "victim"), [("state", 1), ("checkpoint", 0)])
def test_kill_during_a_checkpoint_write_then_resume(tmp_path, scan, reference, where, victim):
    out = tmp_path / "out"
    cfg = write_config(tmp_path, scan, out)
    proc, _ = run(cfg, 2, fault={"kind": "kill_writing", "where": where, "rank": victim,
                                 "iteration": 2 * EVERY})
    assert proc.returncode != 0, proc.stderr
    assert_torn_temporary(out)
    with h5py.File(out / "checkpoint.h5", "r") as f:  # the previous checkpoint is whole
        assert f["provenance"].attrs["checkpoint_iteration"] == EVERY
    continue_run(cfg, 2, out)
    assert_nothing_torn(out)  # the resumed run removed the killed run's temporaries
    assert_same_result(out, reference[2])


# ----------------------------------------------------------------------------- signals
@pytest.mark.parametrize(("victim", "signum"), [(1, signal.SIGINT), (0, signal.SIGTERM)])
def test_signal_to_one_rank_then_resume(tmp_path, scan, reference, victim, signum):
    iteration = RNG.randint(EVERY + 1, ITERATIONS - 1)
    out = tmp_path / "out"
    cfg = write_config(tmp_path, scan, out)
    proc, elapsed = run(cfg, 2, fault={"kind": "signal", "rank": victim, "signum": signum,
                                       "iteration": iteration})
    assert proc.returncode == 128 + signum, proc.stderr
    assert elapsed < 30, elapsed
    assert len(error_lines(proc.stderr)) == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert_nothing_torn(out, temporaries=True)
    continue_run(cfg, 2, out)
    assert_nothing_torn(out)
    assert_same_result(out, reference[2])


# ----------------------------------------------------------------------------- full disk
@pytest.fixture
def disk(tmp_path) -> tuple[Path, str]:
    """A small tmpfs (root) or, where mounting is not allowed, a plain folder with ENOSPC
    injected into the writers."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                          capture_output=True) if shutil.which("mount") else None
    mounted = made is not None and made.returncode == 0
    yield mount, "fill" if mounted else "enospc"
    if mounted:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _writes(tmp: Path, scan: Path, ranks: int) -> list[str]:
    """The file writes rank 0 makes in a run (by name, in order)."""
    trace = tmp / "trace.txt"
    cfg = write_config(tmp, scan, tmp / "count")
    proc, _ = run(cfg, ranks, fault={"kind": "enospc", "event": 0, "trace": str(trace)})
    assert proc.returncode == 0, proc.stderr
    return trace.read_text().split()


WRITES_1 = 2 * (ITERATIONS // EVERY - 1) + 1 + 2 + 3  # states+checkpoints, result, csv, png


@pytest.mark.parametrize(("ranks", "events"), [(1, list(range(1, WRITES_1 + 1))),
                                               (2, [1, 5])])
def test_disk_fills_at_each_write_then_continue(tmp_path, scan, reference, disk, ranks,
                                                events):
    mount, kind = disk
    names = _writes(tmp_path, scan, ranks)
    assert len(names) == WRITES_1, names
    for event in events:
        out = mount / f"out{event}"
        cfg = write_config(tmp_path, scan, out)
        filler = mount / "filler"
        proc, _ = run(cfg, ranks, fault={"kind": kind, "event": event,
                                         "filler": str(filler)})
        where = f"disk full at write {event} ({names[event - 1]})"
        assert proc.returncode == 2, (where, proc.stderr)
        assert "Traceback" not in proc.stderr, (where, proc.stderr)
        lines = error_lines(proc.stderr)
        assert len(lines) == 1 and "No space left on device" in lines[0], (where, lines)
        assert_nothing_torn(out, reference[ranks])
        filler.unlink(missing_ok=True)  # the user frees space and continues
        if names[event - 1].startswith("result_"):  # the result is whole: export again
            for fmt in ("csv", "png"):
                exported = subprocess.run([str(BIN / "ptychompi"), "export",
                                           str(out / "result.h5"), "--to", fmt],
                                          capture_output=True, text=True, timeout=TIMEOUT)
                assert exported.returncode == 0, exported.stderr
        else:
            continue_run(cfg, ranks, out)
        assert_same_result(out, reference[ranks])
        shutil.rmtree(out)


def test_space_check_counts_every_export(tmp_path, scan, disk):
    """Item 3: on a disk too small for the CSV and TIFF exports the run stops before
    computing, instead of failing halfway through the exports."""
    mount, kind = disk
    if kind != "fill":
        pytest.skip("needs a real small file system (tmpfs: root)")
    small = mount / "small"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=560k", "tmpfs", str(mount)],
                   check=True)
    try:
        small.mkdir()
        cfg = write_config(tmp_path, scan, small, ["hdf5", "tiff", "png", "csv"])
        proc, _ = run(cfg, 1)
        assert proc.returncode == 2, proc.stderr
        lines = error_lines(proc.stderr)
        assert len(lines) == 1 and "free" in lines[0], lines
        assert not [p for p in small.iterdir() if p.name.startswith("result")]
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


# ----------------------------------------------------------------------------- damaged
def test_truncated_state_file_then_resume(tmp_path, scan, reference):
    out = tmp_path / "out"
    cfg = write_config(tmp_path, scan, out)
    proc, _ = run(cfg, 2, fault={"kind": "kill", "rank": 1, "iteration": ITERATIONS - 1})
    assert proc.returncode != 0
    state = out / "checkpoint" / "rank1of2.h5"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    proc, elapsed = run(cfg, 2, "--resume")
    assert proc.returncode == 2 and elapsed < 30, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "rank1of2.h5" in lines[0], lines
    shutil.rmtree(out / "checkpoint")  # what the line says to do
    proc, _ = run(cfg, 2, "--resume")
    assert proc.returncode == 0, proc.stderr
    err = arrays(out / "result.h5")[2]  # continued from the global object: not bit for bit,
    assert len(err) == ITERATIONS and np.all(np.isfinite(err))  # but it goes on converging
    assert err[-1] < err[2 * EVERY - 1]


def test_truncated_checkpoint_then_start_again(tmp_path, scan, reference):
    out = tmp_path / "out"
    cfg = write_config(tmp_path, scan, out)
    proc, _ = run(cfg, 2, fault={"kind": "kill", "rank": 0, "iteration": ITERATIONS - 1})
    assert proc.returncode != 0
    ckpt = out / "checkpoint.h5"
    ckpt.write_bytes(ckpt.read_bytes()[:4096])
    proc, elapsed = run(cfg, 2, "--resume")
    assert proc.returncode == 2 and elapsed < 30, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "checkpoint.h5" in lines[0], lines
    proc, _ = run(cfg, 2)  # a fresh start replaces the damaged checkpoint
    assert proc.returncode == 0, proc.stderr
    assert_same_result(out, reference[2])


# ----------------------------------------------------------------------------- set-up
@pytest.mark.parametrize(("where", "victim"), [("inputs", 1), ("engine", 1), ("engine", 0)])
def test_one_rank_failing_while_the_engine_is_built_ends_every_rank(tmp_path, scan, where,
                                                                    victim):
    """Out of memory on one rank while the starting guesses are made (agreed on by every
    rank) or inside the engine's constructor, after its first collectives (the runner's
    abort): the job ends at once with one line and no result, never a hang."""
    out = tmp_path / "out"
    cfg = write_config(tmp_path, scan, out)
    settings = yaml.safe_load(cfg.read_text())
    settings["algorithm"]["name"] = "lsqml"
    cfg.write_text(yaml.safe_dump(settings))
    proc, elapsed = run(cfg, 2, fault={"kind": "raise", "where": where, "rank": victim},
                        timeout=60)
    assert proc.returncode != 0 and elapsed < 45, proc.stderr
    lines = error_lines(proc.stderr)
    assert lines and all("out of memory on this rank" in ln for ln in lines), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not (out / "result.h5").exists()
