"""FFTW's C interface for compiled (numba) kernels: single-frame plans to execute on any
aligned frame from inside a kernel, so that a per-position pipeline (FFTs and the element-wise
passes between them) runs in one call without returning to Python.

The library is the single-precision FFTW that pyFFTW ships (or the system's). Plans are made
with ``FFTW_ESTIMATE``, like :mod:`ptychompi.fftw`'s, which compute bit-identical transforms
of a frame (tested); they are made under that module's planner lock and kept for the life of
the process (a few per frame shape). ``fftwf_execute_dft`` on a plan is thread-safe for
distinct arrays, which must be aligned like the plan's (:func:`frame_aligned`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
from typing import Any

import numpy as np

from . import fftw

FFTW_FORWARD, FFTW_BACKWARD = -1, 1
FFTW_ESTIMATE = 1 << 6


def _load() -> Any:
    """The single-precision FFTW library, or None."""
    candidates = []
    if fftw.pyfftw is not None:
        libs = os.path.join(os.path.dirname(os.path.dirname(fftw.pyfftw.__file__)), "pyfftw.libs")
        candidates += sorted(glob.glob(os.path.join(libs, "libfftw3f-*.so*")))
    found = ctypes.util.find_library("fftw3f")
    if found:
        candidates.append(found)
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
            lib.fftwf_execute_dft  # noqa: B018 - the symbol must be there
            lib.fftwf_plan_many_dft  # noqa: B018
        except (OSError, AttributeError):
            continue
        lib.fftwf_plan_many_dft.restype = ctypes.c_void_p
        lib.fftwf_plan_many_dft.argtypes = [
            ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.c_void_p,
            ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
            ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_uint]
        lib.fftwf_execute_dft.restype = None
        # plan, in, out as addresses (numba passes array.ctypes.data as an integer)
        lib.fftwf_execute_dft.argtypes = [ctypes.c_size_t] * 3
        return lib
    return None


_LIB = _load() if fftw.pyfftw is not None else None
execute_dft = _LIB.fftwf_execute_dft if _LIB is not None else None
_PLANS: dict[tuple[int, int, int], int] = {}


def available() -> bool:
    """Whether the compiled kernels can call FFTW on this machine."""
    return execute_dft is not None


def frame_aligned(shape: tuple[int, int]) -> bool:
    """Whether every frame of a stack of complex64 ``shape`` frames starts at FFTW's SIMD
    alignment when the stack does (then each frame can go through the plans)."""
    return available() and (shape[0] * shape[1] * 8) % fftw.pyfftw.simd_alignment == 0


def require_aligned(*stacks: np.ndarray) -> None:
    """Raise unless each (…, M, M) complex64 stack is C-contiguous and starts at FFTW's SIMD
    alignment (its frames then all do, see :func:`frame_aligned`): FFTW's aligned loads on
    a misaligned frame would crash the process."""
    for a in stacks:
        if (a.dtype != np.complex64 or not a.flags.c_contiguous
                or a.ctypes.data % fftw.pyfftw.simd_alignment):
            raise ValueError("FFTW frames must be aligned C-contiguous complex64 stacks "
                             "(ptychompi.fftw.empty_aligned)")


def frame_plan(shape: tuple[int, int], direction: int) -> int:
    """The address of an out-of-place complex64 plan for one ``shape`` frame (made once)."""
    if not available():
        raise RuntimeError("FFTW's C library is not available")
    key = (int(shape[0]), int(shape[1]), int(direction))
    plan = _PLANS.get(key)
    if plan is None:
        with fftw._PLANNER:
            plan = _PLANS.get(key)
            if plan is None:
                a = fftw.empty_aligned(shape, np.complex64)
                b = fftw.empty_aligned(shape, np.complex64)
                dims = (ctypes.c_int * 2)(*key[:2])
                plan = _LIB.fftwf_plan_many_dft(2, dims, 1, a.ctypes.data, None, 1, 0,
                                                b.ctypes.data, None, 1, 0, direction,
                                                FFTW_ESTIMATE)
                if not plan:
                    raise RuntimeError(f"FFTW could not plan a {shape} frame")
                _PLANS[key] = plan
    return plan
