"""FFTW's C interface for compiled (numba) kernels: single-frame plans to execute on any
aligned frame from inside a kernel, so that a per-position pipeline (FFTs and the element-wise
passes between them) runs in one call without returning to Python.

The libraries are the single- and double-precision FFTW that pyFFTW ships (or the system's).
Plans are made with ``FFTW_ESTIMATE``, like :mod:`ptychompi.fftw`'s, and compute the same
transforms of a frame (tested bit for bit); they are made under that module's planner lock
and kept for the life of the process (a few per frame shape). Executing a plan is
thread-safe for distinct arrays, which must be aligned like the plan's
(:func:`require_aligned`, :func:`frame_aligned`).
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
_INT_P = ctypes.POINTER(ctypes.c_int)
_PLAN_ARGS = [ctypes.c_int, _INT_P, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
              ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
              ctypes.c_int]


def _load(name: str, prefix: str) -> Any:
    """FFTW library ``name`` ("fftw3f" single, "fftw3" double), its symbols ``prefix*``
    typed, or None."""
    candidates = []
    if fftw.pyfftw is not None:
        libs = os.path.join(os.path.dirname(os.path.dirname(fftw.pyfftw.__file__)), "pyfftw.libs")
        candidates += sorted(glob.glob(os.path.join(libs, f"lib{name}-*.so*")))
    found = ctypes.util.find_library(name)
    if found:
        candidates.append(found)
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
            symbols = [getattr(lib, f"{prefix}_{s}") for s in (
                "plan_many_dft", "plan_many_dft_r2c", "execute_dft", "execute_dft_r2c")]
        except (OSError, AttributeError):
            continue
        plan_c2c, plan_r2c, execute_c2c, execute_r2c = symbols
        plan_c2c.restype = plan_r2c.restype = ctypes.c_void_p
        plan_c2c.argtypes = [*_PLAN_ARGS, ctypes.c_int, ctypes.c_uint]  # sign, flags
        plan_r2c.argtypes = [*_PLAN_ARGS, ctypes.c_uint]
        for execute in (execute_c2c, execute_r2c):
            execute.restype = None
            # plan, in, out as addresses (numba passes array.ctypes.data as an integer)
            execute.argtypes = [ctypes.c_size_t] * 3
        return lib
    return None


_SINGLE = _load("fftw3f", "fftwf") if fftw.pyfftw is not None else None
_DOUBLE = _load("fftw3", "fftw") if fftw.pyfftw is not None else None
execute_dft = _SINGLE.fftwf_execute_dft if _SINGLE is not None else None
execute_dft_double = _DOUBLE.fftw_execute_dft if _DOUBLE is not None else None
execute_dft_r2c_double = _DOUBLE.fftw_execute_dft_r2c if _DOUBLE is not None else None
_PLANS: dict[tuple, int] = {}
_KINDS = {  # kind: (library, plan function, input dtype, output dtype)
    "c64": (_SINGLE, "fftwf_plan_many_dft", np.complex64, np.complex64),
    "c128": (_DOUBLE, "fftw_plan_many_dft", np.complex128, np.complex128),
    "r2c128": (_DOUBLE, "fftw_plan_many_dft_r2c", np.float64, np.complex128),
}


def available() -> bool:
    """Whether the compiled kernels can call FFTW (single and double precision) here."""
    return _SINGLE is not None and _DOUBLE is not None


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


def frame_plan(shape: tuple[int, int], direction: int, kind: str = "c64") -> int:
    """The address of an out-of-place plan for one ``shape`` frame (made once): complex64
    ("c64") or complex128 ("c128") in ``direction``, or real float64 to its half spectrum
    ("r2c128", forward)."""
    if not available():
        raise RuntimeError("FFTW's C libraries are not available")
    key = (int(shape[0]), int(shape[1]), int(direction), kind)
    plan = _PLANS.get(key)
    if plan is None:
        with fftw._PLANNER:
            plan = _PLANS.get(key)
            if plan is None:
                lib, name, in_dtype, out_dtype = _KINDS[kind]
                out_shape = key[:2] if kind != "r2c128" else (key[0], key[1] // 2 + 1)
                a = fftw.empty_aligned(key[:2], in_dtype)
                b = fftw.empty_aligned(out_shape, out_dtype)
                dims = (ctypes.c_int * 2)(*key[:2])
                args = [2, dims, 1, a.ctypes.data, None, 1, 0, b.ctypes.data, None, 1, 0]
                if kind != "r2c128":
                    args.append(direction)
                plan = getattr(lib, name)(*args, FFTW_ESTIMATE)
                if not plan:
                    raise RuntimeError(f"FFTW could not plan a {shape} {kind} frame")
                _PLANS[key] = plan
    return plan
