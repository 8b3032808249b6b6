"""Fused CPU kernels (numba) for the element-wise passes of the engines.

Each kernel does in one loop over a frame, while the frame is in cache, what the plain numpy
expression named in its docstring does in several passes over whole (B, K, M, M) stacks. They
are compiled on first use (``cache=True``: once per machine, then loaded from ``__pycache__``)
and release the GIL, so the engines' worker threads (:meth:`Engine.map_chunks`) run them in
parallel. The GPU path never calls them (:mod:`ptychompi.backends.gpu.kernels` and
``kernels/*.cu``).

Conventions: waves are C-contiguous (B, K, M, M) complex arrays, amplitudes (B, M, M) real
with masked pixels < 0, probes (B, K, M, M) or (1, K, M, M) (one probe for every position),
objects 2-D; windows of the object are ``obj[rows[j]:rows[j]+M, cols[j]:cols[j]+M]``.
Element-wise arithmetic stays in the arrays' working precision (complex64/float32) in the
order numpy uses; sums over pixels or positions are accumulated in the precision of the
output the caller passes: double precision everywhere except LSQML's object tiles (working
precision; LSQML does not amplify their rounding, see :mod:`ptychompi.engines.lsqml`).
Row buffers hold per-pixel partial sums so that the inner loops vectorise without reordering
floating-point additions (no ``fastmath``); only :func:`lsqml_step_terms` lets its per-position
double-precision dot products be reassociated (deterministic for a given build). No kernel
mixes the rounding of one frame into another's, so results do not depend on how positions are
grouped into chunks, threads or tiles beyond the order of the sums.
"""

from __future__ import annotations

from .scheduling import first_fit_batches
from .sums import (
    conj_window_products,
    lsqml_object_terms,
    lsqml_step_terms,
    object_terms,
    probe_terms,
    weighted_power,
    window_power,
)
from .updates import epie_update, lsqml_object_direction, reduce_accumulators
from .waves import (
    apply_transfer,
    dm_fourier_update,
    exit_waves,
    modulus_project,
    ramp_fill,
    ramp_sum,
)

__all__ = [
    "apply_transfer", "conj_window_products", "dm_fourier_update", "epie_update", "exit_waves",
    "first_fit_batches", "lsqml_object_direction", "lsqml_object_terms", "lsqml_step_terms",
    "modulus_project", "object_terms", "probe_terms", "ramp_fill", "ramp_sum",
    "reduce_accumulators", "weighted_power", "window_power",
]
