"""MPI: the position refinement's misfit guard halts alike on every rank count (issue 18).

Run with ``mpiexec -n N python -m pytest --with-mpi tests/mpi/test_position_guard_mpi.py``.
On the real PETRA III near-field scan LSQML's refinement spoils the fit and the guard halts it,
returning every position to its input (tests/unit/test_position_guard.py). The decision comes
from the global errors, so N ranks halt in the same iteration as rank 0 alone, and with
``share_frequency: 1`` end with the same object and probe.
"""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

import ptychompi

from .common import rel, sleeping_barrier

comm = MPI.COMM_WORLD
rank = comm.Get_rank()

P25 = "petra3-p25-nearfield/PETRAIII_P25_Near_Field_Ptycho.cxi"
ITERATIONS = 25
SAME = 1e-4  # complex64: n ranks vs one rank, as tests/mpi/test_invariance.py


def run(path: str, here: MPI.Comm | None) -> tuple:
    cfg = {"data": {"path": path},
           "geometry": {"propagation": "nearfield", "focus_to_sample_m": 3.65e-3},
           "algorithm": {"name": "lsqml", "iterations": ITERATIONS, "probe_update_start": 1,
                         "batch_size": 20, "seed": 0,
                         "position_correction": {"enabled": True}},
           "parallel": {"device": "cpu", "share_frequency": 1}}
    r = ptychompi.Reconstruction(cfg, here)
    r.run()
    refiner = r.engine.refiner
    out = (r.object, r.probe, r.refined_positions(), np.asarray(r.positions),
           refiner.halted, refiner.guard.first_move)
    r.close()
    return out


@pytest.mark.mpi
def test_the_guard_halts_alike_on_n_ranks(shared_data) -> None:
    path = str(shared_data / P25)
    ref = run(path, None) if rank == 0 else None
    sleeping_barrier()
    obj, probe, refined, given, halted, first = run(path, comm)
    figures = {}
    if rank == 0:
        figures = {"object": rel(obj, ref[0]), "probe": rel(probe, ref[1]),
                   "back_px": float(np.abs(refined - given).max()),
                   "halted": [ref[4], halted], "first_move": [ref[5], first]}
        print(f"\n[position guard] ranks={comm.Get_size()}: {figures}", flush=True)
    figures = comm.bcast(figures, root=0)
    assert figures["halted"] == [True, True], figures
    assert figures["first_move"][0] == figures["first_move"][1], figures
    assert figures["back_px"] <= 1e-9, figures
    assert figures["object"] <= SAME, figures
    assert figures["probe"] <= SAME, figures
