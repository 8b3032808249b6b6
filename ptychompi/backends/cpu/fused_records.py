"""Named records that the compiled pipelines of :mod:`ptychompi.backends.cpu.fused` take (built by
keyword, so that two arrays of one type cannot be swapped silently)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Plans(NamedTuple):
    """FFTW's complex64 plans of one frame and the near-field transfer function (empty in the
    far field: one FFT per propagation)."""

    forward: int
    backward: int
    transfer: np.ndarray


class Frames(NamedTuple):
    """Aligned (1, K, M, M) complex64 scratch frames of a pipeline."""

    psi: np.ndarray
    wave: np.ndarray
    chi: np.ndarray
    tmp: np.ndarray
    spec: np.ndarray
    probe: np.ndarray


class EpieArgs(NamedTuple):
    """:func:`epie_positions`' chunk: ``amplitudes[frames[j]]`` is position j's measured
    amplitude; ``probe`` (1, K, M, M), or with ``shifted`` its spectrum ``probe_ft``
    (K, M, M) and the positions' ``ramp_r``, ``ramp_c`` (B, M); ``steps``:
    :func:`cpu_kernels.epie_update`'s ``(α, w)``; ``grad``: 0 no probe gradient, 1 summed
    into ``psum`` (K, M, M) complex128, 2 its back-shifted spectrum summed there;
    ``sums`` (B, 4) float64 receives each position's position-gradient sums (empty (0, 4):
    none)."""

    amplitudes: np.ndarray
    frames: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    obj: np.ndarray
    probe: np.ndarray
    probe_ft: np.ndarray
    ramp_r: np.ndarray
    ramp_c: np.ndarray
    shifted: bool
    steps: np.ndarray
    eps: float
    grad: int
    psum: np.ndarray
    sums: np.ndarray


class LsqmlArgs(NamedTuple):
    """:func:`lsqml_positions`' chunk: measured amplitudes as in :class:`EpieArgs`; position j
    sees ``probes[probe_of[j]]``; the sums go to ``num``, ``den`` and the probe terms to
    ``pnum[slot[j]]`` (:func:`cpu_kernels.lsqml_object_terms`); ``chi`` (B, K, M, M)
    receives χ; ``refinement`` (B, 17), when it has rows, the position refinement's sums of
    each χ (:func:`position_kernels.residual_refinement_sums`) while it is in cache."""

    amplitudes: np.ndarray
    frames: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    obj: np.ndarray
    probes: np.ndarray
    probe_of: np.ndarray
    eps: float
    num: np.ndarray
    den: np.ndarray
    pnum: np.ndarray
    slot: np.ndarray
    chi: np.ndarray
    refinement: np.ndarray


class DmFourierArgs(NamedTuple):
    """:func:`dm_fourier_positions`' chunk: position j measured as ``amplitudes[j]``, its
    detector-plane exit wave ``waves[j]`` (updated in place); ``bound``: the relaxed
    projection's."""

    amplitudes: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    obj: np.ndarray
    probes: np.ndarray
    probe_of: np.ndarray
    waves: np.ndarray
    bound: float
    eps: float


class DmObjectArgs(NamedTuple):
    """:func:`dm_object_positions`' chunk: the object sums go to ``num``, ``den``; the
    sample-plane exit waves to ``psi`` (B, K, M, M) with ``keep``, else through ``psi[0:1]``."""

    waves: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    probes: np.ndarray
    probe_of: np.ndarray
    num: np.ndarray
    den: np.ndarray
    psi: np.ndarray
    keep: bool


class DmProbeArgs(NamedTuple):
    """:func:`dm_probe_runs`' chunk: run q starts at ``runs[q]``, sees the shifted probe
    ``probes[run_probe[q]]`` and has the ramps ``ramp_r[q]``, ``ramp_c[q]``; the residual's
    back-shifted spectrum is added to ``num`` (K, M, M) complex128, ``Σ |O_j|²`` to ``den``
    (M, M) and written to ``run_power[q]`` (R, M, M), float64."""

    values: np.ndarray
    obj: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    runs: np.ndarray
    probes: np.ndarray
    run_probe: np.ndarray
    ramp_r: np.ndarray
    ramp_c: np.ndarray
    num: np.ndarray
    den: np.ndarray
    run_power: np.ndarray
