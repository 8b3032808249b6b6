"""The ranks whose tiles hold arrived positions, and the exchange among them.

While a scan is written some tiles have no position yet: their ranks sit out (an engine needs
positions), and the others exchange over a sub-communicator with the tiles renumbered. The
tiles themselves stay those of the whole planned scan.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ...parallel.tiling import Tile


def active_tiles(tiles: list[Tile], active: list[int]) -> list[Tile]:
    """``tiles`` of the ranks ``active`` (sorted world ranks), renumbered 0..len-1, with
    neighbours and halos among them only."""
    new = {r: i for i, r in enumerate(active)}
    out = []
    for r in active:
        t = tiles[r]
        out.append(dataclasses.replace(
            t, rank=new[r], neighbours=[new[n] for n in t.neighbours if n in new],
            halos={new[n]: b for n, b in t.halos.items() if n in new}))
    return out


class ActiveGroup:
    """The sub-communicator of the active ranks and this rank's exchange in it (None when
    this rank sits out). Rebuilt (collective over ``comm``) only when the set changes."""

    def __init__(self) -> None:
        self.ranks: list[int] = []
        self.comm: Any | None = None
        self.exchange: Any | None = None
        self._owned = False  # self.comm was split off (and is freed here)

    def update(self, comm: Any | None, rank: int, flags: list[bool], tiles: list[Tile],
               backend: Any, cuda_aware: str) -> bool:
        """Follow the active ``flags`` (one per world rank); True when the group changed."""
        from ..api import _make_exchange  # noqa: PLC0415

        ranks = [r for r, f in enumerate(flags) if f]
        if ranks == self.ranks:
            return False
        self.close()
        self.ranks = ranks
        if comm is None or comm.Get_size() == 1:
            self.exchange = _make_exchange(None, tiles, rank, backend, cuda_aware)
            return True
        if len(ranks) == comm.Get_size():
            sub = comm
        else:
            from mpi4py import MPI  # noqa: PLC0415

            sub = comm.Split(0 if flags[rank] else MPI.UNDEFINED, rank)
            if sub == MPI.COMM_NULL:
                sub = None
        self.comm = sub
        self._owned = sub is not None and sub is not comm
        if flags[rank] and sub is not None:
            self.exchange = _make_exchange(sub, active_tiles(tiles, ranks), ranks.index(rank),
                                           backend, cuda_aware)
        return True

    @property
    def root(self) -> int:
        """The world rank that speaks for the group (its lowest)."""
        return self.ranks[0]

    def close(self) -> None:
        if self.exchange is not None and hasattr(self.exchange, "close"):
            self.exchange.close()
        self.exchange = None
        if self.comm is not None and self._owned:
            self.comm.Free()
        self.comm = None
        self._owned = False
