"""A backend owns its threads, FFT plans and GPU kernels, and releases them in close()."""

from __future__ import annotations

import dataclasses
import gc
import threading
import time
import weakref

import numpy as np
import pytest

import ptychompi.app.api as api
from ptychompi import Reconstruction
from ptychompi.backends import Backend, select_backend
from ptychompi.backends.cpu import fftw
from ptychompi.backends.gpu.kernels import KernelCache
from ptychompi.backends.resources import THREAD_PREFIX, ResourceClosed, WorkerPool
from ptychompi.errors import PtychompiError
from ptychompi.sim.simulate import simulate

needs_fftw = pytest.mark.skipif(not fftw.native_available(),
                                reason="pyfftw (with FFTW's C libraries) is a dependency")


_BEFORE: set[threading.Thread] = set()


def ours() -> list[threading.Thread]:
    """The ptychompi threads started since this test began (earlier tests' backends that
    are not yet collected may still hold theirs)."""
    return [t for t in threading.enumerate()
            if t.name.startswith(THREAD_PREFIX) and t not in _BEFORE]


def frames(n: int = 40, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, 1, size, size))
            + 1j * rng.standard_normal((n, 1, size, size))).astype(np.complex64)


@pytest.fixture(autouse=True)
def threads_before():
    gc.collect()
    _BEFORE.clear()
    _BEFORE.update(threading.enumerate())


@needs_fftw
def test_close_stops_the_threads_and_destroys_every_plan(monkeypatch):
    destroyed: list[int] = []
    lib, *rest = fftw._KINDS["c64"]

    def destroy(plan: int) -> None:
        destroyed.append(plan)
        lib.destroy(plan)

    monkeypatch.setitem(fftw._KINDS, "c64", (dataclasses.replace(lib, destroy=destroy), *rest))
    be = select_backend("cpu", workers=2, fft="fftw")
    a = frames()
    out = be.fft2(a)  # blocks over two threads: the pool's thread starts
    assert ours() and len(be.fft_plans) >= 1
    plan = be.fft_plans.frame_plan((32, 32), fftw.FFTW_FORWARD)
    assert be.fft_plans.frame_plan((32, 32), fftw.FFTW_FORWARD) == plan  # made once
    buffer = weakref.ref(be.fft_plans.batch_plan("fft", 16, (32, 32), np.dtype(np.complex64),
                                                 (32, 32), np.dtype(np.complex64))[1])
    be.close()
    gc.collect()
    assert be.closed and ours() == [] and len(be.fft_plans) == 0
    assert destroyed == [plan]  # the compiled kernels' plan, through FFTW
    assert buffer() is None  # the pyFFTW plan that held it is gone (pyFFTW destroys it)
    np.testing.assert_array_equal(out, select_backend("cpu", workers=1, fft="fftw").fft2(a))
    be.close()  # idempotent


@pytest.mark.parametrize("fft", ["fftw", "scipy"])
def test_a_closed_backend_says_so(fft):
    if fft == "fftw" and not fftw.native_available():
        pytest.skip("pyfftw is a dependency")
    be = select_backend("cpu", workers=2, fft=fft)
    be.close()
    for use in (lambda: be.fft2(frames(2)), lambda: be.ifft2(frames(2)),
                lambda: be.rfft2(frames(2).real), lambda: be.pool.run([int, int])):
        with pytest.raises(ResourceClosed, match="closed .*Backend.close"):
            use()
    if fft == "fftw":
        with pytest.raises(ResourceClosed):
            be.fft_plans.frame_plan((32, 32), fftw.FFTW_FORWARD)


def test_the_context_manager_closes_on_an_exception():
    with pytest.raises(ValueError, match="inside"):
        with select_backend("cpu", workers=2) as be:
            be.pool.run([lambda: time.sleep(0.01), int])
            assert ours()
            raise ValueError("inside")
    assert be.closed and be.pool.closed and ours() == []


@needs_fftw
def test_two_backends_share_neither_threads_nor_plans():
    one = select_backend("cpu", workers=2, fft="fftw")
    two = select_backend("cpu", workers=2, fft="fftw")
    try:
        assert one.pool is not two.pool and one.fft_plans is not two.fft_plans
        a = frames()
        first = one.fft2(a)
        one.fft_plans.frame_plan((32, 32), fftw.FFTW_BACKWARD)
        assert len(one.fft_plans) >= 2 and len(two.fft_plans) == 0
        two.fft2(a)
        assert len(ours()) == 2  # one pool thread each
        one.close()
        assert len(two.fft_plans) >= 1 and len(ours()) == 1
        np.testing.assert_array_equal(two.fft2(a), first)  # the other one still works
    finally:
        one.close()
        two.close()
    assert ours() == []


def test_a_gpu_backend_closes_its_kernel_cache():
    be = Backend(np, "gpu", 0)  # numpy stands in: nothing is compiled before use
    assert isinstance(be.kernels, KernelCache) and be.fft_plans is None
    be.close()
    with pytest.raises(ResourceClosed, match="kernel cache"):
        be.kernels.get("modulus", "modulus_project_complex64", 0)


def test_worker_pool_nested_runs_and_failures():
    pool = WorkerPool(2)
    try:
        assert pool.run([lambda: 1, lambda: 2]) == [1, 2]
        # a task that runs tasks from the pool's thread: inline there, no deadlock
        assert pool.run([lambda: pool.run([lambda: "a", lambda: "b"]),
                         lambda: pool.run([lambda: "c", lambda: "d"])]) == [["a", "b"],
                                                                          ["c", "d"]]
        done = []

        def slow() -> None:
            time.sleep(0.05)
            done.append(True)

        def fail() -> None:
            raise RuntimeError("task failed")

        with pytest.raises(RuntimeError, match="task failed"):
            pool.run([fail, slow])
        assert done == [True]  # raised only once the other task had finished
    finally:
        pool.close()
    assert ours() == []


def small_run(workers: int = 2) -> tuple[dict, object]:
    sim = simulate(frame=64, grid=8, step_px=8, probe_diameter_px=20, photons=1e6, seed=0)
    cfg = {"algorithm": {"name": "lsqml", "iterations": 2,
                         "probe_diameter_m": 20 * sim.pixel_size_m},
           "parallel": {"device": "cpu", "workers": workers}}
    return cfg, sim.as_scan()


def test_a_run_then_close_leaves_no_threads():
    cfg, scan = small_run()
    recon = Reconstruction(cfg, scan=scan)
    recon.run()
    assert ours()  # the run used the backend's pool
    error = recon.metrics["error"]
    recon.close()
    assert recon.backend.closed and ours() == []
    assert recon.metrics["error"] == error
    with pytest.raises(PtychompiError, match="closed"):
        recon.step()


def test_a_failed_set_up_closes_its_backend(monkeypatch):
    made: list[Backend] = []

    def recording(*args, **kwargs) -> Backend:
        made.append(select_backend(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(api, "select_backend", recording)
    cfg, scan = small_run()
    cfg["algorithm"]["batch_size"] = 10_000  # more than the scan: a set-up error
    with pytest.raises(PtychompiError, match="batch_size"):
        Reconstruction(cfg, scan=scan)
    assert len(made) == 1 and made[0].closed


@needs_fftw
def test_the_backends_frame_plans_transform_like_its_batches():
    """The compiled kernels' plans (what they execute on one frame) give the batch FFT's
    frames bit for bit, so the fused and chunked paths may take them from one cache."""
    with select_backend("cpu", workers=1, fft="fftw") as be:
        a = fftw.empty_aligned((5, 1, 32, 32), np.complex64)
        a[...] = frames(5)
        for direction, batch in ((fftw.FFTW_FORWARD, be.fft2), (fftw.FFTW_BACKWARD, be.ifft2)):
            plan = be.fft_plans.frame_plan((32, 32), direction)
            out = fftw.empty_aligned(a.shape, np.complex64)
            for j in range(len(a)):
                fftw.execute_dft(plan, a[j, 0].ctypes.data, out[j, 0].ctypes.data)
            out *= np.complex64(1 / np.sqrt(32 * 32))
            np.testing.assert_array_equal(out, batch(a))
