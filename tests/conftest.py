"""Shared pytest fixtures."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ``shared/data`` folder beside the repository (X/clone and X/shared in CI).

    Where it cannot be (the offline GPU check carries no data), ``PTYCHOMPI_SKIP_SHARED_DATA=1``
    skips the tests that need it; otherwise a missing folder fails them.
    """
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir() and os.environ.get("PTYCHOMPI_SKIP_SHARED_DATA") == "1":
        pytest.skip(f"no shared data at {path} (PTYCHOMPI_SKIP_SHARED_DATA=1)")
    return path


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated CXI scan (64² frames, 8 x 8 raster), once per test module; a module
    that defines its own ``scan`` fixture uses that instead."""
    from ptychompi.sim.simulate import simulate_to_files  # noqa: PLC0415

    folder = tmp_path_factory.mktemp("scan")
    simulate_to_files(str(folder / "scan.cxi"), frame=64, grid=8, step_px=8,
                      probe_diameter_px=20, photons=1e6, seed=0)
    return folder / "scan.cxi"


@pytest.fixture(scope="session")
def as_array_scan():
    """``as_array_scan(sim)``: a :class:`ptychompi.sim.simulate.Simulation` as an in-memory scan."""
    from ptychompi.data.scan import ArrayScan, ScanGeometry  # noqa: PLC0415

    def convert(sim) -> ArrayScan:
        return ArrayScan(path="sim", n_frames=len(sim.frames), frame_shape=sim.frames.shape[1:],
                         dtype=np.float32, positions_m=sim.positions_m, frames=sim.frames,
                         geometry=ScanGeometry(sim.wavelength_m, sim.distance_m,
                                               sim.detector_pixel_m))

    return convert


def _children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux ``/proc``), read before anything is killed."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


@pytest.fixture(scope="session")
def kill_tree():
    """``kill_tree(proc)``: SIGKILL a launcher and every process under it (MPICH's ranks run in
    sessions of their own, out of the launcher's group), and return once all are dead, so no
    rank writes after the call."""
    def kill(proc: subprocess.Popen, timeout: float = 30) -> None:
        pids = [*_children(proc.pid), proc.pid]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout)
        deadline = time.monotonic() + timeout
        while not all(_gone(pid) for pid in pids):
            if time.monotonic() > deadline:
                raise AssertionError(f"processes {pids} outlived SIGKILL by {timeout} s")
            time.sleep(0.05)

    return kill
