"""The engines' operations (:class:`Operations`): one interface, a CPU implementation with numba
kernels and fused FFTW pipelines (:class:`CpuOps`) and an array-module one (:class:`ArrayOps`:
CuPy on a GPU, numpy as the CPU reference). A backend makes its own (``Backend.ops``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .array_ops import ArrayOps
from .cpu_ops import CpuOps
from .steps import (
    DmFourierJob,
    DmObjectJob,
    DmProbeJob,
    EpieJob,
    LsqmlJob,
    Operations,
    PositionJob,
    ProbeShifts,
)

if TYPE_CHECKING:
    from ..backends import Backend

KINDS = ("compiled", "array")


def make_ops(backend: Backend) -> Operations:
    """The operations ``backend.ops_kind`` names: "compiled" (the kernels on a CPU; a GPU has
    only the array expressions) or "array"."""
    if backend.ops_kind not in KINDS:
        raise ValueError(f"ops kind {backend.ops_kind!r}; use one of {', '.join(KINDS)}")
    if backend.is_gpu or backend.ops_kind == "array":
        return ArrayOps(backend)
    return CpuOps(backend)


__all__ = ["ArrayOps", "CpuOps", "DmFourierJob", "DmObjectJob", "DmProbeJob", "EpieJob",
           "LsqmlJob", "Operations", "PositionJob", "ProbeShifts", "make_ops"]
