"""The exchange of one rank (:class:`SerialExchange`: halo sums are the identity) and the
records both exchanges share: the communication accounting and a started reduction."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .failures import agree
from .tiling import Tile


@dataclass
class ExchangeStats:
    """Communication accounting of one rank.

    ``bytes_sent`` counts every payload this rank hands to MPI (halo buffers, reduction and
    gather inputs); ``halo_bytes`` the halo-sum part alone; ``seconds`` the wall time inside
    MPI calls (and host staging copies); ``collectives`` the MPI calls made.
    """

    bytes_sent: int = 0
    seconds: float = 0.0
    halo_sums: int = 0
    reductions: int = 0
    halo_bytes: int = 0
    halo_messages: int = 0
    collectives: int = 0
    checks: int = 0


class Pending:
    """A reduction in flight (:meth:`MPIExchange.allreduce_start`): :meth:`wait` returns its
    result (at once when it was computed already)."""

    def __init__(self, result: Any, request: Any = None, stats: ExchangeStats | None = None,
                 send: Any = None) -> None:
        self._result, self._request, self._stats = result, request, stats
        self._send = send  # the input buffer MPI reads until the request completes

    def wait(self) -> Any:
        if self._request is not None:
            t0 = time.perf_counter()
            self._request.Wait()
            if self._stats is not None:
                self._stats.seconds += time.perf_counter() - t0
            self._request = self._send = None
        return self._result


class SerialExchange:
    """The one-rank exchange: halo sums are the identity, reductions return their input."""

    rank = 0
    size = 1

    def __init__(self, tile: Tile, backend: Any) -> None:
        self.tile = tile
        self.backend = backend
        self.stats = ExchangeStats()

    def halo_sum(self, *arrays: Any) -> None:
        """Add, in place over each halo, the neighbours' arrays (shape (..., H, W) of the box)."""
        self.stats.halo_sums += 1

    def allreduce(self, value: Any, op: str = "sum") -> Any:
        """Sum (or max/min) over ranks of an array or scalar; same type back."""
        if op not in ("sum", "max", "min"):
            raise ValueError(f"allreduce op {op!r}: use sum, max or min")
        self.stats.reductions += 1
        return value

    def allreduce_start(self, value: Any) -> Pending:
        """The sum over ranks of an array, as a :class:`Pending` (here: the array)."""
        self.stats.reductions += 1
        return Pending(value)

    def allgather(self, values: np.ndarray) -> np.ndarray:
        """Concatenation over ranks (in rank order) of 1-D host arrays."""
        return np.asarray(values)

    def check(self, error: BaseException | None = None) -> None:
        """Collective failure check: re-raise a problem seen on any rank on every rank."""
        self.stats.checks += 1
        agree(None, error)

    def timer(self) -> float:
        return time.perf_counter()

    def close(self) -> None:
        """Release communication resources (none here)."""
