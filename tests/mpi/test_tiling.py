"""MPI: every rank computes the same decomposition without talking to the others."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from mpi4py import MPI

from ptychompi.parallel.tiling import decompose

comm = MPI.COMM_WORLD


def _scan() -> np.ndarray:
    k = np.arange(400)
    radius, theta = 5.0 * np.sqrt(k), k * np.deg2rad(137.508)
    pos = np.stack([radius * np.sin(theta), radius * np.cos(theta)], axis=1)
    return pos - pos.min(axis=0)


def _digest(tiles: list) -> str:
    h = hashlib.sha256()
    for t in tiles:
        h.update(np.asarray(t.indices, np.int64).tobytes())
        h.update(repr((t.rank, t.box, t.neighbours, sorted(t.halos.items()), t.grid,
                       t.coords)).encode())
    return h.hexdigest()


@pytest.mark.mpi
def test_same_decomposition_on_every_rank() -> None:
    tiles = decompose(_scan(), (48, 48), comm.Get_size())
    digests = comm.allgather(_digest(tiles))
    assert len(set(digests)) == 1
    assert len(tiles) == comm.Get_size()
    mine = tiles[comm.Get_rank()]
    counts = comm.allgather(len(mine.indices))
    assert max(counts) - min(counts) <= 1 and sum(counts) == 400
