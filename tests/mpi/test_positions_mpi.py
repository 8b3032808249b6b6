"""MPI: position refinement keeps rank-count invariance (issue 18).

Run with ``mpiexec -n N python -m pytest --with-mpi tests/mpi/test_positions_mpi.py``. DM and
LSQML with ``share_frequency: 1`` and refinement (per-position moves and the global affine
fit) on N ranks equal the same run by rank 0 alone (``comm=None``) to float32 rounding: the
object, the probe and every refined position.
"""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

import ptychompi
from ptychompi.sim.matrix import Case, make_scan
from ptychompi.sim.position_errors import perturb, rms_error, with_positions

from .common import rel, sleeping_barrier

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()

ITERATIONS = 14
EXACT_SINGLE = 1e-4  # complex64: n ranks vs one rank, as tests/mpi/test_invariance.py
POSITIONS_PX = 1e-4  # the refined positions, px
SIM = make_scan(Case(grid=8, frame=64, diameter_px=24, overlap=0.7, photons=1e7, seed=1))
GIVEN = perturb(SIM.positions_px, "both", np.random.default_rng(2), rms_px=1.5)


def config(engine: str) -> dict:
    # LSQML in batches of 16: with its default (a tenth of these 64 frames) some batch has no
    # frame on one rank, and n ranks then leave one rank's trajectory with or without
    # refinement (a separate LSQML problem, see the README's position refinement section).
    # "dm": with refinement DM is its LSQML refinement from the first iteration (as LSQML:
    # batches of 16), which places the positions between its bins (the default, as "lsqml");
    # "lsqml-exact": placed exactly (position_correction.subpixel_bins: 0); the probe
    # re-centred after every update
    name = engine.split("-")[0]
    algorithm = {"name": name, "iterations": ITERATIONS, "seed": 0, "batch_size": 16,
                 "position_correction": {"enabled": True, "start": 2, "affine": True,
                                         "settle": None}}  # moves from 2 on
    if engine == "lsqml-exact":
        algorithm["position_correction"]["subpixel_bins"] = 0
    # "lsqml-touched": the batches' halo sums over the pixels they touched, the illumination
    # sent (positions between bins each see a probe of their own)
    halo = "touched" if engine == "lsqml-touched" else "auto"
    return {"algorithm": algorithm,
            "parallel": {"device": "cpu", "share_frequency": 1, "halo": halo}}


def run(engine: str, here: MPI.Comm | None) -> tuple:
    r = ptychompi.Reconstruction(config(engine), here,
                                 scan=with_positions(SIM.as_scan(), GIVEN, SIM.pixel_size_m))
    r.step(ITERATIONS)
    out = (r.object, r.probe, r.refined_positions())
    r.close()
    return out


@pytest.mark.mpi
@pytest.mark.parametrize("engine", ["dm", "lsqml", "lsqml-exact", "lsqml-touched"])
def test_refinement_on_n_ranks_equals_one_rank(engine: str) -> None:
    ref = run(engine, None) if rank == 0 else None
    sleeping_barrier()
    obj, probe, positions = run(engine, comm)
    figures = {}
    if rank == 0:
        figures = {"object": rel(obj, ref[0]), "probe": rel(probe, ref[1]),
                   "positions_px": float(np.abs(positions - ref[2]).max()),
                   "moved_rms_px": rms_error(positions, GIVEN),
                   "error_before": rms_error(GIVEN, SIM.positions_px),
                   "error_after": rms_error(positions, SIM.positions_px)}
        text = " ".join(f"{k}={v:.3e}" for k, v in figures.items())
        print(f"\n[positions] ranks={size} {engine}: {text}", flush=True)
    figures = comm.bcast(figures, root=0)
    assert figures["moved_rms_px"] > 0.1, figures  # the positions did move
    assert figures["error_after"] < figures["error_before"], figures
    assert figures["object"] <= EXACT_SINGLE, figures
    assert figures["probe"] <= EXACT_SINGLE, figures
    assert figures["positions_px"] <= POSITIONS_PX, figures
