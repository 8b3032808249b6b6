"""MPI: a resume on another rank count carries the engines' state (issue 18).

Run with ``mpiexec -n N python -m pytest --with-mpi tests/mpi/test_resume_mpi.py``. A run with
position refinement (per-position moves with their momentum, the affine fit, the probe's
reference centroid) checkpointed on m ranks and resumed on n != m ranks ends where the
uninterrupted run on one rank does, to float32 rounding (LSQML, DM; also DM without refinement
before and after its hand-over to LSQML; ``share_frequency: 1``), as
tests/mpi/test_positions_mpi.py bounds n ranks against one.
ePIE's n ranks differ from one rank, so for it: the object momentum's velocity each new tile
starts with is the old tiles' velocity over its box, and the path for another rank count,
taken on the same count, ends bit for bit where the same count's own path does.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from mpi4py import MPI

import ptychompi
from ptychompi.app import checkpoint
from ptychompi.app.checkpoint import resume, state_path, write_checkpoint
from ptychompi.sim.matrix import Case, make_scan
from ptychompi.sim.position_errors import perturb, with_positions

from .common import rel, sleeping_barrier

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()

ITERATIONS = 12
AT = 6  # the checkpoint's iteration
EXACT_SINGLE = 1e-4  # complex64: as tests/mpi/test_positions_mpi.py
POSITIONS_PX = 1e-4
SIM = make_scan(Case(grid=8, frame=64, diameter_px=24, overlap=0.7, photons=1e7, seed=1))
GIVEN = perturb(SIM.positions_px, "both", np.random.default_rng(2), rms_px=1.5)
# (checkpoint ranks, resume ranks): 1 -> N, N -> N-1 (2 -> 1 on two ranks), 2 -> N from 3 on,
# N -> 2 from 4 on
PAIRS = ([(1, size), (size, max(size - 1, 1))] + ([(2, size)] if size > 2 else [])
         + ([(size, 2)] if size > 3 else []))


def config(engine: str) -> dict:
    """As test_positions_mpi: LSQML in batches of 16, position refinement with the affine
    fit, moving from iteration 2 on (settle off); DM's refinement is its LSQML refinement
    from the first iteration. "dm-plain": DM without position refinement, handing over to
    LSQML at iteration 8 (after the checkpoint: its exit waves and best state are carried),
    at 4 in "dm-plain-late" (before it)."""
    name = engine.split("-")[0]
    algorithm = {"name": name, "iterations": ITERATIONS, "seed": 0,
                 "batch_size": None if name == "epie" else 16,
                 "position_correction": {"enabled": "plain" not in engine, "start": 2,
                                         "affine": True, "settle": None}}
    if "plain" in engine:
        algorithm["dm"] = {"refine_from": 4 if engine.endswith("late") else 8,
                           "refine_patience": None, "refine_noise_ratio": None,
                           "refine_earliest": 2}
    return {"algorithm": algorithm, "parallel": {"device": "cpu", "share_frequency": 1}}


def scan() -> object:
    return with_positions(SIM.as_scan(), GIVEN, SIM.pixel_size_m)


def sub(n: int) -> MPI.Comm | None:
    """The first ``n`` ranks' communicator (None on the others); collective."""
    part = comm.Split(0 if rank < n else MPI.UNDEFINED, rank)
    return None if part == MPI.COMM_NULL else part


def shared_folder() -> Path:
    return Path(comm.bcast(tempfile.mkdtemp(prefix="resume-mpi-") if rank == 0 else None))


def checkpointed(engine: str, ranks: int, folder: Path) -> None:
    """Iterations 1..AT on the first ``ranks`` ranks, then a checkpoint in ``folder``."""
    here = sub(ranks)
    try:
        if here is not None:
            with ptychompi.Reconstruction(config(engine), here, scan=scan()) as recon:
                recon.step(AT)
                write_checkpoint(recon, folder)
            here.Free()
    finally:  # the ranks left out wait here, also for a failure
        sleeping_barrier()


def resumed(engine: str, ranks: int, folder: Path, check=None) -> tuple | None:
    """The run resumed on the first ``ranks`` ranks to the end: object, probe and refined
    positions on rank 0 (``check(recon)`` right after the resume, on each of them)."""
    here, out = sub(ranks), None
    try:
        if here is not None:
            with ptychompi.Reconstruction(config(engine), here, scan=scan()) as recon:
                assert resume(recon, folder) == AT
                if check is not None:
                    check(recon)
                recon.run()
                out = (recon.object, recon.probe, recon.refined_positions())
            here.Free()
    finally:  # the ranks left out wait here, also for a failure
        sleeping_barrier()
    return out


def moved(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """The largest difference of two sets of refined positions (px; 0 without refinement)."""
    return 0.0 if a is None and b is None else float(np.abs(a - b).max())


@pytest.mark.mpi
@pytest.mark.parametrize("engine", ["lsqml", "dm", "dm-plain", "dm-plain-late"])
def test_resume_on_another_rank_count_equals_one_rank(engine: str) -> None:
    """"dm-plain": DM's exit waves, best object and probe carried to its hand-over;
    "dm-plain-late": checkpointed in the refinement (LSQML's batches from the carried
    generator)."""
    ref = None
    if rank == 0:
        with ptychompi.Reconstruction(config(engine), None, scan=scan()) as whole:
            whole.run()
            ref = (whole.object, whole.probe, whole.refined_positions())
    figures = {}
    for old, new in PAIRS:
        folder = shared_folder()
        checkpointed(engine, old, folder)
        got = resumed(engine, new, folder)
        if rank == 0:
            figures[f"{old}->{new}"] = {"object": rel(got[0], ref[0]),
                                        "probe": rel(got[1], ref[1]),
                                        "positions_px": moved(got[2], ref[2])}
            shutil.rmtree(folder, ignore_errors=True)
    if rank == 0:
        print(f"\n[resume] ranks={size} {engine}: {figures}", flush=True)
    figures = comm.bcast(figures, root=0)
    for pair in figures.values():
        assert pair["object"] <= EXACT_SINGLE, figures
        assert pair["probe"] <= EXACT_SINGLE, figures
        assert pair["positions_px"] <= POSITIONS_PX, figures


def old_tiles(folder: Path, ranks: int, key: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each old rank's ``key`` and tile box from its state file."""
    out = []
    for r in range(ranks):
        with h5py.File(state_path(folder, r, ranks), "r") as f:
            out.append((f[key][()], f["box"][()]))
    return out


@pytest.mark.mpi
def test_epie_momentum_is_carried_to_the_new_tiles() -> None:
    """Each new tile's velocity (and last object) is the old tiles' over its box: from one
    rank to N, and from N ranks to one (where old tiles overlap, one of theirs: their halo
    sums may differ in rounding)."""
    failures = []
    for old, new in [(1, size), (size, 1)]:
        folder = shared_folder()
        checkpointed("epie", old, folder)
        tiles = {key: old_tiles(folder, old, key) for key in ("momentum_velocity",
                                                              "momentum_last")}

        def check(recon, tiles=tiles, old=old, new=new) -> None:
            momentum = recon.engine.momentum
            r0, c0 = recon.engine.data.origin
            h, w = recon.engine.data.box_shape
            for key, mine in (("momentum_velocity", momentum.velocity),
                              ("momentum_last", momentum.last)):
                if mine is None:
                    failures.append(f"{old}->{new} rank {recon.rank}: no {key}")
                    continue
                mine = np.asarray(mine)
                held = np.zeros((h, w), bool)  # pixels some old tile held
                agrees = np.zeros((h, w), bool)  # ... and one of them with this value
                for value, box in tiles[key]:
                    a0, b0 = max(r0, box[0]), max(c0, box[1])
                    a1, b1 = min(r0 + h, box[2]), min(c0 + w, box[3])
                    if a0 >= a1 or b0 >= b1:
                        continue
                    here = (slice(a0 - r0, a1 - r0), slice(b0 - c0, b1 - c0))
                    want = value[a0 - box[0]:a1 - box[0], b0 - box[1]:b1 - box[1]]
                    held[here] = True
                    agrees[here] |= mine[here] == want
                if not held.any() or not agrees[held].all():
                    failures.append(f"{old}->{new} rank {recon.rank} {key}: "
                                    f"{int((held & ~agrees).sum())} pixels differ")
            if momentum.velocity is None or not np.abs(momentum.velocity).max() > 0:
                failures.append(f"{old}->{new} rank {recon.rank}: no velocity")

        resumed("epie", new, folder, check)
        if rank == 0:
            shutil.rmtree(folder, ignore_errors=True)
    failures = comm.allgather(failures)
    assert not any(failures), failures


@pytest.mark.mpi
@pytest.mark.parametrize("engine", ["epie", "lsqml", "dm-plain"])
def test_other_count_path_on_the_same_count_is_bit_for_bit(engine: str,
                                                           monkeypatch) -> None:
    """The path for another rank count, forced on the same count (no rank's own state
    taken), ends bit for bit where the same count's own path does."""
    folder = shared_folder()
    checkpointed(engine, size, folder)
    own = resumed(engine, size, folder)
    monkeypatch.setattr(checkpoint, "_matching_state", lambda *args: None)
    other = resumed(engine, size, folder)
    same = None
    if rank == 0:
        same = [bool(np.array_equal(a, b)) for a, b in zip(own, other, strict=True)]
        shutil.rmtree(folder, ignore_errors=True)
    same = comm.bcast(same, root=0)
    assert all(same), same
