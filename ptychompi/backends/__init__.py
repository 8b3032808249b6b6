"""Array backend: the array module (numpy or cupy), FFTs, transfers and device binding.

One :class:`Backend` is built per MPI rank and passed explicitly to everything that computes.
It owns its resources (the CPU worker threads, the FFT plans, the compiled GPU kernels) and
releases them in :meth:`Backend.close` (or at the end of ``with select_backend(...) as be:``);
there is no module-level state.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import scipy.fft

from ..errors import ConfigError
from .cpu import fftw
from .gpu.kernels import KernelCache
from .resources import ResourceClosed, WorkerPool

DEVICE_ENV = "PTYCHOMPI_DEVICE"
FFT_ENV = "PTYCHOMPI_FFT"


def _import_cupy() -> ModuleType | None:
    try:
        import cupy  # noqa: PLC0415

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        return cupy
    except Exception:  # noqa: BLE001 - no cupy, no driver, no device: each raises its own
        return None


def local_rank(comm: Any | None) -> int:
    """The rank of this process among the ranks on the same node."""
    if comm is None or comm.Get_size() == 1:
        return 0
    from mpi4py import MPI  # noqa: PLC0415

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_rank()
    finally:
        node.Free()


@dataclass
class Backend:
    """Array module, FFTs and transfers for one rank, and the resources behind them.

    ``xp`` is numpy or cupy; ``fft2``/``ifft2`` are unitary over the last two axes. On a CPU
    they run on FFTW (``fft="fftw"``, :mod:`ptychompi.backends.cpu.fftw`) or scipy.fft
    (``"scipy"``).
    Owned, and released by :meth:`close` (also on leaving a ``with`` block): :attr:`pool`,
    the worker threads (``threads - 1`` besides the caller's) of the chunk loops and of
    multi-threaded FFTs; :attr:`fft_plans`, every FFTW plan (CPU with FFTW); :attr:`kernels`,
    the compiled CUDA kernels (GPU). After :meth:`close` the FFTs and these raise
    :class:`~ptychompi.backends.resources.ResourceClosed`.
    """

    xp: ModuleType
    name: str  # "cpu" | "gpu"
    device_id: int | None = None
    workers: int = 1
    double: bool = False
    fft: str = "scipy"  # CPU FFT library: "fftw" or "scipy"
    # the engines' operations (:mod:`ptychompi.ops`): "compiled" (numba kernels and fused
    # FFTW pipelines on a CPU, the array expressions on a GPU) or "array" (the array-module
    # expressions everywhere: numpy on a CPU is the reference the GPU path is checked against)
    ops_kind: str = "compiled"
    _local: threading.local = field(default_factory=threading.local, repr=False,
                                    compare=False)
    _fftw: fftw.FftwTransforms | None = field(default=None, repr=False, compare=False)
    _ops: Any = field(default=None, repr=False, compare=False)
    pool: WorkerPool = field(init=False, repr=False, compare=False)
    fft_plans: fftw.FftwPlans | None = field(default=None, init=False, repr=False,
                                             compare=False)
    kernels: KernelCache | None = field(default=None, init=False, repr=False, compare=False)
    _closed: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.fft not in ("fftw", "scipy"):
            raise ConfigError(f"parallel.fft is {self.fft!r}; use one of auto, fftw, scipy")
        self.pool = WorkerPool(self.threads)
        if self.is_gpu:
            self.kernels = KernelCache()
        elif self.fft == "fftw":
            self.fft_plans = fftw.FftwPlans()
            self._fftw = fftw.FftwTransforms(self.fft_plans, self.pool)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop the worker threads, destroy the FFT plans and drop the compiled kernels
        (idempotent). Call it once the work is done: nothing may still run on them."""
        if self._closed:
            return
        self._closed = True
        self.pool.close()
        if self.fft_plans is not None:
            self.fft_plans.close()
        if self.kernels is not None:
            self.kernels.close()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_gpu(self) -> bool:
        return self.name == "gpu"

    @property
    def ops(self) -> Any:
        """The engines' per-position and element-wise operations on this backend
        (:class:`ptychompi.ops.Operations`), made at first use."""
        if self._ops is None:
            from ..ops import make_ops  # noqa: PLC0415 (ops imports the backend's users)

            self._ops = make_ops(self)
        return self._ops

    @property
    def real_dtype(self) -> np.dtype:
        return np.dtype(np.float64 if self.double else np.float32)

    @property
    def complex_dtype(self) -> np.dtype:
        return np.dtype(np.complex128 if self.double else np.complex64)

    @property
    def threads(self) -> int:
        """Threads a CPU engine may spread independent chunks over (1 on a GPU)."""
        return 1 if self.is_gpu else self.workers

    @contextlib.contextmanager
    def single_threaded(self) -> Iterator[None]:
        """Inside a worker thread: FFTs of this thread use one core."""
        self._local.workers = 1
        try:
            yield
        finally:
            del self._local.workers

    def _fft_workers(self) -> int:
        return getattr(self._local, "workers", self.workers)

    def fft2(self, a: Any, overwrite: bool = False) -> Any:
        """Unitary 2-D FFT over the last two axes."""
        if self._closed:
            raise ResourceClosed("the backend")
        if self.is_gpu:
            return self.xp.fft.fft2(a, norm="ortho")
        if self._fftw is not None:
            return self._fftw.fft2(a, self._fft_workers())
        return scipy.fft.fft2(a, norm="ortho", workers=self._fft_workers(),
                              overwrite_x=overwrite)

    def ifft2(self, a: Any, overwrite: bool = False) -> Any:
        """Unitary inverse 2-D FFT over the last two axes."""
        if self._closed:
            raise ResourceClosed("the backend")
        if self.is_gpu:
            return self.xp.fft.ifft2(a, norm="ortho")
        if self._fftw is not None:
            return self._fftw.ifft2(a, self._fft_workers())
        return scipy.fft.ifft2(a, norm="ortho", workers=self._fft_workers(),
                               overwrite_x=overwrite)

    def rfft2(self, a: Any) -> Any:
        """Unitary 2-D FFT of real frames over the last two axes (half spectrum)."""
        if self._closed:
            raise ResourceClosed("the backend")
        if self.is_gpu:
            return self.xp.fft.rfft2(a, norm="ortho")
        if self._fftw is not None:
            return self._fftw.rfft2(a, self._fft_workers())
        return scipy.fft.rfft2(a, norm="ortho", workers=self._fft_workers())

    def irfft2(self, a: Any, shape: tuple[int, int]) -> Any:
        """Inverse of :meth:`rfft2` back to real frames of ``shape`` (``a`` may be
        overwritten)."""
        if self._closed:
            raise ResourceClosed("the backend")
        if self.is_gpu:
            return self.xp.fft.irfft2(a, s=shape, norm="ortho")
        if self._fftw is not None:
            return self._fftw.irfft2(a, shape, self._fft_workers())
        return scipy.fft.irfft2(a, s=shape, norm="ortho", workers=self._fft_workers(),
                                overwrite_x=True)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """An uninitialised array on the device; on a CPU aligned for FFTW, so that FFT
        inputs made by the engines are transformed without a copy."""
        if self.is_gpu:
            return self.xp.empty(shape, dtype=dtype)
        return fftw.empty_aligned(shape, dtype)

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Host (or device) array to this backend's device."""
        return self.xp.asarray(a, dtype=dtype)

    def asnumpy(self, a: Any) -> np.ndarray:
        """Array on this backend to a numpy array on the host."""
        if self.is_gpu:
            return self.xp.asnumpy(a)
        return np.asarray(a)

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on CPU); used around timers."""
        if self.is_gpu:
            self.xp.cuda.get_current_stream().synchronize()


def cpu_workers(comm: Any | None) -> int:
    """FFT threads per rank: the cores of this node shared among its ranks."""
    env = os.environ.get("PTYCHOMPI_WORKERS")
    if env:
        return max(1, int(env))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ranks_here = 1
    if comm is not None and comm.Get_size() > 1:
        from mpi4py import MPI  # noqa: PLC0415

        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        ranks_here = node.Get_size()
        node.Free()
    return max(1, (cores or 1) // ranks_here)


def cpu_fft_library(requested: str | None = "auto") -> str:
    """``fftw`` or ``scipy`` for ``requested`` (``auto``: FFTW when pyFFTW imports), with
    ``$PTYCHOMPI_FFT`` overriding; asking for FFTW where pyFFTW is missing is an error."""
    choice = os.environ.get(FFT_ENV, requested or "auto").strip().lower()
    if choice not in ("auto", "fftw", "scipy"):
        raise ConfigError(f"parallel.fft (or ${FFT_ENV}) is {choice!r}; use one of auto, fftw, "
                          "scipy")
    if choice == "auto":
        return "fftw" if fftw.available() else "scipy"
    if choice == "fftw" and not fftw.available():
        raise ConfigError("parallel.fft (or $PTYCHOMPI_FFT) is fftw but pyfftw is not "
                          "installed: pip install pyfftw, or use fft: scipy")
    return choice


def select_backend(
    device: str = "auto",
    comm: Any | None = None,
    double: bool = False,
    workers: int | None = None,
    fft: str = "auto",
    operations: str = "compiled",
) -> Backend:
    """Build the backend for this rank.

    ``device`` is ``cpu``, ``gpu`` or ``auto`` (GPU when one is visible), overridden by the
    environment variable ``PTYCHOMPI_DEVICE``. The GPU is the node-local rank modulo the
    visible GPUs. Asking for a GPU where there is none is an error, never a fallback.
    ``fft`` is the CPU FFT library: ``fftw`` (pyFFTW), ``scipy`` or ``auto`` (FFTW when
    pyFFTW imports), overridden by ``PTYCHOMPI_FFT``. ``operations``: the engines' operations
    on a CPU, ``compiled`` or ``array`` (numpy's expressions, the GPU's code; see
    :mod:`ptychompi.ops`).
    """
    fft = cpu_fft_library(fft)
    device = os.environ.get(DEVICE_ENV, device or "auto").strip().lower()
    if device not in ("cpu", "gpu", "auto"):
        raise ConfigError(
            f"parallel.device (or ${DEVICE_ENV}) is {device!r}; use one of cpu, gpu, auto"
        )
    if device == "cpu":
        return Backend(np, "cpu", None, workers or cpu_workers(comm), double, fft, operations)
    cupy = _import_cupy()
    if cupy is None:
        if device == "gpu":
            raise ConfigError(
                "a GPU was asked for (parallel.device or $PTYCHOMPI_DEVICE = gpu) but none is "
                "usable: install ptychompi[gpu] (cupy) on a machine with a CUDA GPU, or use "
                "device: cpu"
            )
        return Backend(np, "cpu", None, workers or cpu_workers(comm), double, fft, operations)
    gpu = local_rank(comm) % cupy.cuda.runtime.getDeviceCount()
    cupy.cuda.Device(gpu).use()
    return Backend(cupy, "gpu", gpu, 1, double)
