"""MPI: LSQML on ranks that disagree about sub-pixel shifts (issue 20).

Run with ``mpiexec -n N python -m pytest --with-mpi tests/mpi/test_lsqml_shifts_mpi.py`` for
N = 2, 3, 4. Only the scan's first corner has fractional positions, so some tiles hold whole
positions only and decide on their own that they need no shifts; the batches (drawn from
every frame's shift) must still be the same on every rank: no hang, and the one-rank result.
"""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

import ptychompi
from ptychompi.data.scan import ArrayScan
from ptychompi.sim.simulate import simulate

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
FRAME, GRID, STEP_PX, PROBE_PX = 64, 8, 8, 20
ITERATIONS = 6
EXACT_SINGLE = 1e-4  # as tests/mpi/test_invariance.py
SIM = simulate(frame=FRAME, grid=GRID, step_px=STEP_PX, probe_diameter_px=PROBE_PX,
               photons=1e6, seed=0, jitter_px=0.0)


def scan() -> ArrayScan:
    """The whole-pixel raster with fractional positions in its first 2 x 2 corner only."""
    px = SIM.positions_px.copy()
    corner = (np.arange(len(px)) // GRID < 2) & (np.arange(len(px)) % GRID < 2)
    px[corner] += (0.375, 0.25)
    return SIM.as_scan(px)


def config() -> dict:
    return {"algorithm": {"name": "lsqml", "iterations": ITERATIONS, "seed": 0,
                          "probe_diameter_m": PROBE_PX * SIM.pixel_size_m},
            "parallel": {"device": "cpu", "share_frequency": 1}}


@pytest.mark.mpi
def test_tiles_without_shifts_follow_one_rank() -> None:
    if size < 2:
        pytest.skip("needs 2 or more ranks (a tile of whole positions beside one of shifts)")
    r = ptychompi.Reconstruction(config(), comm, scan=scan())
    flags = comm.allgather(bool(r.engine.use_subpixel))
    assert any(flags) and not all(flags), flags  # the ranks disagree, as intended
    r.step(ITERATIONS)
    obj, probe = r.object, r.probe
    r.close()
    if rank == 0:
        ref = ptychompi.Reconstruction(config(), None, scan=scan())
        ref.step(ITERATIONS)
        d_obj = np.abs(obj - ref.object).max() / np.abs(ref.object).max()
        d_probe = np.abs(probe - ref.probe).max() / np.abs(ref.probe).max()
        ref.close()
        assert d_obj < EXACT_SINGLE and d_probe < EXACT_SINGLE, (d_obj, d_probe)
    comm.Barrier()
