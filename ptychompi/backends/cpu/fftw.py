"""Unitary 2-D FFTs on the CPU through FFTW, the CPU backend's default: pyFFTW for batches of
frames (:class:`FftwTransforms`) and FFTW's C interface for compiled (numba) kernels
(:meth:`FftwPlans.frame_plan`, :data:`execute_dft`), all plans of one backend in one cache
(:class:`FftwPlans`) that the backend destroys when it closes.

FFTW's SIMD codelets transform batches of small complex64 frames several times faster per
core than scipy's pocketfft (``benchmarks/engines.py`` reports both). Plans are made with
``FFTW_ESTIMATE``: the planner picks the algorithm from the shape alone, not from timings,
so every process, rank and thread computes bit-identical transforms, a frame's transform does
not depend on how many frames share the call, and the single-frame plans of the compiled
kernels compute the same transforms as the batches (tested). Batches are always transformed
out of place, through each plan's own aligned buffers (an in-place plan rounds differently,
and whether a slice could go in place would depend on its alignment, i.e. on the chunking).

Batch plans are kept per thread (a pyFFTW plan holds its arrays while it runs, so two threads
must never share one), at most :data:`PLANS_PER_THREAD` and :data:`PLAN_BYTES_PER_THREAD` of
buffers each, least recently used first out; large frames go in shorter blocks. FFTW's
planner is process-wide and not thread-safe: at import FFTW is told to lock it itself
(``fftw_make_planner_thread_safe``, so that plans made and destroyed by several backends and
by pyFFTW never race); where that is not possible the compiled kernels' plans are not offered
(:func:`native_available`; the engines then take their chunked path, with identical results).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from ..resources import ResourceClosed, WorkerPool

try:  # an optional speed-up: without it the backend uses scipy.fft
    import pyfftw
except ImportError:  # pragma: no cover - exercised where pyfftw is missing
    pyfftw = None

PLANS_PER_THREAD = 64
PLAN_BYTES_PER_THREAD = 128 << 20  # the batch plans' own buffers, per thread
BLOCK = 16  # frames per FFTW execution, at most
BLOCK_BYTES = 4 << 20  # and at most this much input per block (large frames: fewer)
FFTW_FORWARD, FFTW_BACKWARD = -1, 1
FFTW_ESTIMATE = 1 << 6

_COMPLEX = {np.dtype(np.complex64), np.dtype(np.complex128)}
_REAL_OF = {np.dtype(np.complex64): np.dtype(np.float32),
            np.dtype(np.complex128): np.dtype(np.float64)}
_COMPLEX_OF = {v: k for k, v in _REAL_OF.items()}


# ---------------------------------------------------------------- FFTW's C libraries
@dataclass(frozen=True)
class _Library:
    """The typed entry points of one FFTW library (single or double precision)."""

    plan_c2c: Any
    plan_r2c: Any
    execute_c2c: Any
    execute_r2c: Any
    destroy: Any


_INT_P = ctypes.POINTER(ctypes.c_int)
_PLAN_ARGS = [ctypes.c_int, _INT_P, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
              ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
              ctypes.c_int]


def _candidates(name: str) -> list[str]:
    """Paths of FFTW library ``name`` (e.g. "fftw3f", "fftw3f_omp"): pyFFTW's own first."""
    paths = []
    if pyfftw is not None:
        libs = os.path.join(os.path.dirname(os.path.dirname(pyfftw.__file__)), "pyfftw.libs")
        paths += sorted(glob.glob(os.path.join(libs, f"lib{name}-*.so*")))
    found = ctypes.util.find_library(name)
    if found:
        paths.append(found)
    return paths


def _thread_safe(prefix: str, base: str) -> bool:
    """Tell FFTW library ``base`` to lock its planner itself (through its threads library)."""
    for name in (f"{base}_omp", f"{base}_threads"):
        for path in _candidates(name):
            try:
                getattr(ctypes.CDLL(path), f"{prefix}_make_planner_thread_safe")()
            except (OSError, AttributeError):
                continue
            return True
    return False


def _load(name: str, prefix: str) -> _Library | None:
    """FFTW library ``name`` ("fftw3f" single, "fftw3" double) with its planner made
    thread-safe, its symbols ``prefix*`` typed; None where either is not possible."""
    if pyfftw is None:
        return None
    for path in _candidates(name):
        try:
            lib = ctypes.CDLL(path)
            symbols = [getattr(lib, f"{prefix}_{s}") for s in (
                "plan_many_dft", "plan_many_dft_r2c", "execute_dft", "execute_dft_r2c",
                "destroy_plan")]
        except (OSError, AttributeError):
            continue
        plan_c2c, plan_r2c, execute_c2c, execute_r2c, destroy = symbols
        plan_c2c.restype = plan_r2c.restype = ctypes.c_void_p
        plan_c2c.argtypes = [*_PLAN_ARGS, ctypes.c_int, ctypes.c_uint]  # sign, flags
        plan_r2c.argtypes = [*_PLAN_ARGS, ctypes.c_uint]
        for execute in (execute_c2c, execute_r2c):
            execute.restype = None
            # plan, in, out as addresses (numba passes array.ctypes.data as an integer)
            execute.argtypes = [ctypes.c_size_t] * 3
        destroy.restype, destroy.argtypes = None, [ctypes.c_void_p]
        if not _thread_safe(prefix, name):
            return None
        return _Library(plan_c2c, plan_r2c, execute_c2c, execute_r2c, destroy)
    return None


_SINGLE = _load("fftw3f", "fftwf")  # loaded once; immutable
_DOUBLE = _load("fftw3", "fftw")
execute_dft = _SINGLE.execute_c2c if _SINGLE is not None else None
execute_dft_double = _DOUBLE.execute_c2c if _DOUBLE is not None else None
execute_dft_r2c_double = _DOUBLE.execute_r2c if _DOUBLE is not None else None
_KINDS = {  # kind: (library, complex-to-complex?, input dtype, output dtype)
    "c64": (_SINGLE, True, np.complex64, np.complex64),
    "c128": (_DOUBLE, True, np.complex128, np.complex128),
    "r2c128": (_DOUBLE, False, np.float64, np.complex128),
}


def available() -> bool:
    """Whether pyFFTW imports on this machine."""
    return pyfftw is not None


def native_available() -> bool:
    """Whether compiled kernels can call FFTW (single and double precision) here."""
    return _SINGLE is not None and _DOUBLE is not None


def frame_aligned(shape: tuple[int, int]) -> bool:
    """Whether every frame of a stack of complex64 ``shape`` frames starts at FFTW's SIMD
    alignment when the stack does (then each frame can go through the frame plans)."""
    return native_available() and (shape[0] * shape[1] * 8) % pyfftw.simd_alignment == 0


def require_aligned(*stacks: np.ndarray) -> None:
    """Raise unless each (…, M, M) complex64 stack is C-contiguous and starts at FFTW's SIMD
    alignment (its frames then all do, see :func:`frame_aligned`): FFTW's aligned loads on
    a misaligned frame would crash the process."""
    for a in stacks:
        if (a.dtype != np.complex64 or not a.flags.c_contiguous
                or a.ctypes.data % pyfftw.simd_alignment):
            raise ValueError("FFTW frames must be aligned C-contiguous complex64 stacks "
                             "(ptychompi.backends.cpu.fftw.empty_aligned)")


def empty_aligned(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised array aligned for FFTW's SIMD codelets (FFT inputs made by the
    engines then go to FFTW without a copy)."""
    if pyfftw is None:
        return np.empty(shape, dtype=dtype)
    return pyfftw.empty_aligned(shape, dtype=dtype)


def zeros_aligned(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """:func:`empty_aligned`, zeroed."""
    out = empty_aligned(shape, dtype)
    out[...] = 0
    return out


# ---------------------------------------------------------------- the plan cache
class FftwPlans:
    """Every FFTW plan of one backend, under one lock: each thread's pyFFTW batch plans and
    the single-frame plans of the compiled kernels. :meth:`close` destroys them all; a plan
    must not run after that (close a backend only once its work is done)."""

    def __init__(self) -> None:
        if pyfftw is None:
            raise RuntimeError("pyfftw is not installed")
        self._lock = threading.Lock()
        self._batch: dict[int, OrderedDict] = {}  # thread identity -> its plans
        self._frames: dict[tuple, tuple[int, _Library]] = {}
        self._closed = False

    def __len__(self) -> int:
        """The number of plans held (all threads')."""
        with self._lock:
            return len(self._frames) + sum(len(p) for p in self._batch.values())

    @property
    def closed(self) -> bool:
        return self._closed

    def _check(self) -> None:
        if self._closed:
            raise ResourceClosed("the backend's FFT plan cache")

    def _thread_plans(self) -> OrderedDict:
        """The calling thread's batch plans (made on first use; dead threads' dropped)."""
        plans = self._batch.get(threading.get_ident())
        if plans is None:
            with self._lock:
                self._check()
                alive = {t.ident for t in threading.enumerate()}
                for ident in [i for i in self._batch if i not in alive]:
                    del self._batch[ident]
                plans = self._batch[threading.get_ident()] = OrderedDict()
        return plans

    def thread_plans(self) -> dict[tuple, int]:
        """The calling thread's batch plans: key -> bytes of the plan's buffers."""
        return {key: e[1].nbytes + e[2].nbytes for key, e in self._thread_plans().items()}

    def batch_plan(self, kind: str, frames: int, in_frame: tuple[int, int],
                   in_dtype: np.dtype, out_frame: tuple[int, int],
                   out_dtype: np.dtype) -> tuple[Any, np.ndarray, np.ndarray]:
        """A pyFFTW plan of ``frames`` frames for the calling thread, with its own aligned
        input and output arrays."""
        self._check()
        plans = self._thread_plans()
        key = (kind, frames, in_frame, in_dtype.str, out_frame)
        entry = plans.get(key)
        if entry is not None:
            plans.move_to_end(key)
            return entry
        with self._lock:
            self._check()
            a = pyfftw.empty_aligned((frames, *in_frame), dtype=in_dtype)
            b = pyfftw.empty_aligned((frames, *out_frame), dtype=out_dtype)
            direction = "FFTW_FORWARD" if kind in ("fft", "rfft") else "FFTW_BACKWARD"
            plan = pyfftw.FFTW(a, b, axes=(-2, -1), direction=direction,
                               flags=("FFTW_ESTIMATE",), threads=1)
        entry = plans[key] = (plan, a, b)
        while len(plans) > 1 and (len(plans) > PLANS_PER_THREAD or sum(
                e[1].nbytes + e[2].nbytes for e in plans.values()) > PLAN_BYTES_PER_THREAD):
            plans.popitem(last=False)
        return entry

    def frame_plan(self, shape: tuple[int, int], direction: int, kind: str = "c64") -> int:
        """The address of an out-of-place plan for one ``shape`` frame, for compiled kernels
        (made once): complex64 ("c64") or complex128 ("c128") in ``direction``, or real
        float64 to its half spectrum ("r2c128", forward). Executing it is thread-safe for
        distinct arrays aligned like the plan's (:func:`require_aligned`)."""
        key = (int(shape[0]), int(shape[1]), int(direction), kind)
        entry = self._frames.get(key)  # (emptied by close)
        if entry is not None:
            return entry[0]
        if not native_available():
            raise RuntimeError("FFTW's C libraries are not available")
        with self._lock:
            self._check()
            entry = self._frames.get(key)
            if entry is None:
                lib, c2c, in_dtype, out_dtype = _KINDS[kind]
                out_shape = key[:2] if c2c else (key[0], key[1] // 2 + 1)
                a = empty_aligned(key[:2], in_dtype)
                b = empty_aligned(out_shape, out_dtype)
                dims = (ctypes.c_int * 2)(*key[:2])
                args = [2, dims, 1, a.ctypes.data, None, 1, 0, b.ctypes.data, None, 1, 0]
                plan = (lib.plan_c2c(*args, direction, FFTW_ESTIMATE) if c2c
                        else lib.plan_r2c(*args, FFTW_ESTIMATE))
                if not plan:
                    raise RuntimeError(f"FFTW could not plan a {shape} {kind} frame")
                entry = self._frames[key] = (plan, lib)
        return entry[0]

    def close(self) -> None:
        """Destroy every plan (idempotent); using the cache afterwards raises
        :class:`~ptychompi.backends.resources.ResourceClosed`."""
        with self._lock:
            self._closed = True
            frames, self._frames = self._frames, {}
            batch, self._batch = self._batch, {}
            for plan, lib in frames.values():
                lib.destroy(plan)
        for plans in batch.values():  # pyFFTW destroys a plan when it is freed
            plans.clear()


# ---------------------------------------------------------------- batched transforms
class FftwTransforms:
    """``fft2``/``ifft2``/``rfft2``/``irfft2`` over the last two axes, unitary, with FFTW.

    The frames of a call go through single-threaded FFTW plans in blocks of up to
    :data:`BLOCK` (aligned blocks in place of the plan's arrays, others copied into them),
    scaled on the way out, so the plans depend only on the frame shape and the block length
    (a bounded set however the callers' batch sizes vary) and every frame is transformed by
    the same plan whatever shares its call. A call with ``threads > 1`` spreads its blocks
    over the ``pool`` (FFTW's own threads were slower and erratic on small blocks); without
    a pool the blocks run on the calling thread. ``plans``: the cache to plan in (a new one
    when not given).
    """

    def __init__(self, plans: FftwPlans | None = None, pool: WorkerPool | None = None) -> None:
        self.plans = plans if plans is not None else FftwPlans()
        self._pool = pool

    def _blocks(self, kind: str, src: np.ndarray, out: np.ndarray, blocks: list[int],
                scale: Any, block: int) -> None:
        """Transform ``src[start:start + block]`` into ``out`` for each start (this thread's
        plans)."""
        n = src.shape[0]
        for start in blocks:
            stop = min(n, start + block)
            plan, own_in, own_out = self.plans.batch_plan(kind, stop - start, src.shape[1:],
                                                          src.dtype, out.shape[1:], out.dtype)
            block_in, block_out = src[start:stop], out[start:stop]
            if _fits(block_in, own_in) and _fits(block_out, own_out):
                plan.update_arrays(block_in, block_out)  # no copies
                try:
                    plan.execute()
                finally:  # the plan never keeps (or later writes into) a caller's arrays
                    plan.update_arrays(own_in, own_out)
                block_out *= scale
            else:
                own_in[...] = block_in
                plan.execute()
                np.multiply(own_out, scale, out=block_out)

    def _run(self, kind: str, a: np.ndarray, out_frame: tuple[int, int], out_dtype: np.dtype,
             threads: int, real_size: tuple[int, int]) -> np.ndarray:
        lead = a.shape[:-2]
        n = int(np.prod(lead, dtype=np.int64))
        src = a.reshape(n, *a.shape[-2:])  # a view when ``a`` is contiguous
        out = empty_aligned((n, *out_frame), out_dtype)
        scale = out_dtype.type(1.0 / np.sqrt(real_size[0] * real_size[1]))
        threads = max(1, min(threads, n))
        frame_bytes = max(1, src[:1].nbytes)
        block = max(1, min(BLOCK, BLOCK_BYTES // frame_bytes,
                           -(-n // threads)))  # a few frames still go to every thread
        starts = list(range(0, n, block))
        if threads == 1 or self._pool is None:
            self._blocks(kind, src, out, starts, scale, block)
        else:  # blocks spread over threads (the caller takes the first share)
            self._pool.run([partial(self._blocks, kind, src, out, starts[t::threads], scale,
                                    block) for t in range(threads)])
        return out.reshape(*lead, *out_frame)

    def fft2(self, a: np.ndarray, threads: int = 1) -> np.ndarray:
        a = _as_complex(a)
        return self._run("fft", a, a.shape[-2:], a.dtype, threads, a.shape[-2:])

    def ifft2(self, a: np.ndarray, threads: int = 1) -> np.ndarray:
        a = _as_complex(a)
        return self._run("ifft", a, a.shape[-2:], a.dtype, threads, a.shape[-2:])

    def rfft2(self, a: np.ndarray, threads: int = 1) -> np.ndarray:
        a = np.asarray(a)
        if a.dtype not in _COMPLEX_OF:
            a = a.astype(np.float64)
        half = (a.shape[-2], a.shape[-1] // 2 + 1)
        return self._run("rfft", a, half, _COMPLEX_OF[a.dtype], threads, a.shape[-2:])

    def irfft2(self, a: np.ndarray, shape: tuple[int, int], threads: int = 1) -> np.ndarray:
        """Inverse of :meth:`rfft2` to real frames of ``shape``."""
        a = _as_complex(a)
        shape = (int(shape[0]), int(shape[1]))
        if a.shape[-2:] != (shape[0], shape[1] // 2 + 1):
            raise ValueError(f"half spectrum {a.shape[-2:]} does not match frames {shape}")
        return self._run("irfft", a, shape, _REAL_OF[a.dtype], threads, shape)


def _fits(a: np.ndarray, planned: np.ndarray) -> bool:
    """Whether ``a`` can replace a plan's array: same layout, aligned like it (a plan made
    on aligned arrays computes identically on any aligned array)."""
    return (a.dtype == planned.dtype and a.strides == planned.strides
            and a.ctypes.data % pyfftw.simd_alignment == 0 and a.flags.writeable)


def _as_complex(a: Any) -> np.ndarray:
    a = np.asarray(a)
    return a if a.dtype in _COMPLEX else a.astype(np.complex128)
