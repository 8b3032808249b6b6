"""Unitary 2-D FFTs on the CPU through FFTW (pyFFTW), the CPU backend's default.

FFTW's SIMD codelets transform batches of 128² complex64 frames about 3x faster per core
than scipy's pocketfft on this project's machines (``benchmarks/engines.py`` reports both).
Plans are made with ``FFTW_ESTIMATE``: the planner picks the algorithm from the shape alone,
not from timings, so every process, rank and thread computes bit-identical transforms, and a
frame's transform does not depend on how many frames share the call (tested). Transforms are
always out of place, through each plan's own aligned buffers (an in-place plan rounds
differently, and whether a slice could go in place would depend on its alignment, i.e. on
the chunking).

Plans are kept per thread (a pyFFTW plan holds its arrays while it runs, so two threads must
never share one), at most 64 and 128 MiB of buffers each, least recently used first out;
large frames go in shorter blocks (at most 4 MiB of input each).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import numpy as np

try:  # an optional speed-up: without it the backend uses scipy.fft
    import pyfftw
except ImportError:  # pragma: no cover - exercised where pyfftw is missing
    pyfftw = None

PLANS_PER_THREAD = 64
PLAN_BYTES_PER_THREAD = 128 << 20  # the plans' own buffers, per thread
BLOCK = 16  # frames per FFTW execution, at most
BLOCK_BYTES = 4 << 20  # and at most this much input per block (large frames: fewer)
_PLANNER = threading.Lock()  # FFTW's planner is not thread-safe; execution is

_COMPLEX = {np.dtype(np.complex64), np.dtype(np.complex128)}
_REAL_OF = {np.dtype(np.complex64): np.dtype(np.float32),
            np.dtype(np.complex128): np.dtype(np.float64)}
_COMPLEX_OF = {v: k for k, v in _REAL_OF.items()}


def available() -> bool:
    """Whether pyFFTW imports on this machine."""
    return pyfftw is not None


class FftwTransforms:
    """``fft2``/``ifft2``/``rfft2``/``irfft2`` over the last two axes, unitary, with FFTW.

    The frames of a call go through single-threaded FFTW plans in blocks of up to
    :data:`BLOCK` (aligned blocks in place of the plan's arrays, others copied into them),
    scaled on the way out, so the plans depend only on the frame shape and the block length
    (a bounded set however the callers' batch sizes vary) and every frame is transformed by
    the same plan whatever shares its call. A call with ``threads > 1`` spreads its blocks
    over that many threads (FFTW's own threads were slower and erratic on small blocks).
    """

    def __init__(self) -> None:
        if pyfftw is None:
            raise RuntimeError("pyfftw is not installed")
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0

    def _plan(self, kind: str, frames: int, in_frame: tuple[int, int], in_dtype: np.dtype,
              out_frame: tuple[int, int], out_dtype: np.dtype) -> Any:
        plans: OrderedDict | None = getattr(self._local, "plans", None)
        if plans is None:
            plans = self._local.plans = OrderedDict()
        key = (kind, frames, in_frame, in_dtype.str, out_frame)
        entry = plans.get(key)
        if entry is not None:
            plans.move_to_end(key)
            return entry
        with _PLANNER:
            a = pyfftw.empty_aligned((frames, *in_frame), dtype=in_dtype)
            b = pyfftw.empty_aligned((frames, *out_frame), dtype=out_dtype)
            direction = "FFTW_FORWARD" if kind in ("fft", "rfft") else "FFTW_BACKWARD"
            plan = pyfftw.FFTW(a, b, axes=(-2, -1), direction=direction,
                               flags=("FFTW_ESTIMATE",), threads=1)
        entry = plans[key] = (plan, a, b)  # the plan and its own buffers
        while len(plans) > 1 and (len(plans) > PLANS_PER_THREAD or sum(
                e[1].nbytes + e[2].nbytes for e in plans.values()) > PLAN_BYTES_PER_THREAD):
            plans.popitem(last=False)
        return entry

    def _blocks(self, kind: str, src: np.ndarray, out: np.ndarray, blocks: list[int],
                scale: Any, block: int) -> None:
        """Transform ``src[start:start + block]`` into ``out`` for each start (this thread's
        plans)."""
        n = src.shape[0]
        for start in blocks:
            stop = min(n, start + block)
            plan, own_in, own_out = self._plan(kind, stop - start, src.shape[1:], src.dtype,
                                               out.shape[1:], out.dtype)
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
        if threads == 1:
            self._blocks(kind, src, out, starts, scale, block)
        else:  # blocks spread over threads (the caller takes the first share)
            pool = self._workers(threads - 1)
            others = [pool.submit(self._blocks, kind, src, out, starts[t::threads], scale,
                                  block)
                      for t in range(1, threads)]
            try:
                self._blocks(kind, src, out, starts[0::threads], scale, block)
            finally:
                wait(others)
            for f in others:
                f.result()
        return out.reshape(*lead, *out_frame)

    def _workers(self, count: int) -> ThreadPoolExecutor:
        """A pool of at least ``count`` threads for multi-threaded calls (made on demand)."""
        if self._pool is None or self._pool_size < count:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            self._pool = ThreadPoolExecutor(count, thread_name_prefix="ptychompi-fftw")
            self._pool_size = count
        return self._pool

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


def _fits(a: np.ndarray, planned: np.ndarray) -> bool:
    """Whether ``a`` can replace a plan's array: same layout, aligned like it (a plan made
    on aligned arrays computes identically on any aligned array)."""
    return (a.dtype == planned.dtype and a.strides == planned.strides
            and a.ctypes.data % pyfftw.simd_alignment == 0 and a.flags.writeable)


def _as_complex(a: Any) -> np.ndarray:
    a = np.asarray(a)
    return a if a.dtype in _COMPLEX else a.astype(np.complex128)
