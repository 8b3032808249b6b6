"""MPI: ``run --follow`` on several ranks (``mpiexec -n N python -m pytest --with-mpi``).

The result depends only on the arrival schedule, not on the rank count: a recorded schedule
replayed on ``COMM_WORLD`` gives the object and probe of the same schedule on rank 0 alone
(ranks whose tiles have no row yet sit out meanwhile). And a writer process writes the rows
while every rank follows them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from ptychompi.app.follow import build_follow
from ptychompi.config import config_from_dict
from ptychompi.sim.simulate import simulate

from .common import sleeping_barrier

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
FRAME, GRID, STEP, PROBE = 64, 8, 8, 20
ITERATIONS = 16
SCHEDULE = [[0, 1], [2, 2], [4, 3], [6, 5], [8, 8]]
OUT_OF_ORDER = [[0, 2, 3, 6], [3, 5, 0, 1, 3, 6, 7], [6, 8]]  # rows used when complete
EXACT_SINGLE = 1e-4  # complex64: n ranks vs one rank, as tests/mpi/test_invariance.py
WRITER = Path(__file__).resolve().parents[1] / "unit" / "follow_writer.py"
SIM = simulate(frame=FRAME, grid=GRID, step_px=STEP, probe_diameter_px=PROBE, seed=0)


@pytest.fixture
def folder():
    path = Path(tempfile.mkdtemp(prefix="follow_mpi_")) if rank == 0 else None
    path = comm.bcast(path, root=0)
    if rank == 0:
        (path / "rows").mkdir()
        np.savez(path / "frames.npz", frames=SIM.frames)
        np.savetxt(path / "pos.csv", SIM.positions_m, delimiter=",")
    comm.Barrier()
    yield path
    comm.Barrier()
    if rank == 0:
        shutil.rmtree(path, ignore_errors=True)


def _config(path: Path, engine: str, **follow: object) -> dict:
    return {"data": {"path": str(path / "rows" / "scan_%03d.h5"),
                     "position_file": str(path / "pos.csv"), "scan_dims": [GRID, GRID],
                     "follow": {"poll_s": 0.05, "timeout_s": 30, **follow}},
            "geometry": {"energy_kev": float(SIM.energy_kev),
                         "distance_m": float(SIM.distance_m),
                         "detector_pixel_m": float(SIM.detector_pixel_m)},
            "algorithm": {"name": engine, "iterations": ITERATIONS, "seed": 0,
                          "probe_diameter_m": float(PROBE * SIM.pixel_size_m)},
            "parallel": {"device": "cpu", "workers": 1},
            "output": {"directory": str(path / "out"), "live_every": 0}}


def _write_all_rows(path: Path) -> None:
    if rank == 0:
        for i in range(GRID):
            with h5py.File(path / "rows" / f"scan_{i + 1:03d}.h5", "w") as f:
                f.create_dataset("/entry/data/data", data=SIM.frames[i * GRID:(i + 1) * GRID])
    comm.Barrier()


@pytest.mark.parametrize("engine, schedule, refine_from",
                         [("dm", SCHEDULE, 20), ("dm", SCHEDULE, 3), ("lsqml", SCHEDULE, 20),
                          ("lsqml", OUT_OF_ORDER, 20)])
def test_replayed_schedule_does_not_depend_on_the_rank_count(folder, engine, schedule,
                                                             refine_from):
    """DM with ``refine_from`` 3 hands over to its refinement while rows still arrive (the
    engines rebuilt after that start in the refinement); with 20, never in 16 iterations."""
    _write_all_rows(folder)
    raw = _config(folder, engine, schedule=schedule)
    raw["algorithm"]["dm"] = {"refine_from": refine_from}
    cfg = config_from_dict(raw)
    reference = None
    if rank == 0:
        with build_follow(cfg, None) as one:
            one.run()
            reference = (one.object, one.probe, one.arrivals.schedule)
    sleeping_barrier()
    with build_follow(cfg, comm) as many:
        many.run()
        obj, probe = many.object, many.probe
        assert many.arrivals.schedule == schedule
    if rank == 0:
        ref_obj, ref_probe, ref_schedule = reference
        assert ref_schedule == schedule
        assert np.linalg.norm(obj - ref_obj) <= EXACT_SINGLE * np.linalg.norm(ref_obj)
        assert np.linalg.norm(probe - ref_probe) <= EXACT_SINGLE * np.linalg.norm(ref_probe)


def test_every_rank_follows_a_writer(folder):
    writer = None
    if rank == 0:
        writer = subprocess.Popen([sys.executable, str(WRITER), str(folder / "frames.npz"),
                                   str(folder / "rows"), "--rows", str(GRID), "--delay", "0.2"],
                                  stdout=subprocess.DEVNULL)
    cfg = config_from_dict(_config(folder, "dm"))
    with build_follow(cfg, comm) as r:
        r.run()
        assert r.decision.rows == GRID and r.frames_in == GRID * GRID
        assert len(r.arrivals.schedule) > 1
        errors = np.asarray(r.metrics["error"])
        obj = r.object
    assert len(errors) == ITERATIONS and np.all(np.isfinite(errors))
    if rank == 0:
        assert writer.wait(timeout=30) == 0
        assert obj.shape == tuple(r.layout.object_shape) and np.all(np.isfinite(obj))
