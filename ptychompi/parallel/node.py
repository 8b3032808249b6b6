"""The ranks that share a node (one host's memory): the one place that splits by node."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def node_comm(comm: Any) -> Iterator[Any]:
    """The communicator of the ranks of ``comm`` on this node; freed on leaving. Collective."""
    from mpi4py import MPI  # noqa: PLC0415

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        yield node
    finally:
        node.Free()


def node_rank_and_size(comm: Any | None) -> tuple[int, int]:
    """(rank among the ranks on this node, how many ranks are on it); ``(0, 1)`` alone."""
    if comm is None or comm.Get_size() == 1:
        return 0, 1
    with node_comm(comm) as node:
        return node.Get_rank(), node.Get_size()


def spans_nodes(comm: Any | None) -> bool:
    """Whether the ranks of ``comm`` run on more than one node (every rank finds the same:
    its node holds fewer than all ranks exactly when there are several). Collective."""
    return node_rank_and_size(comm)[1] < (1 if comm is None else comm.Get_size())
