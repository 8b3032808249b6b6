"""MPI: halo sums, reductions, the collective failure check and assembly, on any rank count.

Run with ``mpiexec -n N python -m pytest --with-mpi tests/mpi`` for N = 1, 2, 3, 4.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest
from mpi4py import MPI

from ptychompi.backends import Backend
from ptychompi.errors import DataError, PtychompiError
from ptychompi.parallel.assemble import assemble
from ptychompi.parallel.exchange import (
    ALIGN,
    MPIExchange,
    RankFailure,
    SerialExchange,
    make_exchange,
)
from ptychompi.parallel.tiling import decompose

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
BACKEND = Backend(np, "cpu")
FRAME = (24, 24)


def raster(n: int = 12, step: float = 8.0) -> np.ndarray:
    r, c = np.meshgrid(np.arange(n) * step, np.arange(n) * step, indexing="ij")
    pos = np.stack([r.ravel(), c.ravel()], axis=1)
    return pos + np.random.default_rng(0).uniform(0, 1.5, pos.shape)


def spiral(n: int = 150, spacing: float = 5.0) -> np.ndarray:
    k = np.arange(n)
    radius, theta = spacing * np.sqrt(k), k * np.deg2rad(137.508)
    pos = np.stack([radius * np.sin(theta), radius * np.cos(theta)], axis=1)
    return pos - pos.min(axis=0)


SCANS = {"raster": raster(), "spiral": spiral()}


def object_shape(pos: np.ndarray) -> tuple[int, int]:
    top = np.floor(pos.max(axis=0)).astype(int)
    return (int(top[0]) + FRAME[0] + 3, int(top[1]) + FRAME[1] + 3)


def rank_arrays(r: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Rank r's deterministic (complex64 (2, H, W), float32 (H, W)) pair on its box."""
    rng = np.random.default_rng(1000 + r)
    a = (rng.uniform(0.5, 1.5, (2, *shape)) + 1j * rng.uniform(0.5, 1.5, (2, *shape)))
    b = rng.uniform(0.5, 1.5, shape)
    return a.astype(np.complex64), b.astype(np.float32)


def lit_mask(tile, pos: np.ndarray) -> np.ndarray:
    """Pixels of the tile's box that its windows light."""
    mask = np.zeros(tile.box.shape, bool)
    for r, c in np.floor(pos[tile.indices]).astype(int) - np.array(tile.origin):
        mask[r:r + FRAME[0], c:c + FRAME[1]] = True
    return mask


def lit_arrays(tile, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rank_arrays` of the tile, zero where its windows light nothing."""
    a, b = rank_arrays(tile.rank, tile.box.shape)
    mask = lit_mask(tile, pos)
    return a * mask, b * mask


class CountingGraph:
    """Wraps the graph communicator to count its Neighbor_alltoallv calls."""

    def __init__(self, graph: MPI.Comm) -> None:
        self.graph, self.calls = graph, 0

    def Neighbor_alltoallv(self, *args, **kwargs):  # noqa: N802 (MPI's name)
        self.calls += 1
        return self.graph.Neighbor_alltoallv(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.graph, name)


def expected_halo_bytes(tile, per_pixel: int) -> int:
    return sum(-(-h.shape[0] * h.shape[1] * per_pixel // ALIGN) * ALIGN
               for h in tile.halos.values())


@pytest.mark.mpi
@pytest.mark.parametrize("scan", SCANS)
def test_halo_sum_equals_global_sum(scan: str) -> None:
    pos = SCANS[scan]
    tiles = decompose(pos, FRAME, size)
    tile = tiles[rank]
    shape = object_shape(pos)
    # every rank computes every rank's arrays (seeded, zero off its windows, as the engines'
    # window sums are) and the serial global sums
    total_a = np.zeros((2, *shape), np.complex128)
    total_b = np.zeros(shape, np.float64)
    cover = np.zeros(shape, np.int64)
    for t in tiles:
        a, b = lit_arrays(t, pos)
        total_a[(..., *t.box.slices())] += a
        total_b[t.box.slices()] += b
        cover[t.box.slices()] += lit_mask(t, pos)
    lit = lit_mask(tile, pos)
    if size >= 4 and scan == "raster":
        assert cover.max() >= 3  # pixels covered by 3+ tiles are exercised
    ex = MPIExchange(comm, tiles, rank, BACKEND)
    counter = CountingGraph(ex._graph)
    ex._graph = counter
    sl = (..., *tile.box.slices())
    try:
        for repeat in range(2):  # the second call reuses the buffers
            a, b = lit_arrays(tile, pos)
            before = (ex.stats.bytes_sent, ex.stats.collectives, ex.stats.halo_sums)
            ex.halo_sum(a, b)
            # every pixel this tile's windows light holds the sum over all tiles lighting it
            np.testing.assert_allclose(a[:, lit], total_a[sl][:, lit], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(b[lit], total_b[sl][lit], rtol=1e-6, atol=1e-6)
            assert counter.calls == repeat + 1  # one Neighbor_alltoallv per halo sum
            assert ex.stats.collectives - before[1] == 1
            assert ex.stats.halo_sums - before[2] == 1
            sent = ex.stats.bytes_sent - before[0]
            per_pixel = 2 * 8 + 4  # two complex64 values and one float32 per halo pixel
            assert sent == expected_halo_bytes(tile, per_pixel) == ex.halo_bytes(a, b)
            assert sent < per_pixel * tile.box.shape[0] * tile.box.shape[1] * \
                max(1, len(tile.neighbours))
        assert len(ex._plans) == 1
        # dtype order does not matter; a count array gives the coverage of each pixel
        ones = lit.astype(np.float32)
        a, b = lit_arrays(tile, pos)
        ex.halo_sum(ones, a)
        np.testing.assert_array_equal(ones[lit], cover[tile.box.slices()][lit])
        np.testing.assert_allclose(a[:, lit], total_a[sl][:, lit], rtol=1e-6, atol=1e-6)
        with pytest.raises(ValueError, match="box shape"):
            ex.halo_sum(np.zeros((3, 3), np.float32))
    finally:
        ex._graph = counter.graph
        ex.close()


@pytest.mark.mpi
def test_make_exchange_kinds() -> None:
    tiles = decompose(SCANS["raster"], FRAME, size)
    assert isinstance(make_exchange(None, tiles[:1], 0, BACKEND), SerialExchange)
    ex = make_exchange(comm, tiles, rank, BACKEND, cuda_aware="auto")
    try:
        if size == 1:
            assert isinstance(ex, SerialExchange)
        else:
            assert isinstance(ex, MPIExchange) and not ex.cuda_aware  # CPU: never device MPI
            assert (ex.rank, ex.size, ex.tile) == (rank, size, tiles[rank])
    finally:
        ex.close()


@pytest.fixture
def ex():
    exchange = MPIExchange(comm, decompose(SCANS["raster"], FRAME, size), rank, BACKEND)
    yield exchange
    exchange.close()


@pytest.mark.mpi
def test_allreduce_arrays_and_scalars(ex: MPIExchange) -> None:
    n = size
    arr = np.full((2, 3), rank + 1, np.float32)
    out = ex.allreduce(arr)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (2, 3)
    assert np.all(out == n * (n + 1) / 2)
    cplx = ex.allreduce(np.array([1 + 1j * rank], np.complex64))
    assert cplx.dtype == np.complex64 and cplx[0] == n + 1j * n * (n - 1) / 2
    f = ex.allreduce(float(rank))
    assert type(f) is float and f == n * (n - 1) / 2
    i = ex.allreduce(rank + 1, op="max")
    assert type(i) is int and i == n
    s = ex.allreduce(np.float32(rank + 2), op="min")
    assert isinstance(s, np.float32) and s == 2
    z = ex.allreduce(np.array(rank, np.float64), op="max")
    assert z.shape == () and z == n - 1
    assert ex.stats.reductions == 6 and ex.stats.bytes_sent > 0
    with pytest.raises(ValueError, match="op"):
        ex.allreduce(1.0, op="prod")


@pytest.mark.mpi
def test_allgather_in_rank_order(ex: MPIExchange) -> None:
    got = ex.allgather(np.full(rank + 1, rank, np.float32))
    expect = np.concatenate([np.full(r + 1, r, np.float32) for r in range(size)])
    assert np.array_equal(got, expect)


@pytest.mark.mpi
def test_check_passes_when_all_is_well(ex: MPIExchange) -> None:
    ex.check(None)
    ex.check()
    assert ex.stats.checks == 2


@pytest.mark.mpi
def test_check_raises_on_every_rank(ex: MPIExchange) -> None:
    if size < 2:  # one rank: the error itself (one line for a non-ptychompi one)
        for exchange in (ex, SerialExchange(ex.tile, BACKEND)):
            with pytest.raises(DataError, match="^frame 37 holds NaN$"):
                exchange.check(DataError("frame 37 holds NaN"))
            with pytest.raises(PtychompiError, match="^RuntimeError: out of memory on dev$"):
                exchange.check(RuntimeError("out of memory on\ndev"))
        return
    error = DataError("frame 37 holds NaN") if rank == 1 else None
    with pytest.raises(RankFailure) as info:
        ex.check(error)
    assert info.value.origin_rank == 1
    assert str(info.value).startswith("rank 1: frame 37 holds NaN")
    if rank == 1:
        assert info.value.__cause__ is error
    # several failing ranks: the lowest one is named first, the others counted
    if size >= 3:
        error = RuntimeError(f"out of memory on\ndevice {rank}") if rank >= 1 else None
        with pytest.raises(RankFailure) as info:
            ex.check(error)
        assert info.value.origin_rank == 1
        msg = str(info.value)
        assert msg.startswith("rank 1: RuntimeError: out of memory on device 1;")
        assert "\n" not in msg and f"{size - 2} more rank(s) failed" in msg
        assert [r for r, _ in info.value.failures] == list(range(1, size))
    # the same problem on every rank: said once, no rank to name
    with pytest.raises(RankFailure) as info:
        ex.check(DataError("scan.h5 not found"))
    assert str(info.value) == "scan.h5 not found" and info.value.origin_rank == 0
    # the ranks are still in step afterwards
    assert ex.allreduce(1) == size


@pytest.mark.mpi
@pytest.mark.parametrize("fill", [1.0, 0.0])
def test_assemble_weighted_average(fill: float) -> None:
    pos = SCANS["spiral"]
    tiles = decompose(pos, FRAME, size)
    shape = (object_shape(pos)[0] + 10, object_shape(pos)[1] + 7)  # margin nobody covers

    def local(r: int) -> tuple[np.ndarray, np.ndarray]:
        obj, w = rank_arrays(r, tiles[r].box.shape)
        w = w.copy()
        w[:3, :] = 0.0  # unlit rows at the top of every box
        return (obj[0] * w).astype(np.complex64), w

    num = np.zeros(shape, np.complex128)
    den = np.zeros(shape, np.float64)
    for t in tiles:
        n, w = local(t.rank)
        num[t.box.slices()] += n
        den[t.box.slices()] += w
    expect = np.full(shape, fill, np.complex128)
    lit = den > 0
    expect[lit] = num[lit] / den[lit]

    n, w = local(rank)
    got = assemble(n, w, tiles[rank], shape, comm, root=0, fill=fill)
    if rank == 0:
        assert got.shape == shape and got.dtype == np.complex64
        np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)
        assert np.all(got[-10:, :] == fill) and np.all(got[:, -7:] == fill)
        assert np.any(~lit) and np.all(got[~lit] == fill)
    else:
        assert got is None


@pytest.mark.mpi
def test_halo_sum_without_neighbours() -> None:
    """Tiles that share no pixels (separate clusters) exchange nothing and keep their values."""
    cluster = np.array([[0.0, 0.0], [0.0, 5.0], [5.0, 0.0], [5.0, 5.0]])
    pos = np.concatenate([cluster + [0.0, 1000.0 * r] for r in range(size)])
    tiles = decompose(pos, FRAME, size, grid=(1, size))  # (auto would give 2x2 on 4 ranks)
    assert all(not t.neighbours for t in tiles)
    with MPIExchange(comm, tiles, rank, BACKEND) as ex:
        a, b = rank_arrays(rank, tiles[rank].box.shape)
        a0, b0 = a.copy(), b.copy()
        ex.halo_sum(a, b)
        assert np.array_equal(a, a0) and np.array_equal(b, b0)
        assert ex.stats.bytes_sent == 0 and ex.stats.halo_sums == 1


class FakeDeviceArray(np.ndarray):
    """A host array that poses as a GPU array, to drive the device code path without a GPU."""

    @property
    def __cuda_array_interface__(self) -> dict:
        return {}

    def get(self, out: np.ndarray) -> np.ndarray:
        assert type(out) is np.ndarray
        np.copyto(out, self.view(np.ndarray))
        return out

    def set(self, arr: np.ndarray) -> None:
        assert type(arr) is np.ndarray
        np.copyto(self.view(np.ndarray), arr)


def fake_cupy() -> tuple[SimpleNamespace, SimpleNamespace]:
    def dev(a: np.ndarray) -> FakeDeviceArray:
        return np.array(a).view(FakeDeviceArray)

    stream = SimpleNamespace(synchronize=lambda: None)
    xp = SimpleNamespace(
        empty=lambda shape, dtype: np.empty(shape, dtype).view(FakeDeviceArray),
        empty_like=lambda a: np.empty_like(a).view(FakeDeviceArray),
        asarray=lambda a, dtype=None, order=None: dev(np.asarray(a, dtype=dtype, order=order)),
        asnumpy=lambda a: np.array(a.view(np.ndarray)),
        cuda=SimpleNamespace(get_current_stream=lambda: stream),
    )
    cupyx = SimpleNamespace(empty_pinned=lambda shape, dtype: np.empty(shape, dtype))
    return xp, cupyx


@pytest.mark.mpi
@pytest.mark.parametrize("aware", [False, True])
def test_device_path_with_fake_gpu(aware: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cupy branch (staged through pinned host buffers, or CUDA-aware) on stand-in arrays."""
    xp, cupyx = fake_cupy()
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    backend = Backend(xp, "gpu", device_id=0)  # type: ignore[arg-type]
    pos = SCANS["raster"]
    tiles = decompose(pos, FRAME, size)
    tile = tiles[rank]
    shape = object_shape(pos)
    total_a = np.zeros((2, *shape), np.complex128)
    total_b = np.zeros(shape, np.float64)
    for t in tiles:
        a, b = lit_arrays(t, pos)
        total_a[(..., *t.box.slices())] += a
        total_b[t.box.slices()] += b
    lit = lit_mask(tile, pos)
    with MPIExchange(comm, tiles, rank, backend, cuda_aware=aware) as ex:
        a, b = (xp.asarray(x) for x in lit_arrays(tile, pos))
        ex.halo_sum(a, b)
        assert isinstance(a, FakeDeviceArray) and isinstance(b, FakeDeviceArray)
        sl = tile.box.slices()
        np.testing.assert_allclose(np.asarray(a)[:, lit], total_a[(..., *sl)][:, lit],
                                   rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.asarray(b)[lit], total_b[sl][lit], rtol=1e-6, atol=1e-6)
        (plan,) = ex._plans.values()
        assert isinstance(plan.send, FakeDeviceArray)
        if size > 1:
            assert (plan.host_send is None) == aware  # pinned staging only without CUDA-aware
        out = ex.allreduce(xp.asarray(np.full(3, rank + 1.0, np.float32)))
        assert isinstance(out, FakeDeviceArray) and out.dtype == np.float32
        assert np.all(out == size * (size + 1) / 2)
