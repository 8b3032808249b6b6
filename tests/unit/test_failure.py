"""A failure on one rank while another is blocked in a collective ends the run, not hangs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from ptychompi.backends import Backend
from ptychompi.errors import ConfigError
from ptychompi.parallel.exchange import SerialExchange, abort_on_error, make_exchange
from ptychompi.parallel.tiling import decompose

SCRIPT = textwrap.dedent("""
    import time
    from mpi4py import MPI
    from ptychompi.errors import DataError
    from ptychompi.parallel.exchange import abort_on_error

    comm = MPI.COMM_WORLD
    try:
        if comm.Get_rank() == 1:
            time.sleep(0.5)  # rank 0 is in the barrier by now
            raise DataError("frame 37 holds NaN")
        comm.Barrier()  # rank 0 waits here for a rank that never comes
    except Exception as exc:
        abort_on_error(comm, exc)
    print("unreachable", flush=True)
""")


def _mpiexec() -> str | None:
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


@pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec")
def test_abort_on_error_ends_every_rank() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "HYDRA_"))}
    start = time.monotonic()
    proc = subprocess.run([_mpiexec(), "-n", "2", sys.executable, "-c", SCRIPT],
                          capture_output=True, text=True, timeout=30, env=env)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert elapsed < 30
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ptychompi:")]
    assert lines == ["ptychompi: error on rank 1: frame 37 holds NaN"], proc.stderr
    assert "unreachable" not in proc.stdout


def test_abort_on_error_without_mpi(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        abort_on_error(None, ValueError("bad\nvalue"))
    assert info.value.code == 1
    assert capsys.readouterr().err == "ptychompi: error on rank 0: ValueError: bad value\n"


def test_make_exchange_serial_and_bad_option() -> None:
    tiles = decompose(np.array([[0.0, 0.0], [4.0, 4.0]]), (8, 8), 1)
    ex = make_exchange(None, tiles, 0, Backend(np, "cpu"))
    assert isinstance(ex, SerialExchange)
    value = np.ones(3)
    assert ex.allreduce(value) is value and ex.allreduce(2.0, op="max") == 2.0
    with pytest.raises(ConfigError, match="cuda_aware"):
        make_exchange(None, tiles, 0, Backend(np, "cpu"), cuda_aware="maybe")
