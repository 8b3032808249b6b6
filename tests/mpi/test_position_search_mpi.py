"""MPI: the search for stuck positions moves the same positions by the same offsets on every
rank count (issue 18, :mod:`ptychompi.engines.position_search`).

Run with ``mpiexec -n N python -m pytest --with-mpi tests/mpi/test_position_search_mpi.py``.
LSQML forms the object from the true positions; then four positions, one in each quarter of
the scan, are moved by whole pixels, and the next position update's search (the candidates
from the misfits of all ranks) brings them back. N ranks with ``share_frequency: 1`` move the
same positions by the same offsets as rank 0 alone, and end with the same object.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from mpi4py import MPI

import ptychompi
from ptychompi.engines import position_search
from ptychompi.sim.matrix import Case, make_scan

from .common import rel, sleeping_barrier

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()

FORM = 8  # iterations from the true positions before the positions are disturbed
AFTER = 4  # iterations after: the first update (after iteration FORM) searches
SAME = 1e-4  # complex64: n ranks vs one rank, as tests/mpi/test_invariance.py
SIM = make_scan(Case(grid=8, frame=64, diameter_px=20, object="photo"))
# global frame -> whole-pixel displacement (rows, columns): one per quarter of the 8 x 8 scan
PLANTED = {18: (3, -2), 21: (-2, 3), 42: (2, 2), 45: (-3, -1)}


def run(here: MPI.Comm | None, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """The object after the run and the search's moves {global frame: offset} on this
    rank."""
    moves: dict[int, tuple[float, float]] = {}
    search = position_search.search

    def recorded(refiner: Any, engine: Any) -> np.ndarray | None:
        before = np.array(engine.data.positions)
        found = search(refiner, engine)
        if found is not None:
            for j in np.flatnonzero(np.any(found != before, axis=1)):
                moves[int(engine.data.indices[j])] = tuple((found[j] - before[j]).tolist())
        return found

    monkeypatch.setattr(position_search, "search", recorded)
    cfg = {"algorithm": {"name": "lsqml", "iterations": FORM + AFTER, "seed": 0,
                         "batch_size": 16,
                         "position_correction": {"enabled": True, "start": FORM,
                                                 "settle": None, "search_every": 10}},
           "parallel": {"device": "cpu", "share_frequency": 1}}
    r = ptychompi.Reconstruction(cfg, here, scan=SIM.as_scan())
    r.step(FORM)
    engine = r.engine
    disturbed = engine.data.positions.copy()
    for j, g in enumerate(engine.data.indices):
        if int(g) in PLANTED:
            disturbed[j] += PLANTED[int(g)]
    engine.move_positions(disturbed)
    r.step(AFTER)
    obj = r.object
    r.close()
    return obj, moves


@pytest.mark.mpi
def test_the_search_moves_alike_on_n_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    ref = run(None, monkeypatch) if rank == 0 else None
    sleeping_barrier()
    obj, moves = run(comm, monkeypatch)
    everyone = {}
    for part in comm.allgather(moves):
        everyone.update(part)
    figures = {}
    if rank == 0:
        figures = {"object": rel(obj, ref[0]), "one_rank": sorted(ref[1].items()),
                   "n_ranks": sorted(everyone.items())}
        print(f"\n[position search] ranks={size}: {figures}", flush=True)
    figures = comm.bcast(figures, root=0)
    one = dict(figures["one_rank"])
    assert sorted(one) == sorted(PLANTED), figures  # the planted positions, and only they
    for g, move in one.items():  # back to within a pixel and a half of the truth (the
        # update before the search has moved them by up to max_shift)
        assert np.hypot(*np.add(PLANTED[g], move)) < 1.5, figures
    assert figures["n_ranks"] == figures["one_rank"], figures
    assert figures["object"] <= SAME, figures
