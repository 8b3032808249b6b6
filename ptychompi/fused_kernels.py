"""Whole per-position pipelines in one compiled call (CPU, FFTW's C interface).

An engine's worker thread otherwise returns to Python between every FFT and element-wise
pass of its chunk: a dozen hand-overs of the GIL per chunk, which two threads on two cores
contend for (ePIE's small disjoint batches spent more time on that than on arithmetic). Here
a chunk's positions go through shift, exit wave, FFT, modulus projection, inverse FFT and
update one position at a time, in one ``nogil`` call that calls FFTW itself
(:mod:`ptychompi.fftw_native`), with the frames in cache between the steps. Far field: one
FFT per propagation; near field: two and the transfer function, as
:class:`physics.Propagator` (both multiply by it with :func:`cpu_kernels.apply_transfer`).

Each step calls the same kernel of :mod:`ptychompi.cpu_kernels` (on one position) and the
same FFTW transform as the chunked path, so the two give identical objects and probes (tested;
the Fourier error is summed in another order). FFTW's ``execute`` comes in as an argument
(a ctypes function), not as a global, so that the kernels are cached on disk like the others.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import cpu_kernels as ck
from . import fftw, fftw_native, physics


def available(frame: tuple[int, int]) -> bool:
    """Whether the fused kernels can run frames of this shape here."""
    return fftw_native.frame_aligned(frame)


@ck._jit(ck._JIT)
def _transform(execute: Any, plan: int, src: np.ndarray, dst: np.ndarray,
               scale: Any) -> None:
    """``dst[k] = FFTW(src[k]) · scale`` for every mode frame of (1, K, M, M) stacks."""
    kk, m0, m1 = src.shape[1], src.shape[2], src.shape[3]
    for k in range(kk):
        execute(plan, src[0, k].ctypes.data, dst[0, k].ctypes.data)
        for y in range(m0):
            row = dst[0, k, y]
            for x in range(m1):
                row[x] = row[x] * scale


@ck._jit(ck._JIT)
def _propagate(execute: Any, forward: int, backward: int, src: np.ndarray, dst: np.ndarray,
               tmp: np.ndarray, transfer: np.ndarray, inverse: bool, scale: Any) -> None:
    """:class:`physics.Propagator` on (1, K, M, M) stacks: far field (``transfer`` empty) the
    unitary FFT (``inverse``: its inverse); near field ``F⁻¹[F src · H]`` (``inverse``:
    ``conj(H)``) through the scratch ``tmp``."""
    if transfer.shape[0] == 0:
        _transform(execute, backward if inverse else forward, src, dst, scale)
        return
    _transform(execute, forward, src, tmp, scale)
    ck.apply_transfer(tmp, transfer, inverse)
    _transform(execute, backward, tmp, dst, scale)


@ck._jit(ck._JIT)
def epie_positions(execute: Any, amplitudes: np.ndarray, frames: np.ndarray,
                   rows: np.ndarray, cols: np.ndarray, obj: np.ndarray, probe: np.ndarray,
                   probe_ft: np.ndarray, ramp_r: np.ndarray, ramp_c: np.ndarray,
                   shifted: bool, steps: np.ndarray, eps: float, grad: int, forward: int,
                   backward: int, psum: np.ndarray, spec: np.ndarray, probe_j: np.ndarray,
                   psi: np.ndarray, wave: np.ndarray, chi: np.ndarray, tmp: np.ndarray,
                   transfer: np.ndarray) -> float:
    """ePIE for a chunk of positions with disjoint windows; returns the chunk's Fourier error
    numerator (``transfer``: the near-field transfer function, empty in the far field).

    ``amplitudes[frames[j]]`` is position j's measured amplitude; ``probe`` (1, K, M, M)
    the probe, or with ``shifted`` its spectrum ``probe_ft`` (K, M, M) and the positions'
    ramps; ``steps``: :func:`cpu_kernels.epie_update`'s ``(α, w)``. ``grad``: 0 no probe
    gradient, 1 summed into ``psum`` (K, M, M) complex128,
    2 its back-shifted spectrum summed there. ``spec``, ``probe_j``, ``psi``, ``wave``,
    ``chi``, ``tmp``: (1, K, M, M) aligned scratch frames.
    """
    m0, m1 = psi.shape[2], psi.shape[3]
    scale = np.complex64(1.0 / np.sqrt(m0 * m1))
    unshared = np.zeros(1, np.int64)
    none = np.zeros((0, 0, 0), np.complex128)
    err = 0.0
    for j in range(rows.shape[0]):
        r, c = rows[j:j + 1], cols[j:j + 1]
        probes = probe
        if shifted:
            ck.ramp_fill(probe_ft, ramp_r[j:j + 1], ramp_c[j:j + 1], spec)
            _transform(execute, backward, spec, probe_j, scale)
            probes = probe_j
        ck.exit_waves(probes, unshared, obj, r, c, psi)
        _propagate(execute, forward, backward, psi, wave, tmp, transfer, False, scale)
        f = frames[j]
        err += ck.modulus_project(wave, amplitudes[f:f + 1], wave, eps)
        _propagate(execute, forward, backward, wave, chi, tmp, transfer, True, scale)
        ck.epie_update(chi, psi, probes, obj, r, c, steps, psum if grad == 1 else none,
                       grad == 2)
        if grad == 2:
            _transform(execute, forward, chi, spec, scale)
            ck.ramp_sum(spec, ramp_r[j:j + 1], ramp_c[j:j + 1], psum)
    return err


@ck._jit(ck._JIT)
def lsqml_positions(execute: Any, amplitudes: np.ndarray, frames: np.ndarray,
                    rows: np.ndarray, cols: np.ndarray, obj: np.ndarray, probes: np.ndarray,
                    probe_of: np.ndarray, eps: float, forward: int, backward: int,
                    num: np.ndarray, den: np.ndarray, pnum: np.ndarray, slot: np.ndarray,
                    chi: np.ndarray, psi: np.ndarray, wave: np.ndarray, tmp: np.ndarray,
                    transfer: np.ndarray) -> float:
    """LSQML's exit-wave update (Gaussian noise) and its sums for a chunk of positions
    (:func:`cpu_kernels.lsqml_object_terms`); ``chi`` (B, K, M, M) receives
    ``χ_j = prop⁻¹ Ψ'_j − ψ_j``. Returns the chunk's Fourier error numerator. ``psi``,
    ``wave``, ``tmp``: (1, K, M, M) aligned scratch frames; ``transfer`` as in
    :func:`epie_positions`."""
    m0, m1 = psi.shape[2], psi.shape[3]
    scale = np.complex64(1.0 / np.sqrt(m0 * m1))
    err = 0.0
    for j in range(rows.shape[0]):
        r, c, of = rows[j:j + 1], cols[j:j + 1], probe_of[j:j + 1]
        ck.exit_waves(probes, of, obj, r, c, psi)
        _propagate(execute, forward, backward, psi, wave, tmp, transfer, False, scale)
        f = frames[j]
        err += ck.modulus_project(wave, amplitudes[f:f + 1], wave, eps)
        _propagate(execute, forward, backward, wave, chi[j:j + 1], tmp, transfer, True, scale)
        ck.lsqml_object_terms(chi[j:j + 1], psi, probes, of, obj, r, c, num, den, pnum,
                              slot[j:j + 1])
    return err


@ck._jit(ck._JIT)
def dm_fourier_positions(execute: Any, amplitudes: np.ndarray, rows: np.ndarray,
                         cols: np.ndarray, obj: np.ndarray, probes: np.ndarray,
                         probe_of: np.ndarray, waves: np.ndarray, bound: float,
                         eps: float, forward: int, backward: int,
                         phi: np.ndarray, model: np.ndarray, tmp: np.ndarray,
                         transfer: np.ndarray) -> float:
    """DM's Fourier step (:func:`cpu_kernels.dm_fourier_update`) on ``waves`` (B, K, M, M),
    position j measured as ``amplitudes[j]``; returns the models' error. ``phi``, ``model``,
    ``tmp``: (1, K, M, M) aligned scratch frames; ``transfer`` as in :func:`epie_positions`."""
    m0, m1 = phi.shape[2], phi.shape[3]
    scale = np.complex64(1.0 / np.sqrt(m0 * m1))
    err = 0.0
    for j in range(rows.shape[0]):
        ck.exit_waves(probes, probe_of[j:j + 1], obj, rows[j:j + 1], cols[j:j + 1], phi)
        _propagate(execute, forward, backward, phi, model, tmp, transfer, False, scale)
        err += ck.dm_fourier_update(model, waves[j:j + 1], amplitudes[j:j + 1], bound, eps)
    return err


@ck._jit(ck._JIT)
def dm_object_positions(execute: Any, waves: np.ndarray, rows: np.ndarray,
                        cols: np.ndarray, probes: np.ndarray, probe_of: np.ndarray,
                        forward: int, backward: int, num: np.ndarray, den: np.ndarray,
                        psi: np.ndarray, keep: bool, tmp: np.ndarray,
                        transfer: np.ndarray) -> None:
    """DM's object sums (:func:`cpu_kernels.object_terms`) of the sample-plane exit waves
    ``prop⁻¹ waves_j``, written to ``psi`` (B, K, M, M) with ``keep``, else through
    ``psi[0:1]`` (``tmp``, ``transfer`` as in :func:`dm_fourier_positions`)."""
    m0, m1 = psi.shape[2], psi.shape[3]
    scale = np.complex64(1.0 / np.sqrt(m0 * m1))
    for j in range(rows.shape[0]):
        out = psi[j:j + 1] if keep else psi[0:1]
        _propagate(execute, forward, backward, waves[j:j + 1], out, tmp, transfer, True,
                   scale)
        ck.object_terms(out, probes, probe_of[j:j + 1], rows[j:j + 1], cols[j:j + 1], num,
                        den)


@ck._jit(ck._JIT)
def unshift_runs(execute: Any, plan: int, sums: np.ndarray, ramp_r: np.ndarray,
                 ramp_c: np.ndarray, total: np.ndarray, spec: np.ndarray) -> None:
    """``total += Σ_q conj(ramps_q) · F sums_q``: the spectrum of the back-shifted sum of run
    sums (R, K, M, M) complex128, transformed one run at a time through the aligned scratch
    ``spec`` (1, K, M, M) (:func:`physics.unshift_sum` with ``spectrum=True``)."""
    m0, m1 = sums.shape[2], sums.shape[3]
    scale = np.complex128(1.0 / np.sqrt(m0 * m1))
    for q in range(sums.shape[0]):
        _transform(execute, plan, sums[q:q + 1], spec, scale)
        ck.ramp_sum(spec, ramp_r[q:q + 1], ramp_c[q:q + 1], total)


@ck._jit(ck._JIT)
def dm_probe_runs(execute: Any, plan: int, values: np.ndarray, obj: np.ndarray,
                  rows: np.ndarray, cols: np.ndarray, runs: np.ndarray, probes: np.ndarray,
                  run_probe: np.ndarray, ramp_r: np.ndarray, ramp_c: np.ndarray,
                  num: np.ndarray, den: np.ndarray, run_power: np.ndarray,
                  acc: np.ndarray, spec: np.ndarray) -> None:
    """DM's probe residual with sub-pixel shifts, run by run of positions sharing a shift
    (run q starts at ``runs[q]``, sees the shifted probe ``probes[run_probe[q]]`` and has
    the ramps ``ramp_r[q]``, ``ramp_c[q]``): the run's ``Σ conj(O_j) values_j`` and
    ``Σ |O_j|²`` in double precision (:func:`cpu_kernels.conj_window_products`), the residual
    ``Σ conj(O_j) values_j − Σ |O_j|² · P_run`` transformed in double precision and
    back-shifted into the spectrum ``num`` (K, M, M), and ``Σ |O_j|²`` added to ``den``
    (M, M) and written to ``run_power[q]`` (R, M, M), float64
    (:func:`physics.shifted_probe_residual`). ``acc`` (1, K + 1, M, M) and
    ``spec`` (1, K, M, M) complex128: aligned scratch."""
    b, kk, m0, m1 = values.shape
    slot = np.zeros(b, np.int64)
    for q in range(runs.shape[0]):
        start = runs[q]
        stop = runs[q + 1] if q + 1 < runs.shape[0] else b
        acc[...] = 0
        ck.conj_window_products(values[start:stop], obj, rows[start:stop], cols[start:stop],
                                slot[start:stop], acc)
        g = run_probe[q]
        for y in range(m0):
            prow, drow, rrow = acc[0, kk, y], den[y], run_power[q, y]
            for x in range(m1):
                rrow[x] = prow[x].real
                drow[x] += prow[x].real
            for k in range(kk):
                arow, qrow = acc[0, k, y], probes[g, k, y]
                for x in range(m1):
                    arow[x] = arow[x] - prow[x].real * qrow[x]
        unshift_runs(execute, plan, acc[:, :kk], ramp_r[q:q + 1], ramp_c[q:q + 1], num, spec)


def dm_probe_chunk(values: np.ndarray, obj: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                   ramps: tuple[np.ndarray, np.ndarray], runs: np.ndarray, probes: np.ndarray,
                   probe_of: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`dm_probe_runs` with its scratch: what :func:`physics.shifted_probe_residual`
    returns (``ramps``: each run's; ``probes``, ``probe_of``: the shifted probes and each
    position's row in them)."""
    b, kk, m0, m1 = values.shape
    num = np.zeros((kk, m0, m1), np.complex128)
    den = np.zeros((m0, m1), np.float64)
    run_power = np.empty((len(runs), m0, m1), np.float64)
    acc = fftw.empty_aligned((1, kk + 1, m0, m1), np.complex128)
    spec = fftw.empty_aligned((1, kk, m0, m1), np.complex128)
    run_probe = physics.probe_index(probes, b, probe_of)[_int64(runs)]
    dm_probe_runs(fftw_native.execute_dft_double,
                  fftw_native.frame_plan((m0, m1), fftw_native.FFTW_FORWARD, "c128"),
                  np.ascontiguousarray(values), obj, _int64(rows), _int64(cols), _int64(runs),
                  np.ascontiguousarray(probes), _int64(run_probe),
                  np.ascontiguousarray(ramps[0]), np.ascontiguousarray(ramps[1]), num, den,
                  run_power, acc, spec)
    return num, den, run_power


def dm_fourier_chunk(amplitudes: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                     obj: np.ndarray, probes: np.ndarray, probe_of: np.ndarray | None,
                     waves: np.ndarray, bound: float, eps: float,
                     transfer: np.ndarray | None = None) -> float:
    """:func:`dm_fourier_positions` with its scratch frames (``transfer``: the near-field
    transfer function, None in the far field)."""
    fftw_native.require_aligned(waves)
    phi, model, tmp = _scratch(probes.shape[1:], 3)
    return float(dm_fourier_positions(
        fftw_native.execute_dft, amplitudes, _int64(rows), _int64(cols), obj,
        np.ascontiguousarray(probes), physics.probe_index(probes, len(rows), probe_of), waves,
        float(bound), float(eps), *_plans(probes.shape[-2:]), phi, model, tmp,
        _transfer(transfer)))


def dm_object_chunk(waves: np.ndarray, rows: np.ndarray, cols: np.ndarray, probes: np.ndarray,
                    probe_of: np.ndarray | None, num: np.ndarray, den: np.ndarray,
                    psi: np.ndarray | None, transfer: np.ndarray | None = None) -> None:
    """:func:`dm_object_positions`; the exit waves go to ``psi`` (aligned, like ``waves``)
    when given."""
    keep = psi is not None
    fftw_native.require_aligned(waves, *([psi] if keep else []))
    tmp, single = _scratch(waves.shape[1:], 2)
    dm_object_positions(fftw_native.execute_dft, waves, _int64(rows), _int64(cols),
                        np.ascontiguousarray(probes),
                        physics.probe_index(probes, len(rows), probe_of),
                        *_plans(probes.shape[-2:]), num, den, psi if keep else single, keep,
                        tmp, _transfer(transfer))


def _scratch(frames: tuple[int, ...], count: int) -> list[np.ndarray]:
    """``count`` aligned (1, K, M, M) complex64 scratch stacks for ``frames`` (K, M, M)."""
    return [fftw.empty_aligned((1, *frames), np.complex64) for _ in range(count)]


def _plans(frame: tuple[int, ...]) -> tuple[int, int]:
    """The forward and backward complex64 plans of one frame."""
    shape = (int(frame[0]), int(frame[1]))
    return (fftw_native.frame_plan(shape, fftw_native.FFTW_FORWARD),
            fftw_native.frame_plan(shape, fftw_native.FFTW_BACKWARD))


def _transfer(transfer: np.ndarray | None) -> np.ndarray:
    """The near-field transfer function for the kernels (empty: far field)."""
    if transfer is None:
        return np.zeros((0, 0), np.complex64)
    return np.ascontiguousarray(transfer, dtype=np.complex64)


def _int64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)


def lsqml_chunk(amplitudes: np.ndarray, frames: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                obj: np.ndarray, probes: np.ndarray, probe_of: np.ndarray | None,
                num: np.ndarray, den: np.ndarray, with_probe: bool, per_position: bool,
                runs: np.ndarray | None, eps: float,
                run_ramps: tuple[np.ndarray, np.ndarray] | None = None,
                transfer: np.ndarray | None = None) -> tuple[float, np.ndarray, Any]:
    """:func:`lsqml_positions` with its scratch frames: ``(error, χ (B, K, M, M), probe
    direction terms as physics.lsqml_object_terms returns them)``; with ``runs`` and their
    ramps ``run_ramps``, the terms' back-shifted sum as a spectrum instead (what
    :func:`physics.unshift_sum` with ``spectrum=True`` gives, :func:`unshift_runs`)."""
    b = len(rows)
    kk, m0, m1 = probes.shape[1:]
    shape = (b, kk, m0, m1)
    chi = fftw.empty_aligned(shape, np.complex64)
    psi, wave, tmp = _scratch((kk, m0, m1), 3)
    # aligned: the run sums may go through FFTW (the back-shift)
    slot, pnum = physics.probe_term_slots(shape, np.complex64, with_probe, per_position, runs,
                                          zeros=fftw.zeros_aligned)
    shift_back = with_probe and runs is not None and run_ramps is not None
    err = lsqml_positions(fftw_native.execute_dft, amplitudes, _int64(frames), _int64(rows),
                          _int64(cols), obj, np.ascontiguousarray(probes),
                          physics.probe_index(probes, b, probe_of), float(eps),
                          *_plans((m0, m1)), num, den, pnum, slot, chi, psi, wave, tmp,
                          _transfer(transfer))
    if not shift_back:
        return float(err), chi, physics.probe_terms_result(pnum, with_probe, per_position, runs)
    total = np.zeros((kk, m0, m1), np.complex128)
    unshift_runs(fftw_native.execute_dft_double,
                 fftw_native.frame_plan((m0, m1), fftw_native.FFTW_FORWARD, "c128"), pnum,
                 np.ascontiguousarray(run_ramps[0]), np.ascontiguousarray(run_ramps[1]), total,
                 fftw.empty_aligned((1, kk, m0, m1), np.complex128))
    return float(err), chi, total


def epie_chunk(amplitudes: np.ndarray, frames: np.ndarray, rows: np.ndarray, cols: np.ndarray,
               obj: np.ndarray, probe: np.ndarray, probe_ft: np.ndarray | None,
               ramps: tuple[np.ndarray, np.ndarray] | None, steps: tuple[float, float],
               eps: float, grad: str, transfer: np.ndarray | None = None
               ) -> tuple[float, np.ndarray | None]:
    """:func:`epie_positions` with its scratch frames: ``(error, gradient sum or None)``;
    ``grad`` is "none", "sum" or "stack" (the back-shifted sum's spectrum)."""
    kk, m0, m1 = probe.shape
    frame = (m0, m1)
    scratch = _scratch((kk, m0, m1), 6)
    code = {"none": 0, "sum": 1, "stack": 2}[grad]
    psum = np.zeros((kk, m0, m1) if code else (0, 0, 0), np.complex128)
    shifted = ramps is not None
    rr, rc = ramps if shifted else (np.zeros((0, m0), np.complex64),) * 2
    spectrum = probe_ft if shifted else np.zeros((kk, m0, m1), np.complex64)
    err = epie_positions(fftw_native.execute_dft, amplitudes, _int64(frames), _int64(rows),
                         _int64(cols), obj,
                         np.ascontiguousarray(probe)[None], np.ascontiguousarray(spectrum),
                         rr, rc, shifted, np.asarray(steps, np.float64), float(eps), code,
                         *_plans(frame), psum, *scratch, _transfer(transfer))
    return float(err), (psum if code else None)
