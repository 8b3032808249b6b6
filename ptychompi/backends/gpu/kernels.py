"""CUDA kernels for the GPU path of :mod:`ptychompi.model.physics`, compiled by CuPy at run time.

The sources are the ``.cu`` files of ``kernels/`` (shipped in the wheel as
``ptychompi/_kernels/``). Each file is compiled once per device with ``cupy.RawModule`` the first
time one of its kernels is used; the entry points are ``extern "C"`` functions, one per dtype
(see :data:`KERNELS`); a GPU backend keeps them in its :class:`KernelCache`. Importing this
module does not import cupy.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..resources import ResourceClosed

# source name -> the extern "C" kernels it defines
KERNELS: dict[str, tuple[str, ...]] = {
    "scatter_add": ("scatter_add_float32", "scatter_add_float64", "scatter_add_complex64",
                    "scatter_add_complex128"),
    "modulus": ("modulus_project_complex64", "modulus_project_complex128"),
}
COMPILE_OPTIONS: tuple[str, ...] = ("-std=c++17",)

_SCATTER_BLOCK = 256
_MODULUS_BLOCK = 256  # must equal MODULUS_BLOCK in modulus.cu
_MAX_GRID_Y = 65535
_MAX_MODULUS_BLOCKS = 8192


def kernel_dirs() -> tuple[Path, ...]:
    """Where the ``.cu`` sources are looked for, in order: package data, then source tree."""
    package = Path(__file__).resolve().parents[2]  # ptychompi/backends/gpu/kernels.py
    return (package / "_kernels", package.parent / "kernels")


def kernel_sources() -> dict[str, Path]:
    """Path of every kernel source by name (``scatter_add``, ``modulus``).

    Raises ``FileNotFoundError`` naming the searched folders when one is missing.
    """
    found: dict[str, Path] = {}
    for name in KERNELS:
        for folder in kernel_dirs():
            path = folder / f"{name}.cu"
            if path.is_file():
                found[name] = path
                break
        else:
            searched = ", ".join(str(d) for d in kernel_dirs())
            raise FileNotFoundError(
                f"CUDA source {name}.cu not found in {searched}; reinstall ptychompi")
    return found


class KernelCache:
    """Compiled modules per (device, source) and kernel functions per (device, kernel): a
    GPU backend's (``Backend.kernels``), emptied by ``Backend.close()``. CuPy keeps the
    compiled code itself too (per process, on disk), so a new cache does not recompile."""

    def __init__(self) -> None:
        self._modules: dict[tuple[int, str], Any] = {}
        self._functions: dict[tuple[int, str], Any] = {}
        self._lock = threading.Lock()
        self._closed = False

    def __len__(self) -> int:
        """The number of kernel functions held."""
        return len(self._functions)

    def get(self, source: str, kernel: str, device_id: int) -> Any:
        """The kernel ``kernel`` of ``source`` compiled for device ``device_id`` (current)."""
        key = (device_id, kernel)
        function = self._functions.get(key)
        if function is not None:
            return function
        if self._closed:
            raise ResourceClosed("the backend's GPU kernel cache")
        import cupy  # noqa: PLC0415

        with self._lock:
            module = self._modules.get((device_id, source))
            if module is None:
                module = cupy.RawModule(code=kernel_sources()[source].read_text(encoding="utf-8"),
                                        options=COMPILE_OPTIONS)
                self._modules[(device_id, source)] = module
            function = module.get_function(kernel)
            self._functions[key] = function
        return function

    def close(self) -> None:
        """Drop the compiled modules and functions (idempotent)."""
        with self._lock:
            self._closed = True
            self._modules.clear()
            self._functions.clear()


def _kernel(source: str, prefix: str, dtype: np.dtype, device_id: int,
            cache: KernelCache) -> Any:
    name = f"{prefix}_{np.dtype(dtype).name}"
    if name not in KERNELS[source]:
        raise TypeError(f"no {source} kernel for dtype {np.dtype(dtype)}")
    return cache.get(source, name, device_id)


def scatter_add_gpu(target: Any, values: Any, rows: np.ndarray, cols: np.ndarray, *,
                    cache: KernelCache) -> None:
    """``target[r:r+M0, c:c+M1] += values[j]`` for every window j, on the GPU, in place.

    ``target``: cupy (H, W) float32/float64/complex64/complex128 with contiguous rows;
    ``values``: cupy (B, M0, M1) (any strides, e.g. a broadcast view; cast to target's dtype);
    ``rows``, ``cols``: host integer arrays (B,) of top-left corners. Overlapping windows are
    summed with atomic adds, so float results may differ from the CPU path in the last bits.
    ``cache``: the backend's compiled kernels (``Backend.kernels``).
    """
    import cupy  # noqa: PLC0415

    if not isinstance(target, cupy.ndarray) or target.ndim != 2:
        raise TypeError("scatter_add_gpu: target must be a 2-D cupy array")
    if values.ndim != 3:
        raise ValueError(f"scatter_add_gpu: values must be (B, M0, M1), got {values.shape}")
    dtype = target.dtype
    if dtype.kind == "f" and np.dtype(values.dtype).kind == "c":
        raise TypeError(f"scatter_add_gpu: cannot add {values.dtype} values to a {dtype} target")
    itemsize = dtype.itemsize
    if target.strides[1] != itemsize or target.strides[0] % itemsize or target.strides[0] < 0:
        raise ValueError("scatter_add_gpu: target rows must be contiguous (C order)")
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    cols = np.asarray(cols, dtype=np.int64).reshape(-1)
    n, m0, m1 = values.shape
    if rows.shape != (n,) or cols.shape != (n,):
        raise ValueError(f"scatter_add_gpu: {n} windows but {rows.size} rows, {cols.size} cols")
    if n == 0 or m0 == 0 or m1 == 0:
        return
    height, width = target.shape
    if (rows.min() < 0 or cols.min() < 0 or rows.max() + m0 > height
            or cols.max() + m1 > width):
        raise ValueError(f"scatter_add_gpu: a {m0}x{m1} window falls outside the "
                         f"{height}x{width} target")
    with target.device:
        kernel = _kernel("scatter_add", "scatter_add", dtype, target.device.id, cache)
        values = cupy.ascontiguousarray(values, dtype=dtype)
        d_rows = cupy.asarray(rows)
        d_cols = cupy.asarray(cols)
        pixels = m0 * m1
        grid = ((pixels + _SCATTER_BLOCK - 1) // _SCATTER_BLOCK, min(n, _MAX_GRID_Y))
        kernel(grid, (_SCATTER_BLOCK,),
               (target, values, d_rows, d_cols, np.int64(n), np.int32(m0), np.int32(m1),
                np.int64(target.strides[0] // itemsize)))


def modulus_project_gpu(wave: Any, amplitude: Any, in_place: bool = True, *,
                        cache: KernelCache) -> tuple[Any, float]:
    """Fused modulus projection of ``wave`` (B, K, M, M) onto ``amplitude`` (B, M, M).

    Same semantics as :meth:`ptychompi.ops.Operations.modulus_project`:
    ``model = sqrt(Σ_k |ψ_k|²)``; on valid pixels (amplitude >= 0) every mode is scaled by
    ``A / (model + 1e-9)``, invalid pixels (amplitude -1) are left unchanged. Returns the
    projected wave (``wave`` itself when ``in_place``) and ``Σ_valid (model - A)²``
    accumulated in double, as a Python float.
    ``amplitude`` is broadcast to (B, M, M) and cast to the wave's real dtype; ``cache`` as
    for :func:`scatter_add_gpu`.
    """
    import cupy  # noqa: PLC0415

    if not isinstance(wave, cupy.ndarray) or wave.ndim != 4 or wave.dtype.kind != "c":
        raise TypeError("modulus_project_gpu: wave must be a complex (B, K, M, M) cupy array")
    b, k, m0, m1 = wave.shape
    real = np.dtype(np.float32 if wave.dtype == np.complex64 else np.float64)
    with wave.device:
        kernel = _kernel("modulus", "modulus_project", wave.dtype, wave.device.id, cache)
        amplitude = cupy.ascontiguousarray(
            cupy.broadcast_to(cupy.asarray(amplitude), (b, m0, m1)), dtype=real)
        if in_place:
            work = wave if wave.flags.c_contiguous else cupy.ascontiguousarray(wave)
        else:
            work = wave.copy(order="C")
        n = b * m0 * m1
        err = cupy.zeros(1, dtype=np.float64)
        if n:
            blocks = min((n + _MODULUS_BLOCK - 1) // _MODULUS_BLOCK, _MAX_MODULUS_BLOCKS)
            kernel((blocks,), (_MODULUS_BLOCK,),
                   (work, amplitude, np.int64(n), np.int64(m0 * m1), np.int32(k), err))
        if in_place and work is not wave:
            wave[...] = work
            work = wave
        return work, float(err.get()[0])
