"""The engines' operations as array-module expressions: CuPy on a GPU (with the two CUDA
kernels of ``kernels/`` for the scatter-add and the modulus projection), or numpy on a CPU as the
reference implementation that the GPU path is checked against without a GPU."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model.physics import (
    EPS,
    Windows,
    fourier_error_terms,
    mode_sum,
    re_inner,
    relaxed_modulus_project,
    run_index,
)
from .steps import Operations, gradient_sums


class ArrayOps(Operations):
    """:class:`Operations` in the backend's array module (``backend.xp``)."""

    def __init__(self, backend: Any) -> None:
        super().__init__(backend)
        # the CUDA kernels need CuPy itself (not an array module standing in for it)
        self.cuda = backend.is_gpu and hasattr(backend.xp, "RawKernel")

    # ------------------------------------------------------------------ windows
    def extract(self, obj: Any, win: Windows) -> Any:
        return obj.reshape(-1)[win.index]  # one fancy-index gather

    def scatter_add(self, target: Any, values: Any, rows: np.ndarray, cols: np.ndarray) -> None:
        if self.cuda:  # one kernel with atomic adds (kernels/scatter_add.cu)
            from ..backends.gpu.kernels import scatter_add_gpu  # noqa: PLC0415

            scatter_add_gpu(target, values, rows, cols, cache=self.backend.kernels)
            return
        m0, m1 = values.shape[-2:]
        values = values.astype(target.dtype, copy=False)
        for j in range(len(rows)):
            r, c = int(rows[j]), int(cols[j])
            target[r:r + m0, c:c + m1] += values[j]

    def scatter_add_disjoint(self, target: Any, values: Any, win: Windows) -> None:
        flat = target.reshape(-1)  # no duplicates: one vectorised add, no atomics
        flat[win.index] += values

    def exit_waves(self, probes: Any, obj: Any, win: Windows, probe_of: Any = None) -> Any:
        probes = probes if probe_of is None else probes[probe_of]
        return probes * self.extract(obj, win)[:, None]

    # ------------------------------------------------------------------ shifts
    def ramp_fill(self, probe_ft: Any, ramps: tuple[Any, Any]) -> Any:
        rr, rc = ramps
        return probe_ft[None] * rr[:, None, :, None] * rc[:, None, None, :]

    def ramp_sum(self, spec: Any, ramps: tuple[Any, Any]) -> Any:
        rr, rc = ramps
        spec *= rr.conj()[:, None, :, None]
        spec *= rc.conj()[:, None, None, :]
        return spec.sum(axis=0, dtype=np.complex128)

    def apply_transfer(self, spec: Any, transfer: Any, inverse: bool) -> Any:
        spec *= transfer.conj() if inverse else transfer
        return spec

    # ------------------------------------------------------------------ constraints
    def modulus_project(self, wave: Any, amplitude: Any, *, in_place: bool = True
                        ) -> tuple[Any, float]:
        if self.cuda:  # one fused kernel (kernels/modulus.cu)
            from ..backends.gpu.kernels import modulus_project_gpu  # noqa: PLC0415

            return modulus_project_gpu(wave, amplitude, in_place=in_place,
                                       cache=self.backend.kernels)
        xp = self.backend.xp
        model = xp.sqrt((wave.real ** 2 + wave.imag ** 2).sum(axis=1))
        valid = amplitude >= 0
        meas = xp.maximum(amplitude, 0)
        diff = (model - meas) * valid
        err = float(xp.sum(diff.astype(np.float64) ** 2))
        factor = xp.where(valid, meas / (model + EPS), 1).astype(model.dtype)
        out = wave if in_place else wave.copy()
        out *= factor[:, None]
        return out, err

    def dm_fourier_update(self, model: Any, waves: Any, amplitude: Any, bound: float) -> float:
        err = fourier_error_terms(self.backend, model, amplitude)
        trial = model * 2
        trial -= waves
        if bound > 0:
            projected = relaxed_modulus_project(self.backend, trial, amplitude, bound)
        else:
            projected, _ = self.modulus_project(trial, amplitude)
        waves += projected
        waves -= model
        return err

    # ------------------------------------------------------------------ engine sums
    def object_terms(self, values: Any, probes: Any, win: Windows, num: Any, den: Any,
                     probe_of: Any = None) -> None:
        probes = probes if probe_of is None else probes[probe_of]
        self.scatter_add(num, mode_sum(values, probes.conj()), win.rows, win.cols)
        power = (probes.real ** 2 + probes.imag ** 2).sum(axis=1)
        power = self.backend.xp.broadcast_to(power, (len(win), *power.shape[1:]))
        self.scatter_add(den, power, win.rows, win.cols)

    def probe_terms(self, values: Any, obj: Any, win: Windows) -> tuple[Any, Any]:
        o = self.extract(obj, win)
        return ((o.conj()[:, None] * values).sum(axis=0, dtype=np.complex128),
                (o.real ** 2 + o.imag ** 2).sum(axis=0, dtype=np.float64))

    def conj_object_products(self, values: Any, obj: Any, win: Windows,
                             with_power: bool = False, runs: np.ndarray | None = None) -> Any:
        o = self.extract(obj, win)
        out = o.conj()[:, None] * values
        if with_power:
            power = (o.real ** 2 + o.imag ** 2)[:, None].astype(values.dtype)
            out = self.backend.xp.concatenate([out, power], 1)
        return out if runs is None else self._run_sums(out, runs)

    def _run_sums(self, values: Any, runs: np.ndarray) -> Any:
        """``values`` (B, ...) summed over each run, complex128 (R, ...): one (runs x
        positions) indicator product instead of a kernel launch per run."""
        xp, b = self.backend.xp, values.shape[0]
        run_of = xp.asarray(run_index(runs, b))
        member = (run_of[None, :] == xp.arange(len(runs))[:, None]).astype(np.complex128)
        flat = values.reshape(b, -1).astype(np.complex128)
        return (member @ flat).reshape(len(runs), *values.shape[1:])

    def lsqml_object_terms(self, chi: Any, psi: Any, probes: Any, obj: Any, win: Windows,
                           num: Any, den: Any, with_probe: bool, probe_of: Any = None,
                           per_position: bool = False, runs: np.ndarray | None = None) -> Any:
        chi -= psi
        self.object_terms(chi, probes, win, num, den, probe_of)
        if not with_probe:
            return None
        if runs is not None or per_position:
            return self.conj_object_products(chi, obj, win, runs=runs)
        return self.conj_object_products(chi, obj, win).sum(axis=0, dtype=np.complex128)

    def lsqml_step_terms(self, chi: Any, probes: Any, obj: Any, d_obj: Any, d_probe: Any,
                         win: Windows, probe_of: Any = None) -> list[Any]:
        be, xp = self.backend, self.backend.xp
        probes = probes if probe_of is None else probes[probe_of]
        dop = self.extract(d_obj, win)[:, None] * probes
        terms = [re_inner(be, dop, dop), re_inner(be, dop, chi)]
        if d_probe is not None:
            dpo = d_probe[None] * self.extract(obj, win)[:, None]
            terms += [re_inner(be, dpo, dpo), re_inner(be, dop, dpo), re_inner(be, dpo, chi)]
        return [xp.asarray(v, dtype=np.float64) for v in terms]

    def epie_update(self, chi: Any, psi: Any, probes: Any, obj: Any, win: Windows,
                    steps: tuple[float, float], probe_grad: str) -> Any:
        alpha, w = steps
        old = self.extract(obj, win)
        delta = chi - psi
        power = (probes.real ** 2 + probes.imag ** 2).sum(axis=1)
        peak = power.reshape(len(probes), -1).max(axis=1)[:, None, None]
        weight = (alpha / ((1 - w) * power + w * peak)).astype(power.dtype)
        obj_update = (weight[:, None] * probes.conj() * delta).sum(axis=1)
        self.scatter_add_disjoint(obj, obj_update.astype(obj.dtype), win)
        if probe_grad == "none":
            return None
        opower = old.real ** 2 + old.imag ** 2
        omax = opower.reshape(len(win), -1).max(axis=1)[:, None, None]
        scaled = old.conj() / omax.astype(opower.dtype)  # ePIE's probe step, as in rPIE
        delta *= scaled[:, None]
        return delta if probe_grad == "stack" else delta.sum(axis=0, dtype=np.complex128)

    def weighted_power(self, values: Any, weight: Any) -> float:
        power = (values.real.astype(np.float64) ** 2 + values.imag.astype(np.float64) ** 2)
        return float((weight[:, None] * power).sum())

    def reduce_accumulators(self, acc: Any, dtype: Any, out: Any = None,
                            spans: Any = None) -> Any:
        total = acc.sum(axis=0).astype(dtype, copy=False)
        acc[...] = 0  # zeroed for reuse, as the compiled reduction leaves them
        if out is None:
            return total
        out[...] = total
        return out

    def lsqml_object_direction(self, num: Any, illum: Any, damping: float,
                               out: Any = None) -> Any:
        xp = self.backend.xp
        out = xp.empty(num.shape, dtype=num.dtype) if out is None else out
        out[...] = num / xp.sqrt(illum ** 2 + damping + EPS)
        return out

    def position_sums(self, probes: Any, probe_of: Any, back: Any, psi: Any, d_row: Any,
                      d_col: Any, win: Windows) -> np.ndarray:
        probes = probes if probe_of is None else probes[probe_of]
        sums = gradient_sums(self.backend.xp, probes, back - psi, self.extract(d_row, win),
                             self.extract(d_col, win))
        return np.asarray(self.backend.asnumpy(sums), np.float64)
