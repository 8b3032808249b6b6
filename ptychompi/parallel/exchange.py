"""Cross-tile sums: the exchange seam the engines see (DESIGN.md section 6).

Two implementations share one interface: :class:`SerialExchange` (one rank: halo sums are the
identity) and :class:`MPIExchange` (halo sums with ``Neighbor_alltoallv`` on a distributed
graph of the tiles whose boxes overlap, reductions with ``Allreduce``). Build either with
:func:`make_exchange`.

Failures follow two paths:

- :func:`agree` (and :meth:`MPIExchange.check`, which calls it) at points that *every* rank
  reaches (after loading data, after an iteration's metrics, before a checkpoint): each rank
  passes the exception it caught (or ``None``); if any rank had one, every rank raises
  :class:`RankFailure` naming the lowest failing rank and its cause, so the run ends cleanly
  with the same message everywhere.
- :func:`abort_on_error` for an exception that escapes where other ranks may already be
  blocked inside a collective (mid-iteration: a halo sum, a probe reduction) and will never
  reach a ``check``: it prints one line to stderr and calls ``MPI_Abort``, which ends every
  rank with a non-zero code instead of hanging. Checkpoints are written atomically, so the last
  one survives.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np

from ..errors import ConfigError
from .failures import ABORT_GRACE_S, RankFailure, abort_on_error, agree, one_line
from .serial_exchange import ExchangeStats, Pending, SerialExchange
from .tiling import Tile

__all__ = ["ABORT_GRACE_S", "ALIGN", "ExchangeStats", "MPIExchange", "Pending", "RankFailure",
           "SerialExchange", "abort_on_error", "agree", "detect_cuda_aware", "make_exchange",
           "one_line"]

#: byte alignment of each neighbour's segment in the packed halo buffer (complex128 on a GPU)
ALIGN = 16
HALO_TAG = 2020  # point-to-point halo messages of varying length (neighbour_messages)


def _mpi_op(op: str) -> Any:
    from mpi4py import MPI  # noqa: PLC0415

    ops = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
    if op not in ops:
        raise ValueError(f"allreduce op {op!r}: use sum, max or min")
    return ops[op]


def _is_device_array(a: Any) -> bool:
    """A GPU array (cupy, or anything exposing the CUDA array interface)."""
    return hasattr(a, "__cuda_array_interface__")


@dataclass
class _HaloPlan:
    """Packed-buffer layout of one halo-sum signature (dtypes and leading shapes)."""

    counts: list[int]  # bytes per neighbour (send = receive: halos are symmetric)
    displs: list[int]
    total: int
    send: Any  # uint8 buffer, host (numpy) or device (cupy)
    recv: Any
    # (array index, (row slice, col slice), send view, recv view) for every neighbour x array
    pieces: list[tuple[int, tuple[slice, slice], Any, Any]]
    host_send: np.ndarray | None = None  # pinned staging buffers (GPU without CUDA-aware MPI)
    host_recv: np.ndarray | None = None


class MPIExchange:
    """Halo sums and reductions over the ranks of ``comm`` for one rank's ``tile``.

    A distributed-graph communicator over the tile's neighbours is created once (collective
    over ``comm``: every rank must build its exchange together). Each :meth:`halo_sum` is one
    ``Neighbor_alltoallv`` of a byte buffer holding, per neighbour, the halo slices of all the
    arrays passed; its volume is the halo area times the bytes per pixel, never the object.
    Buffers and slices are built on the first call for a given set of dtypes and shapes and
    reused after. ``cuda_aware``: device (cupy) buffers go straight to MPI; otherwise they are
    staged through pinned host memory.
    """

    def __init__(self, comm: Any, tiles: list[Tile], rank: int, backend: Any,
                 cuda_aware: bool = False) -> None:
        size = comm.Get_size()
        if len(tiles) != size:
            raise ConfigError(f"{len(tiles)} tiles for {size} ranks")
        if rank != comm.Get_rank():
            raise ValueError(f"exchange built for rank {rank} on rank {comm.Get_rank()}")
        self.comm = comm
        self.tiles = tiles
        self.tile = tiles[rank]
        self.rank = rank
        self.size = size
        self.backend = backend
        self.cuda_aware = bool(cuda_aware)
        self.stats = ExchangeStats()
        self.neighbours = list(self.tile.neighbours)
        origin = self.tile.origin
        self._slices = [self.tile.halos[n].slices(origin) for n in self.neighbours]
        self._areas = [prod(self.tile.halos[n].shape) for n in self.neighbours]
        self._plans: dict[tuple, _HaloPlan] = {}
        t0 = time.perf_counter()
        self._graph = comm.Create_dist_graph_adjacent(self.neighbours, self.neighbours,
                                                      reorder=False)
        self.stats.seconds += time.perf_counter() - t0
        self.stats.collectives += 1

    # ------------------------------------------------------------------ halo sums
    def halo_bytes(self, *arrays: Any) -> int:
        """Bytes this rank sends in a :meth:`halo_sum` of ``arrays`` (with segment padding)."""
        per_pixel = sum(np.dtype(a.dtype).itemsize * prod(a.shape[:-2]) for a in arrays)
        return sum(-(-area * per_pixel // ALIGN) * ALIGN for area in self._areas)

    def _plan(self, arrays: tuple[Any, ...], device: bool) -> _HaloPlan:
        key = (device, *((np.dtype(a.dtype).str, tuple(a.shape[:-2])) for a in arrays))
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        # within a segment, larger items first keeps every view aligned to its item size
        order = sorted(range(len(arrays)), key=lambda k: -np.dtype(arrays[k].dtype).itemsize)
        layout: list[tuple[int, int, int, int]] = []  # (neighbour, array, offset, nbytes)
        counts, displs, offset = [], [], 0
        for i, area in enumerate(self._areas):
            start = offset
            for k in order:
                nbytes = np.dtype(arrays[k].dtype).itemsize * prod(arrays[k].shape[:-2]) * area
                layout.append((i, k, offset, nbytes))
                offset += nbytes
            offset = -(-offset // ALIGN) * ALIGN
            counts.append(offset - start)
            displs.append(start)
        xp = self.backend.xp if device else np
        send = xp.empty(max(offset, ALIGN), dtype=np.uint8)
        recv = xp.empty(max(offset, ALIGN), dtype=np.uint8)
        pieces = []
        for i, k, off, nbytes in layout:
            sl = self._slices[i]
            shape = (*arrays[k].shape[:-2], sl[0].stop - sl[0].start, sl[1].stop - sl[1].start)
            dt = np.dtype(arrays[k].dtype)
            pieces.append((k, sl, send[off:off + nbytes].view(dt).reshape(shape),
                           recv[off:off + nbytes].view(dt).reshape(shape)))
        plan = _HaloPlan(counts, displs, offset, send, recv, pieces)
        if device and not self.cuda_aware:
            import cupyx  # noqa: PLC0415

            plan.host_send = cupyx.empty_pinned(send.shape, dtype=np.uint8)
            plan.host_recv = cupyx.empty_pinned(recv.shape, dtype=np.uint8)
        self._plans[key] = plan
        return plan

    def halo_sum(self, *arrays: Any) -> None:
        """Add, in place over each halo, the neighbours' arrays (shape (..., H, W) of the box).

        Every pixel that this tile's windows light ends with the sum, over all tiles whose
        windows light it, of their values before the call (halos are the pixels both tiles'
        windows light: box pixels only this tile lights keep their own value, others may
        or may not receive a neighbour's). All arrays travel in one ``Neighbor_alltoallv``;
        every rank must call this with the same dtypes and leading shapes, in the same order.
        """
        self.stats.halo_sums += 1
        if not arrays:
            return
        box = self.tile.box.shape
        for a in arrays:
            if tuple(a.shape[-2:]) != box:
                raise ValueError(f"halo_sum: array of shape {tuple(a.shape)} does not end "
                                 f"with the tile's box shape {box}")
        device = _is_device_array(arrays[0])
        plan = self._plan(arrays, device)
        for k, (rs, cs), send_view, _ in plan.pieces:
            send_view[...] = arrays[k][..., rs, cs]
        from mpi4py import MPI  # noqa: PLC0415

        spec = (plan.counts, plan.displs)
        t0 = time.perf_counter()
        if device and not self.cuda_aware:
            plan.send.get(out=plan.host_send)  # blocking device -> pinned host copy
            self._graph.Neighbor_alltoallv([plan.host_send, spec, MPI.BYTE],
                                           [plan.host_recv, spec, MPI.BYTE])
            plan.recv.set(plan.host_recv)
            self.backend.synchronize()
        else:
            if device:
                self.backend.synchronize()  # packing kernels done before MPI reads
            self._graph.Neighbor_alltoallv([plan.send, spec, MPI.BYTE],
                                           [plan.recv, spec, MPI.BYTE])
        self.stats.seconds += time.perf_counter() - t0
        self.stats.collectives += 1
        self.stats.bytes_sent += plan.total
        self.stats.halo_bytes += plan.total
        self.stats.halo_messages += len(self.neighbours)
        for k, (rs, cs), _, recv_view in plan.pieces:
            arrays[k][..., rs, cs] += recv_view

    def neighbour_bytes(self, send: np.ndarray, send_spec: tuple[list[int], list[int]],
                        recv: np.ndarray, recv_spec: tuple[list[int], list[int]],
                        new_sum: bool = True) -> None:
        """One ``Neighbor_alltoallv`` of host byte buffers, ``(counts, displacements)`` per
        neighbour on each side, counted as a halo sum (:mod:`.sparse_halo` packs them), or
        as a further step of the current one (not ``new_sum``: a routed sum's column step)."""
        from mpi4py import MPI  # noqa: PLC0415

        self.stats.halo_sums += int(new_sum)
        t0 = time.perf_counter()
        self._graph.Neighbor_alltoallv([send, send_spec, MPI.BYTE],
                                       [recv, recv_spec, MPI.BYTE])
        self.stats.seconds += time.perf_counter() - t0
        self.stats.collectives += 1
        sent = int(sum(send_spec[0]))
        self.stats.bytes_sent += sent
        self.stats.halo_bytes += sent
        self.stats.halo_messages += sum(1 for c in send_spec[0] if c)

    def neighbour_messages(self, sends: list[np.ndarray | None], recvs: list[np.ndarray | None],
                           new_sum: bool = True) -> list[int]:
        """Messages of varying length, point to point: ``sends[i]`` (bytes, or None: nothing)
        to neighbour ``i``, and from it into ``recvs[i]`` (at least as long as what it sends,
        or None where it sends nothing); counted as a halo sum or a further step of one
        (:meth:`neighbour_bytes`). The received lengths."""
        from mpi4py import MPI  # noqa: PLC0415

        self.stats.halo_sums += int(new_sum)
        t0 = time.perf_counter()
        requests = [self._graph.Isend([b, MPI.BYTE], dest=n, tag=HALO_TAG)
                    for n, b in zip(self.neighbours, sends, strict=True) if b is not None]
        lengths = []
        for n, b in zip(self.neighbours, recvs, strict=True):
            if b is None:
                lengths.append(0)
                continue
            status = MPI.Status()
            self._graph.Probe(source=n, tag=HALO_TAG, status=status)
            count = status.Get_count(MPI.BYTE)
            self._graph.Recv([b[:count], MPI.BYTE], source=n, tag=HALO_TAG)
            lengths.append(count)
        MPI.Request.Waitall(requests)
        self.stats.seconds += time.perf_counter() - t0
        self.stats.collectives += 1
        sent = sum(int(b.size) for b in sends if b is not None)
        self.stats.bytes_sent += sent
        self.stats.halo_bytes += sent
        self.stats.halo_messages += len(requests)
        return lengths

    # ------------------------------------------------------------------ reductions
    def _timed(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.stats.seconds += time.perf_counter() - t0
            self.stats.collectives += 1

    def allreduce(self, value: Any, op: str = "sum") -> Any:
        """Sum (or max/min) over ranks of an array or scalar; same type back.

        numpy arrays and scalars are reduced as buffers with ``Allreduce``; cupy arrays on the
        device when MPI is CUDA-aware, else through the host.
        """
        mop = _mpi_op(op)
        self.stats.reductions += 1
        if _is_device_array(value):
            xp = self.backend.xp
            if self.cuda_aware:
                send = xp.asarray(value, order="C")
                out = xp.empty_like(send)
                self.backend.synchronize()
                self._timed(self.comm.Allreduce, send, out, op=mop)
                self.stats.bytes_sent += int(send.nbytes)
                return out
            return xp.asarray(self._allreduce_host(xp.asnumpy(value), mop))
        if isinstance(value, np.ndarray):
            return self._allreduce_host(value, mop)
        if isinstance(value, np.generic):
            return self._allreduce_host(np.asarray(value), mop)[()]
        if isinstance(value, (int, float, complex)) and not isinstance(value, bool):
            return type(value)(self._allreduce_host(np.asarray(value), mop)[()])
        self.stats.bytes_sent += sys.getsizeof(value)
        return self._timed(self.comm.allreduce, value, op=mop)

    def allreduce_start(self, value: Any) -> Pending:
        """Start the sum over ranks of a host array (``Iallreduce``); :meth:`Pending.wait`
        gives it. The other collectives of this exchange may run meanwhile (every rank
        starts and waits in the same order). Device arrays are reduced at once."""
        if not isinstance(value, np.ndarray):
            return Pending(self.allreduce(value))
        from mpi4py import MPI  # noqa: PLC0415

        self.stats.reductions += 1
        send = np.ascontiguousarray(value)
        out = np.empty_like(send)
        request = self._timed(self.comm.Iallreduce, send, out, op=MPI.SUM)
        self.stats.bytes_sent += int(send.nbytes)
        return Pending(out, request, self.stats, send)

    def _allreduce_host(self, value: np.ndarray, mop: Any) -> np.ndarray:
        send = np.asarray(value, order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        out = np.empty_like(send)
        self._timed(self.comm.Allreduce, send, out, op=mop)
        self.stats.bytes_sent += int(send.nbytes)
        return out

    def allgather(self, values: np.ndarray) -> np.ndarray:
        """Concatenation over ranks (in rank order) of 1-D host arrays."""
        local = np.asarray(values).reshape(-1)
        self.stats.bytes_sent += int(local.nbytes)
        parts = self._timed(self.comm.allgather, local)
        return np.concatenate(parts)

    # ------------------------------------------------------------------ failures
    def check(self, error: BaseException | None = None) -> None:
        """Collective failure check; every rank must call it at the same point (:func:`agree`)."""
        self.stats.checks += 1
        agree(self.comm, error, self._timed)

    # ------------------------------------------------------------------ misc
    def timer(self) -> float:
        return time.perf_counter()

    def close(self) -> None:
        """Free the graph communicator (collective over the ranks; idempotent)."""
        graph, self._graph = self._graph, None
        self._plans.clear()
        if graph is not None:
            graph.Free()

    def __enter__(self) -> MPIExchange:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def detect_cuda_aware() -> bool:
    """Whether the MPI library says it can read and write CUDA device memory."""
    try:
        from mpi4py import MPI  # noqa: PLC0415

        query = getattr(MPI, "Query_cuda_support", None)
        return bool(query()) if query is not None else False
    except Exception:  # noqa: BLE001 - an MPI that cannot say is not CUDA-aware
        return False


def make_exchange(comm: Any | None, tiles: list[Tile], rank: int, backend: Any,
                  cuda_aware: str | bool = "auto") -> SerialExchange | MPIExchange:
    """The exchange for ``rank``: serial on one rank (``comm`` None or of size 1), else MPI.

    ``cuda_aware``: ``"yes"`` / ``"no"`` / ``"auto"`` (ask MPI via ``MPI.Query_cuda_support``;
    only matters on a GPU backend). Collective over ``comm`` when it has several ranks.
    """
    if isinstance(cuda_aware, bool):
        choice = "yes" if cuda_aware else "no"
    else:
        choice = str(cuda_aware).strip().lower()
    if choice not in ("auto", "yes", "no"):
        raise ConfigError(f"cuda_aware = {cuda_aware!r}: use auto, yes or no")
    if comm is None or comm.Get_size() == 1:
        return SerialExchange(tiles[rank], backend)
    gpu = bool(getattr(backend, "is_gpu", False))
    aware = gpu and (choice == "yes" or (choice == "auto" and detect_cuda_aware()))
    return MPIExchange(comm, tiles, rank, backend, aware)
