"""MPI: LSQML's spatially stratified batches (``engines/batch_layout.py``, issue 20).

Run with ``mpiexec -n N python -m pytest --with-mpi tests/mpi/test_lsqml_batches_mpi.py`` for
N = 1 to 4: the batches are the one-rank batches on any rank count, so n ranks follow one
rank, and they split more evenly over the tiles than random batches.
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
FRAME, GRID, STEP_PX, PROBE_PX = 64, 10, 8, 20
ITERATIONS = 6
EXACT_SINGLE = 1e-4  # as tests/mpi/test_invariance.py
SIM = simulate(frame=FRAME, grid=GRID, step_px=STEP_PX, probe_diameter_px=PROBE_PX,
               photons=1e6, seed=0)


def scan() -> ArrayScan:
    return SIM.as_scan()


def config() -> dict:
    return {"algorithm": {"name": "lsqml", "iterations": ITERATIONS, "seed": 0,
                          "probe_diameter_m": PROBE_PX * SIM.pixel_size_m},
            "parallel": {"device": "cpu", "share_frequency": 1}}


def run(stratified: bool, here: MPI.Comm | None) -> tuple[np.ndarray, np.ndarray, list, list]:
    """Object, probe, every iteration's global batches, and each rank's frames."""
    r = ptychompi.Reconstruction(config(), here, scan=scan())
    r.engine.stratified = stratified
    parts = []
    for _ in range(ITERATIONS):
        r.step()
        parts.append([p.copy() for p in r.engine._parts])
    frames = (comm.allgather(r.engine.data.indices) if here is not None
              else [r.engine.data.indices])
    out = (r.object, r.probe, parts, frames)
    r.close()
    return out


def imbalance(parts: list, frames: list) -> float:
    """Mean over batches of (most members on a rank) / (mean members per rank)."""
    owner = np.zeros(GRID * GRID, np.int64)
    for k, idx in enumerate(frames):
        owner[idx] = k
    ratios = [np.bincount(owner[p], minlength=len(frames)).max() * len(frames) / len(p)
              for batches in parts for p in batches]
    return float(np.mean(ratios))


@pytest.mark.mpi
def test_stratified_batches_follow_one_rank_and_balance() -> None:
    obj, probe, parts, frames = run(True, comm)
    _, _, random_parts, _ = run(False, comm)
    figures = None
    if rank == 0:
        ref_obj, ref_probe, ref_parts, _ = run(True, None)
        for a, b in zip(parts, ref_parts, strict=True):  # the one-rank batches
            for x, y in zip(a, b, strict=True):
                np.testing.assert_array_equal(x, y)
        figures = (float(np.linalg.norm(obj - ref_obj) / np.linalg.norm(ref_obj)),
                   float(np.linalg.norm(probe - ref_probe) / np.linalg.norm(ref_probe)),
                   imbalance(parts, frames), imbalance(random_parts, frames))
        print(f"\n[stratified] ranks={size} vs one rank: object={figures[0]:.2e} "
              f"probe={figures[1]:.2e}; batch imbalance {figures[2]:.3f} "
              f"(random {figures[3]:.3f})", flush=True)
    figures = comm.bcast(figures, root=0)
    assert max(figures[:2]) <= EXACT_SINGLE, figures
    if size > 1:
        assert figures[2] < figures[3], figures
