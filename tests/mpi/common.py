"""Helpers shared by the MPI tests."""

from __future__ import annotations

import time

import numpy as np
from mpi4py import MPI


def sleeping_barrier(comm: MPI.Comm = MPI.COMM_WORLD) -> None:
    """A barrier that sleeps instead of spinning (rank 0 computes alone meanwhile)."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(0.005)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """Relative difference ‖a − b‖ / ‖b‖ in double precision."""
    return float(np.linalg.norm(np.asarray(a, np.complex128) - b)
                 / np.linalg.norm(np.asarray(b, np.complex128)))
