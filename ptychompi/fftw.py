"""Unitary 2-D FFTs on the CPU through FFTW (pyFFTW), the CPU backend's default.

FFTW's SIMD codelets transform batches of 128² complex64 frames about 3x faster per core
than scipy's pocketfft on this project's machines (``benchmarks/engines.py`` reports both).
Plans are made with ``FFTW_ESTIMATE``: the planner picks the algorithm from the shape alone,
not from timings, so every process, rank and thread computes bit-identical transforms, and a
frame's transform does not depend on how many frames share the call (tested). Transforms are
always out of place into fresh 32-byte-aligned arrays (an in-place plan rounds differently,
and whether a slice could go in place would depend on its alignment, i.e. on the chunking).

Plans are kept per thread (a pyFFTW plan holds its arrays while it runs, so two threads must
never share one), a few dozen shapes each, least recently used first out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

try:  # an optional speed-up: without it the backend uses scipy.fft
    import pyfftw
except ImportError:  # pragma: no cover - exercised where pyfftw is missing
    pyfftw = None

PLANS_PER_THREAD = 48
_PLANNER = threading.Lock()  # FFTW's planner is not thread-safe; execution is

_COMPLEX = {np.dtype(np.complex64), np.dtype(np.complex128)}
_REAL_OF = {np.dtype(np.complex64): np.dtype(np.float32),
            np.dtype(np.complex128): np.dtype(np.float64)}
_COMPLEX_OF = {v: k for k, v in _REAL_OF.items()}


def available() -> bool:
    """Whether pyFFTW imports on this machine."""
    return pyfftw is not None


class FftwTransforms:
    """``fft2``/``ifft2``/``rfft2``/``irfft2`` over the last two axes, unitary, with FFTW."""

    def __init__(self) -> None:
        if pyfftw is None:
            raise RuntimeError("pyfftw is not installed")
        self._local = threading.local()

    def _plan(self, kind: str, in_shape: tuple[int, ...], in_dtype: np.dtype,
              out_shape: tuple[int, ...], out_dtype: np.dtype, threads: int) -> Any:
        plans: OrderedDict | None = getattr(self._local, "plans", None)
        if plans is None:
            plans = self._local.plans = OrderedDict()
        key = (kind, in_shape, in_dtype.str, out_shape, threads)
        plan = plans.get(key)
        if plan is not None:
            plans.move_to_end(key)
            return plan
        with _PLANNER:
            a = pyfftw.empty_aligned(in_shape, dtype=in_dtype)
            b = pyfftw.empty_aligned(out_shape, dtype=out_dtype)
            direction = "FFTW_FORWARD" if kind in ("fft", "rfft") else "FFTW_BACKWARD"
            plan = pyfftw.FFTW(a, b, axes=(-2, -1), direction=direction,
                               flags=("FFTW_ESTIMATE",), threads=max(1, threads))
        plans[key] = plan
        if len(plans) > PLANS_PER_THREAD:
            plans.popitem(last=False)
        return plan

    def _run(self, kind: str, a: np.ndarray, out_shape: tuple[int, ...], out_dtype: np.dtype,
             threads: int) -> np.ndarray:
        plan = self._plan(kind, a.shape, a.dtype, out_shape, out_dtype, threads)
        out = pyfftw.empty_aligned(out_shape, dtype=out_dtype)
        return plan(a, out, normalise_idft=False, ortho=True)

    def fft2(self, a: np.ndarray, threads: int = 1) -> np.ndarray:
        a = _as_complex(a)
        return self._run("fft", a, a.shape, a.dtype, threads)

    def ifft2(self, a: np.ndarray, threads: int = 1) -> np.ndarray:
        a = _as_complex(a)
        return self._run("ifft", a, a.shape, a.dtype, threads)

    def rfft2(self, a: np.ndarray, threads: int = 1) -> np.ndarray:
        a = np.asarray(a)
        if a.dtype not in _COMPLEX_OF:
            a = a.astype(np.float64)
        shape = (*a.shape[:-1], a.shape[-1] // 2 + 1)
        return self._run("rfft", a, shape, _COMPLEX_OF[a.dtype], threads)

    def irfft2(self, a: np.ndarray, shape: tuple[int, int], threads: int = 1) -> np.ndarray:
        """Inverse of :meth:`rfft2`; ``a`` is overwritten (FFTW's multi-dimensional c2r)."""
        a = _as_complex(a)
        if a.shape[-2:] != (shape[0], shape[1] // 2 + 1):
            raise ValueError(f"half spectrum {a.shape[-2:]} does not match frames {shape}")
        return self._run("irfft", a, (*a.shape[:-2], *shape), _REAL_OF[a.dtype], threads)


def _as_complex(a: Any) -> np.ndarray:
    a = np.asarray(a)
    return a if a.dtype in _COMPLEX else a.astype(np.complex128)
