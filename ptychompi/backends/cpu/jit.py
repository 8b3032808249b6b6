"""numba compile options and decorator shared by all CPU kernel modules."""

from __future__ import annotations

from collections.abc import Callable

import numba

JIT = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}
# per-position dot products: the additions may be reordered (vectorised partial sums), which
# is deterministic for a given build and changes only double-precision rounding
JIT_SUMS = {**JIT, "fastmath": {"reassoc"}}
# finite values only (no NaN, infinity or signed-zero rules): lets the compiler vectorise the
# max reductions of a kernel whose every other operation keeps its IEEE result, so the
# output is bit for bit that of JIT on finite data (a kernel with NaN checks must not use it)
JIT_FINITE = {**JIT, "fastmath": {"nnan", "ninf", "nsz"}}


def jit(options: dict) -> Callable[[Callable], Callable]:
    """``numba.njit(**options)``, without the on-disk cache where no cache folder is writable.

    numba refuses ``cache=True`` at decoration time ("no locator available") when neither the
    package's ``__pycache__`` nor the user's cache folder (``NUMBA_CACHE_DIR``) can be
    written, e.g. a read-only install with a read-only home: the kernels then compile in
    every process instead of failing the import.
    """
    def wrap(fn: Callable) -> Callable:
        try:
            return numba.njit(**options)(fn)
        except RuntimeError:
            return numba.njit(**{**options, "cache": False})(fn)

    return wrap
