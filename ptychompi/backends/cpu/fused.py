"""Whole per-position pipelines in one compiled call (CPU, FFTW's C interface).

An engine's worker thread otherwise returns to Python between every FFT and element-wise
pass of its chunk: a dozen hand-overs of the GIL per chunk, which two threads on two cores
contend for (ePIE's small disjoint batches spent more time on that than on arithmetic). Here
a chunk's positions go through shift, exit wave, FFT, modulus projection, inverse FFT and
update one position at a time, in one ``nogil`` call that calls FFTW itself
(:mod:`ptychompi.backends.cpu.fftw`), with the frames in cache between the steps. Far field: one
FFT per propagation; near field: two and the transfer function, as
:class:`physics.Propagator` (both multiply by it with :func:`cpu_kernels.apply_transfer`).

Each step calls the same kernel of :mod:`ptychompi.backends.cpu.kernels` (on one position) and the
same FFTW transform as the chunked path, so the two give identical objects and probes (tested;
the Fourier error is summed in another order). FFTW's ``execute`` comes in as an argument
(a ctypes function), not as a global, so that the kernels are cached on disk like the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ...model.physics import EPS, Propagator, probe_index, probe_term_slots, probe_terms_result
from . import fftw
from . import kernels as ck
from . import position_kernels as pk  # it imports this module too: used at compile time only
from .fused_records import (
    DmFourierArgs,
    DmObjectArgs,
    DmProbeArgs,
    EpieArgs,
    Frames,
    LsqmlArgs,
    Plans,
)
from .jit import JIT, jit

if TYPE_CHECKING:
    from ...ops.steps import DmFourierJob, DmObjectJob, DmProbeJob, EpieJob, LsqmlJob


def available(frame: tuple[int, int]) -> bool:
    """Whether the fused kernels can run frames of this shape here."""
    return fftw.frame_aligned(frame)


@jit(JIT)
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


@jit(JIT)
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


@jit(JIT)
def _residual(back: np.ndarray, psi: np.ndarray, out: np.ndarray) -> None:
    """``out = back − psi`` on (1, K, M, M) stacks."""
    kk, m0, m1 = back.shape[1], back.shape[2], back.shape[3]
    for k in range(kk):
        for y in range(m0):
            for x in range(m1):
                out[0, k, y, x] = back[0, k, y, x] - psi[0, k, y, x]


@jit(JIT)
def epie_positions(execute: Any, a: EpieArgs, plans: Plans, s: Frames) -> float:
    """ePIE for a chunk of positions with disjoint windows; returns the chunk's Fourier error
    numerator. With ``a.sums`` each position's position-gradient sums of ``χ = ψ' − ψ``
    against the object before its update (:func:`position_kernels.residual_position_sums`,
    ``χ`` formed in the scratch ``s.wave``)."""
    m0, m1 = s.psi.shape[2], s.psi.shape[3]
    scale = np.complex64(1.0 / np.sqrt(m0 * m1))
    unshared = np.zeros(1, np.int64)
    none = np.zeros((0, 0, 0), np.complex128)
    f, b, h = plans.forward, plans.backward, plans.transfer
    err = 0.0
    for j in range(a.rows.shape[0]):
        r, c = a.rows[j:j + 1], a.cols[j:j + 1]
        probes = a.probe
        if a.shifted:
            ck.ramp_fill(a.probe_ft, a.ramp_r[j:j + 1], a.ramp_c[j:j + 1], s.spec)
            _transform(execute, b, s.spec, s.probe, scale)
            probes = s.probe
        ck.exit_waves(probes, unshared, a.obj, r, c, s.psi)
        _propagate(execute, f, b, s.psi, s.wave, s.tmp, h, False, scale)
        k = a.frames[j]
        err += ck.modulus_project(s.wave, a.amplitudes[k:k + 1], s.wave, a.eps)
        _propagate(execute, f, b, s.wave, s.chi, s.tmp, h, True, scale)
        if a.sums.shape[0] > 0:
            _residual(s.chi, s.psi, s.wave)
            pk.residual_position_sums(probes, unshared, s.wave, a.obj, r, c, a.sums[j:j + 1])
        ck.epie_update(s.chi, s.psi, probes, a.obj, r, c, a.steps,
                       a.psum if a.grad == 1 else none, a.grad == 2)
        if a.grad == 2:
            _transform(execute, f, s.chi, s.spec, scale)
            ck.ramp_sum(s.spec, a.ramp_r[j:j + 1], a.ramp_c[j:j + 1], a.psum)
    return err


@jit(JIT)
def lsqml_positions(execute: Any, a: LsqmlArgs, plans: Plans, s: Frames) -> float:
    """LSQML's exit-wave update (Gaussian noise) and its sums for a chunk of positions,
    ``χ_j = prop⁻¹ Ψ'_j − ψ_j`` (and the position refinement's sums of it when asked);
    returns the chunk's Fourier error numerator."""
    m0, m1 = s.psi.shape[2], s.psi.shape[3]
    scale = np.complex64(1.0 / np.sqrt(m0 * m1))
    f, b, h = plans.forward, plans.backward, plans.transfer
    err = 0.0
    for j in range(a.rows.shape[0]):
        r, c, of = a.rows[j:j + 1], a.cols[j:j + 1], a.probe_of[j:j + 1]
        ck.exit_waves(a.probes, of, a.obj, r, c, s.psi)
        _propagate(execute, f, b, s.psi, s.wave, s.tmp, h, False, scale)
        k = a.frames[j]
        err += ck.modulus_project(s.wave, a.amplitudes[k:k + 1], s.wave, a.eps)
        _propagate(execute, f, b, s.wave, a.chi[j:j + 1], s.tmp, h, True, scale)
        ck.lsqml_object_terms(a.chi[j:j + 1], s.psi, a.probes, of, a.obj, r, c, a.num, a.den,
                              a.pnum, a.slot[j:j + 1])
        if a.refinement.shape[0] > 0:  # χ as the object terms left it (Ψ' − ψ)
            pk.residual_refinement_sums(a.probes, of, a.chi[j:j + 1], a.obj, r, c,
                                        a.refinement[j:j + 1])
    return err


@jit(JIT)
def dm_fourier_positions(execute: Any, a: DmFourierArgs, plans: Plans, s: Frames) -> float:
    """DM's Fourier step (:func:`cpu_kernels.dm_fourier_update`) on a chunk's exit waves;
    returns the models' error."""
    m0, m1 = s.psi.shape[2], s.psi.shape[3]
    scale = np.complex64(1.0 / np.sqrt(m0 * m1))
    err = 0.0
    for j in range(a.rows.shape[0]):
        ck.exit_waves(a.probes, a.probe_of[j:j + 1], a.obj, a.rows[j:j + 1], a.cols[j:j + 1],
                      s.psi)
        _propagate(execute, plans.forward, plans.backward, s.psi, s.wave, s.tmp,
                   plans.transfer, False, scale)
        err += ck.dm_fourier_update(s.wave, a.waves[j:j + 1], a.amplitudes[j:j + 1], a.bound,
                                    a.eps)
    return err


@jit(JIT)
def dm_object_positions(execute: Any, a: DmObjectArgs, plans: Plans, s: Frames) -> None:
    """DM's object sums (:func:`cpu_kernels.object_terms`) of the sample-plane exit waves
    ``prop⁻¹ waves_j``."""
    m0, m1 = a.psi.shape[2], a.psi.shape[3]
    scale = np.complex64(1.0 / np.sqrt(m0 * m1))
    for j in range(a.rows.shape[0]):
        out = a.psi[j:j + 1] if a.keep else a.psi[0:1]
        _propagate(execute, plans.forward, plans.backward, a.waves[j:j + 1], out, s.tmp,
                   plans.transfer, True, scale)
        ck.object_terms(out, a.probes, a.probe_of[j:j + 1], a.rows[j:j + 1], a.cols[j:j + 1],
                        a.num, a.den)


@jit(JIT)
def unshift_runs(execute: Any, plan: int, sums: np.ndarray, ramp_r: np.ndarray,
                 ramp_c: np.ndarray, total: np.ndarray, spec: np.ndarray) -> None:
    """``total += Σ_q conj(ramps_q) · F sums_q``: the spectrum of the back-shifted sum of run
    sums (R, K, M, M) complex128, transformed one run at a time through the aligned scratch
    ``spec`` (1, K, M, M) (:meth:`Operations.unshift_sum` with ``spectrum=True``)."""
    m0, m1 = sums.shape[2], sums.shape[3]
    scale = np.complex128(1.0 / np.sqrt(m0 * m1))
    for q in range(sums.shape[0]):
        _transform(execute, plan, sums[q:q + 1], spec, scale)
        ck.ramp_sum(spec, ramp_r[q:q + 1], ramp_c[q:q + 1], total)


@jit(JIT)
def dm_probe_runs(execute: Any, plan: int, a: DmProbeArgs, acc: np.ndarray,
                  spec: np.ndarray) -> None:
    """DM's probe residual with sub-pixel shifts, run by run of positions sharing a shift:
    the run's ``Σ conj(O_j) values_j`` and ``Σ |O_j|²`` in double precision
    (:func:`cpu_kernels.conj_window_products`), the residual ``Σ conj(O_j) values_j −
    Σ |O_j|² · P_run`` transformed in double precision and back-shifted
    (:meth:`Operations.shifted_probe_residual`). ``acc`` (1, K + 1, M, M) and ``spec``
    (1, K, M, M) complex128: aligned scratch."""
    b, kk, m0, m1 = a.values.shape
    slot = np.zeros(b, np.int64)
    runs = a.runs
    for q in range(runs.shape[0]):
        start = runs[q]
        stop = runs[q + 1] if q + 1 < runs.shape[0] else b
        acc[...] = 0
        ck.conj_window_products(a.values[start:stop], a.obj, a.rows[start:stop],
                                a.cols[start:stop], slot[start:stop], acc)
        g = a.run_probe[q]
        for y in range(m0):
            prow, drow, rrow = acc[0, kk, y], a.den[y], a.run_power[q, y]
            for x in range(m1):
                rrow[x] = prow[x].real
                drow[x] += prow[x].real
            for k in range(kk):
                arow, qrow = acc[0, k, y], a.probes[g, k, y]
                for x in range(m1):
                    arow[x] = arow[x] - prow[x].real * qrow[x]
        unshift_runs(execute, plan, acc[:, :kk], a.ramp_r[q:q + 1], a.ramp_c[q:q + 1], a.num,
                     spec)


# --------------------------------------------------------------------------- chunk calls
def _scratch(frames: tuple[int, ...], count: int) -> list[np.ndarray]:
    """``count`` aligned (1, K, M, M) complex64 scratch stacks for ``frames`` (K, M, M)."""
    return [fftw.empty_aligned((1, *frames), np.complex64) for _ in range(count)]


def _frames(frames: tuple[int, ...], *used: str) -> Frames:
    """The scratch frames ``used`` of a pipeline for (K, M, M) frames (the others empty, so a
    pipeline allocates only what it touches; all of them without ``used``)."""
    empty = np.empty((1, frames[0], 0, 0), np.complex64)
    return Frames(*[fftw.empty_aligned((1, *frames), np.complex64)
                    if not used or name in used else empty for name in Frames._fields])


def _plans(plans: fftw.FftwPlans, frame: tuple[int, ...]) -> tuple[int, int]:
    """The forward and backward complex64 plans of one frame (the backend's ``plans``)."""
    shape = (int(frame[0]), int(frame[1]))
    return (plans.frame_plan(shape, fftw.FFTW_FORWARD),
            plans.frame_plan(shape, fftw.FFTW_BACKWARD))


def _transfer(transfer: np.ndarray | None) -> np.ndarray:
    """The near-field transfer function for the kernels (empty: far field)."""
    if transfer is None:
        return np.zeros((0, 0), np.complex64)
    return np.ascontiguousarray(transfer, dtype=np.complex64)


def _int64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)


def _plans_for(plans: fftw.FftwPlans, frame: tuple[int, ...], prop: Propagator) -> Plans:
    forward, backward = _plans(plans, frame)
    return Plans(forward=forward, backward=backward, transfer=_transfer(prop.transfer))


def _double_plan(plans: fftw.FftwPlans, frame: tuple[int, ...]) -> int:
    shape = (int(frame[0]), int(frame[1]))
    return plans.frame_plan(shape, fftw.FFTW_FORWARD, "c128")


def epie_chunk(job: EpieJob, ramps: tuple[np.ndarray, np.ndarray] | None,
               plans: fftw.FftwPlans) -> tuple[float, np.ndarray | None]:
    """:func:`epie_positions` on ``job`` (each position's ``ramps`` with shifts; the
    backend's FFTW ``plans``):
    ``(error, gradient sum or None)``, the gradient as ``job.grad`` asks ("stack": the
    back-shifted sum's spectrum); the position sums into ``job.positions`` when given."""
    kk, m0, m1 = job.probe.shape
    code = {"none": 0, "sum": 1, "stack": 2}[job.grad]
    psum = np.zeros((kk, m0, m1) if code else (0, 0, 0), np.complex128)
    shifted = ramps is not None
    rr, rc = ramps if shifted else (np.zeros((0, m0), np.complex64),) * 2
    spectrum = job.shifts.spectrum if shifted else np.zeros((kk, m0, m1), np.complex64)
    args = EpieArgs(amplitudes=job.amplitudes, frames=_int64(job.frames),
                    rows=_int64(job.win.rows), cols=_int64(job.win.cols), obj=job.obj,
                    probe=np.ascontiguousarray(job.probe)[None],
                    probe_ft=np.ascontiguousarray(spectrum), ramp_r=rr, ramp_c=rc,
                    shifted=shifted, steps=np.asarray(job.steps, np.float64), eps=float(EPS),
                    grad=code, psum=psum,
                    sums=np.zeros((0, 4)) if job.positions is None else job.positions)
    err = epie_positions(fftw.execute_dft, args, _plans_for(plans, (m0, m1), job.prop),
                         _frames((kk, m0, m1)))
    return float(err), (psum if code else None)


def lsqml_chunk(job: LsqmlJob, plans: fftw.FftwPlans) -> tuple[float, np.ndarray, Any]:
    """:func:`lsqml_positions` on ``job``: ``(error, χ (B, K, M, M), probe direction terms as
    :meth:`Operations.lsqml_object_terms` returns them)``; with runs and ``job.shifts`` (the
    runs' ramps) the terms' back-shifted sum as a spectrum instead (:func:`unshift_runs`)."""
    b = len(job.win)
    kk, m0, m1 = job.probes.shape[1:]
    shape = (b, kk, m0, m1)
    chi = fftw.empty_aligned(shape, np.complex64)
    # aligned: the run sums may go through FFTW (the back-shift)
    slot, pnum = probe_term_slots(shape, np.complex64, job.with_probe, job.per_position,
                                  job.runs, zeros=fftw.zeros_aligned)
    args = LsqmlArgs(amplitudes=job.amplitudes, frames=_int64(job.frames),
                     rows=_int64(job.win.rows), cols=_int64(job.win.cols), obj=job.obj,
                     probes=np.ascontiguousarray(job.probes),
                     probe_of=probe_index(job.probes, b, job.probe_of), eps=float(EPS),
                     num=job.num, den=job.den, pnum=pnum, slot=slot, chi=chi,
                     refinement=(np.zeros((0, 17)) if job.refinement is None
                                 else job.refinement))
    err = lsqml_positions(fftw.execute_dft, args, _plans_for(plans, (m0, m1), job.prop),
                          _frames((kk, m0, m1), "psi", "wave", "tmp"))
    if not (job.with_probe and job.runs is not None and job.shifts is not None):
        return float(err), chi, probe_terms_result(pnum, job.with_probe, job.per_position,
                                                   job.runs)
    total = np.zeros((kk, m0, m1), np.complex128)
    unshift_runs(fftw.execute_dft_double, _double_plan(plans, (m0, m1)), pnum,
                 np.ascontiguousarray(job.shifts[0]), np.ascontiguousarray(job.shifts[1]),
                 total, fftw.empty_aligned((1, kk, m0, m1), np.complex128))
    return float(err), chi, total


def dm_fourier_chunk(job: DmFourierJob, plans: fftw.FftwPlans) -> float:
    """:func:`dm_fourier_positions` on ``job`` (its exit waves aligned for FFTW)."""
    fftw.require_aligned(job.waves)
    kk, m0, m1 = job.probes.shape[1:]
    args = DmFourierArgs(amplitudes=job.amplitudes, rows=_int64(job.win.rows),
                         cols=_int64(job.win.cols), obj=job.obj,
                         probes=np.ascontiguousarray(job.probes),
                         probe_of=probe_index(job.probes, len(job.win), job.probe_of),
                         waves=job.waves, bound=float(job.bound), eps=float(EPS))
    return float(dm_fourier_positions(fftw.execute_dft, args,
                                      _plans_for(plans, (m0, m1), job.prop),
                                      _frames((kk, m0, m1), "psi", "wave", "tmp")))


def dm_object_chunk(job: DmObjectJob, plans: fftw.FftwPlans) -> None:
    """:func:`dm_object_positions` on ``job``; the exit waves go to ``job.keep`` (aligned,
    like the waves) when given."""
    keep = job.keep is not None
    fftw.require_aligned(job.waves, *([job.keep] if keep else []))
    kk, m0, m1 = job.probes.shape[1:]
    scratch = _frames((kk, m0, m1), "psi", "tmp")
    args = DmObjectArgs(waves=job.waves, rows=_int64(job.win.rows), cols=_int64(job.win.cols),
                        probes=np.ascontiguousarray(job.probes),
                        probe_of=probe_index(job.probes, len(job.win), job.probe_of),
                        num=job.num, den=job.den, psi=job.keep if keep else scratch.psi,
                        keep=keep)
    dm_object_positions(fftw.execute_dft, args, _plans_for(plans, (m0, m1), job.prop), scratch)


def dm_probe_chunk(job: DmProbeJob, run_ramps: tuple[np.ndarray, np.ndarray],
                   plans: fftw.FftwPlans) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`dm_probe_runs` on ``job`` (``run_ramps``: each run's): what
    :meth:`Operations.shifted_probe_residual` returns."""
    b, kk, m0, m1 = job.psi.shape
    runs = _int64(job.runs)
    num = np.zeros((kk, m0, m1), np.complex128)
    den = np.zeros((m0, m1), np.float64)
    run_power = np.empty((len(runs), m0, m1), np.float64)
    args = DmProbeArgs(values=np.ascontiguousarray(job.psi), obj=job.obj,
                       rows=_int64(job.win.rows), cols=_int64(job.win.cols), runs=runs,
                       probes=np.ascontiguousarray(job.probes),
                       run_probe=_int64(probe_index(job.probes, b, job.probe_of)[runs]),
                       ramp_r=np.ascontiguousarray(run_ramps[0]),
                       ramp_c=np.ascontiguousarray(run_ramps[1]), num=num, den=den,
                       run_power=run_power)
    dm_probe_runs(fftw.execute_dft_double, _double_plan(plans, (m0, m1)), args,
                  fftw.empty_aligned((1, kk + 1, m0, m1), np.complex128),
                  fftw.empty_aligned((1, kk, m0, m1), np.complex128))
    return num, den, run_power
