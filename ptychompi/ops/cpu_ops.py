"""The engines' operations on a CPU: numba kernels (:mod:`ptychompi.backends.cpu.kernels`) on host
arrays and, where FFTW's C interface can run the frames, each per-position pipeline as one
compiled call (:mod:`ptychompi.backends.cpu.fused`) that computes what the composed pipeline of
:class:`~ptychompi.ops.steps.Operations` computes (tests hold the two to the bit)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends.cpu import fftw, position_kernels
from ..backends.cpu import fused as fused_kernels
from ..backends.cpu import kernels as cpu_kernels
from ..model.physics import (
    EPS,
    Windows,
    probe_index,
    probe_term_slots,
    probe_terms_result,
    run_index,
    run_ramps,
)
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


def _c(a: Any) -> np.ndarray:
    """C-contiguous host array (the kernels are compiled for that layout)."""
    return np.ascontiguousarray(a)


class CpuOps(Operations):
    """:class:`Operations` with numba kernels; with FFTW in single precision each pipeline
    runs as one compiled call per chunk where FFTW can run the frames in place
    (:meth:`fuses`; ``fuse = False`` turns that off, e.g. to compare the two)."""

    compiled = True

    def __init__(self, backend: Any) -> None:
        super().__init__(backend)
        self.fuse = True
        self._can_fuse = (backend.fft_plans is not None
                          and backend.complex_dtype == np.complex64)
        self._frames: dict[tuple[int, int], bool] = {}

    def fuses(self, frame: tuple[int, ...]) -> bool:
        """Whether the pipelines of frames of this shape run as fused compiled calls."""
        shape = (int(frame[-2]), int(frame[-1]))
        if shape not in self._frames:
            self._frames[shape] = self._can_fuse and fused_kernels.available(shape)
        return self.fuse and self._frames[shape]

    # ------------------------------------------------------------------ windows
    def extract(self, obj: Any, win: Windows) -> Any:
        """A gather through a strided window view (faster than flat fancy indexing)."""
        view = np.lib.stride_tricks.sliding_window_view(obj, (win.frame, win.frame))
        return view[win.rows, win.cols]

    def scatter_add(self, target: Any, values: Any, rows: np.ndarray, cols: np.ndarray) -> None:
        """Slice adds (faster than ``np.bincount`` or a sparse product for 128² windows)."""
        m0, m1 = values.shape[-2:]
        for j in range(len(rows)):
            r, c = int(rows[j]), int(cols[j])
            target[r:r + m0, c:c + m1] += values[j]

    def scatter_add_disjoint(self, target: Any, values: Any, win: Windows) -> None:
        self.scatter_add(target, values, win.rows, win.cols)

    def exit_waves(self, probes: Any, obj: Any, win: Windows, probe_of: Any = None) -> Any:
        out = self.backend.empty((len(win), *probes.shape[1:]), np.result_type(probes, obj))
        cpu_kernels.exit_waves(_c(probes), probe_index(probes, len(win), probe_of), _c(obj),
                               win.rows, win.cols, out)
        return out

    # ------------------------------------------------------------------ shifts
    def ramp_fill(self, probe_ft: Any, ramps: tuple[Any, Any]) -> Any:
        rr, rc = ramps
        spec = self.backend.empty((rr.shape[0], *probe_ft.shape), probe_ft.dtype)
        cpu_kernels.ramp_fill(_c(probe_ft), rr, rc, spec)
        return spec

    def ramp_sum(self, spec: Any, ramps: tuple[Any, Any]) -> Any:
        total = np.zeros(spec.shape[1:], dtype=np.complex128)
        cpu_kernels.ramp_sum(_c(spec), ramps[0], ramps[1], total)
        return total

    def apply_transfer(self, spec: Any, transfer: Any, inverse: bool) -> Any:
        """The kernel the fused pipelines use, so that both round alike."""
        if spec.ndim != 4 or not spec.flags.c_contiguous:
            spec *= transfer.conj() if inverse else transfer
        else:
            cpu_kernels.apply_transfer(spec, transfer, inverse)
        return spec

    # ------------------------------------------------------------------ constraints
    def modulus_project(self, wave: Any, amplitude: Any, *, in_place: bool = True
                        ) -> tuple[Any, float]:
        direct = in_place and wave.flags.c_contiguous
        out = wave if direct else np.empty(wave.shape, dtype=wave.dtype)
        err = cpu_kernels.modulus_project(_c(wave), _c(amplitude), out, EPS)
        if in_place and not direct:
            wave[...] = out
            out = wave
        return out, float(err)

    def dm_fourier_update(self, model: Any, waves: Any, amplitude: Any, bound: float) -> float:
        if not waves.flags.c_contiguous:
            raise ValueError("dm_fourier_update: the exit waves must be C-contiguous")
        return float(cpu_kernels.dm_fourier_update(_c(model), waves, _c(amplitude),
                                                   float(bound), EPS))

    # ------------------------------------------------------------------ engine sums
    def object_terms(self, values: Any, probes: Any, win: Windows, num: Any, den: Any,
                     probe_of: Any = None) -> None:
        cpu_kernels.object_terms(_c(values), _c(probes),
                                 probe_index(probes, len(win), probe_of), win.rows, win.cols,
                                 num, den)

    def probe_terms(self, values: Any, obj: Any, win: Windows) -> tuple[Any, Any]:
        pnum = np.zeros(values.shape[1:], dtype=np.complex128)
        pden = np.zeros(values.shape[2:], dtype=np.float64)
        cpu_kernels.probe_terms(_c(values), _c(obj), win.rows, win.cols, pnum, pden)
        return pnum, pden

    def conj_object_products(self, values: Any, obj: Any, win: Windows,
                             with_power: bool = False, runs: np.ndarray | None = None) -> Any:
        b, k = values.shape[:2]
        if runs is None:
            slot, rows, dtype = np.arange(b), b, values.dtype
        else:
            slot, rows, dtype = run_index(runs, b), len(runs), np.complex128
        out = np.zeros((rows, k + int(with_power), *values.shape[2:]), dtype=dtype)
        cpu_kernels.conj_window_products(_c(values), _c(obj), win.rows, win.cols, slot, out)
        return out

    def lsqml_object_terms(self, chi: Any, psi: Any, probes: Any, obj: Any, win: Windows,
                           num: Any, den: Any, with_probe: bool, probe_of: Any = None,
                           per_position: bool = False, runs: np.ndarray | None = None) -> Any:
        chi = chi if chi.flags.c_contiguous else np.ascontiguousarray(chi)
        slot, pnum = probe_term_slots(chi.shape, chi.dtype, with_probe, per_position, runs)
        cpu_kernels.lsqml_object_terms(chi, _c(psi), _c(probes),
                                       probe_index(probes, len(win), probe_of), _c(obj),
                                       win.rows, win.cols, num, den, pnum, slot)
        return probe_terms_result(pnum, with_probe, per_position, runs)

    def lsqml_step_terms(self, chi: Any, probes: Any, obj: Any, d_obj: Any, d_probe: Any,
                         win: Windows, probe_of: Any = None) -> list[Any]:
        dp = _c(d_probe) if d_probe is not None else np.zeros((0, 0, 0), dtype=chi.dtype)
        out = np.zeros((len(win), 5), dtype=np.float64)
        cpu_kernels.lsqml_step_terms(_c(chi), _c(probes),
                                     probe_index(probes, len(win), probe_of), _c(obj),
                                     _c(d_obj), dp, win.rows, win.cols, out)
        return list(out[:, :5 if d_probe is not None else 2].T)

    def epie_update(self, chi: Any, psi: Any, probes: Any, obj: Any, win: Windows,
                    steps: tuple[float, float], probe_grad: str) -> Any:
        accumulate = probe_grad == "sum"
        psum = np.zeros(chi.shape[1:] if accumulate else (0, 0, 0), dtype=np.complex128)
        cpu_kernels.epie_update(chi, _c(psi), _c(probes), obj, win.rows, win.cols,
                                np.asarray(steps, np.float64), psum, probe_grad == "stack")
        return psum if accumulate else (chi if probe_grad == "stack" else None)

    def weighted_power(self, values: Any, weight: Any) -> float:
        return float(cpu_kernels.weighted_power(_c(values), _c(weight)))

    def reduce_accumulators(self, acc: Any, dtype: Any, out: Any = None,
                            spans: Any = None) -> Any:
        """One pass that also zeroes ``acc``, reading only each accumulator's span."""
        out = np.empty(acc.shape[1:], dtype=dtype) if out is None else out
        if spans is None:
            spans = np.array([[0, acc.shape[1]]] * acc.shape[0], dtype=np.int64)
        spans = np.asarray(spans, dtype=np.int64)
        cpu_kernels.reduce_accumulators(acc, out, spans[:, 0].copy(), spans[:, 1].copy())
        return out

    def lsqml_object_direction(self, num: Any, illum: Any, damping: float,
                               out: Any = None) -> Any:
        out = np.empty(num.shape, dtype=num.dtype) if out is None else out
        cpu_kernels.lsqml_object_direction(num, illum, float(damping), EPS, out)
        return out

    # ------------------------------------------------------------------ fused pipelines
    def epie_chunk(self, job: EpieJob) -> tuple[float, Any]:
        if not self.fuses(job.probe.shape):
            return super().epie_chunk(job)
        ramps = None if job.shifts is None else job.shifts.ramps(self.backend)
        return fused_kernels.epie_chunk(job, ramps, self.backend.fft_plans)

    def lsqml_chunk(self, job: LsqmlJob) -> tuple[float, Any, Any]:
        if not (self.fuses(job.probes.shape) and job.noise.fused):
            return super().lsqml_chunk(job)
        err, chi, terms = fused_kernels.lsqml_chunk(job, self.backend.fft_plans)
        # with runs the compiled call back-shifted the runs' terms itself
        if job.with_probe and job.shifts is not None and job.runs is None:
            terms = self.unshift_sum(terms, job.shifts, spectrum=True, overwrite=True)
        return err, chi, terms

    def dm_fourier_chunk(self, job: DmFourierJob) -> float:
        if not self.fuses(job.probes.shape):
            return super().dm_fourier_chunk(job)
        return fused_kernels.dm_fourier_chunk(job, self.backend.fft_plans)

    def dm_object_chunk(self, job: DmObjectJob) -> None:
        if not self.fuses(job.probes.shape):
            super().dm_object_chunk(job)
            return
        fused_kernels.dm_object_chunk(job, self.backend.fft_plans)

    def dm_probe_chunk(self, job: DmProbeJob) -> tuple[Any, Any, Any]:
        if not (self.fuses(job.probes.shape) and job.runs is not None):
            return super().dm_probe_chunk(job)
        return fused_kernels.dm_probe_chunk(job, run_ramps(self.backend, job.ramps, job.runs),
                                            self.backend.fft_plans)

    def position_sums(self, probes: Any, probe_of: Any, back: Any, psi: Any, d_row: Any,
                      d_col: Any, win: Windows) -> np.ndarray:
        """One compiled pass: no gradient waves."""
        out = np.empty((len(win), 4))
        position_kernels.position_sums(probes, probe_index(probes, len(win), probe_of), back,
                                       psi, d_row, d_col, win.rows, win.cols, out)
        return out

    def between_bin_probes(self, probe: Any, shifts: ProbeShifts, rest: np.ndarray) -> Any:
        """The same model, one inverse transform per position in one compiled call (the bins
        here are nearly as many as a chunk's positions)."""
        kk, m0, m1 = probe.shape
        if not self.fuses((m0, m1)):
            return super().between_bin_probes(probe, shifts, rest)
        out = fftw.empty_aligned((len(rest), kk, m0, m1), np.complex64)
        position_kernels.between_bin_probes(
            fftw.execute_dft, self.backend.fft_plans.frame_plan((m0, m1), fftw.FFTW_BACKWARD),
            _c(shifts.spectrum), _c(shifts.table[0]), _c(shifts.table[1]),
            np.ascontiguousarray(shifts.ids, np.int64).reshape(-1),
            np.ascontiguousarray(rest, np.float64),
            (2j * np.pi * np.fft.fftfreq(m0)).astype(np.complex64),
            fftw.empty_aligned((1, kk, m0, m1), np.complex64), out)
        return out

    def residual_position_sums(self, probes: Any, probe_of: Any, chi: Any, obj: Any,
                               win: Windows) -> np.ndarray:
        """One compiled pass, the object's differences on the fly."""
        out = np.empty((len(win), 4))
        position_kernels.residual_position_sums(
            probes, probe_index(probes, len(win), probe_of), chi, obj, win.rows, win.cols, out)
        return out

    def residual_refinement_sums(self, probes: Any, probe_of: Any, chi: Any, obj: Any,
                                 win: Windows) -> np.ndarray:
        """One compiled pass for both, the object's differences on the fly."""
        out = np.empty((len(win), 17))
        position_kernels.residual_refinement_sums(
            probes, probe_index(probes, len(win), probe_of), chi, obj, win.rows, win.cols, out)
        return out

    def window_position_sums(self, probes: Any, chi: Any, obj: Any,
                             win: Windows) -> np.ndarray:
        """The compiled :meth:`residual_position_sums` (its differences are taken on the
        windows anyway): what the fused ePIE pipeline computes, to the bit."""
        return self.residual_position_sums(_c(probes), None, _c(chi), obj, win)

    def position_chunk(self, job: PositionJob) -> np.ndarray:
        if not self.fuses(job.probes.shape):
            return super().position_chunk(job)
        return position_kernels.fused_chunk(job, self.backend.fft_plans)
