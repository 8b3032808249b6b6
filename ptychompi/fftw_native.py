"""The names :mod:`ptychompi.fused_kernels` and :mod:`ptychompi.engines.position_kernels`
import for FFTW's C interface; everything lives in :mod:`ptychompi.fftw` now.

Transitional: :func:`frame_plan` plans in a process-wide cache that nothing closes. Callers
take a backend's own plans instead, ``backend.fft_plans.frame_plan(shape, direction, kind)``
(:class:`ptychompi.fftw.FftwPlans`, destroyed by ``Backend.close()``); this module goes once
they all do.
"""

from __future__ import annotations

from functools import lru_cache

from .fftw import (  # noqa: F401 - re-exported for the callers named above
    FFTW_BACKWARD,
    FFTW_ESTIMATE,
    FFTW_FORWARD,
    FftwPlans,
    execute_dft,
    execute_dft_double,
    execute_dft_r2c_double,
    frame_aligned,
    require_aligned,
)
from .fftw import native_available as available  # noqa: F401


@lru_cache(maxsize=1)
def _shared() -> FftwPlans:
    return FftwPlans()


def frame_plan(shape: tuple[int, int], direction: int, kind: str = "c64") -> int:
    """:meth:`FftwPlans.frame_plan` of the process-wide transitional cache."""
    return _shared().frame_plan(shape, direction, kind)
