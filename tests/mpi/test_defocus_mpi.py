"""MPI: the starting probe's side of the focus (the shadow drift's pair scores, summed over
ranks) is the one a single process reads, so the start is the same on every rank count.

Run with ``mpiexec -n N python -m pytest --with-mpi tests/mpi/test_defocus_mpi.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from ptychompi.app.api import Reconstruction
from ptychompi.model import initial
from ptychompi.sim.evaluate import default_config
from ptychompi.sim.matrix import Case, make_scan

comm = MPI.COMM_WORLD


def _start(scan, world) -> np.ndarray:
    recon = Reconstruction(default_config("lsqml", 1), comm=world, scan=scan.as_scan())
    probe = np.asarray(recon.engine.backend.asnumpy(recon.engine.probe))
    recon.close()
    return probe


@pytest.mark.mpi
@pytest.mark.parametrize("mirrored", [False, True])
def test_start_on_every_rank_count_is_the_serial_one(mirrored, monkeypatch):
    """The Gaussian beam reads the negative side, its mirror the positive (usual) one: the
    start on COMM_WORLD equals the one-process start, and differs from the usual side's start
    exactly where the data show the other side."""
    scan = make_scan(Case(probe="gaussian", mirrored=mirrored).scaled(12, 64))
    world = _start(scan, comm)
    alone = usual = None
    if comm.rank == 0:
        alone = _start(scan, None)
        monkeypatch.setattr(initial, "defocus_sign", lambda *args: 1)
        usual = _start(scan, None)
    alone, usual = comm.bcast((alone, usual), root=0)
    scale = np.abs(alone).max()
    np.testing.assert_allclose(world, alone, rtol=0, atol=1e-5 * scale)
    differs = np.abs(usual - alone).max() > 0.1 * scale
    assert differs != mirrored
