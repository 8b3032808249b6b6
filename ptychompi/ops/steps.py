"""The engines' operations: one interface, stated once, with the per-position pipelines composed
from the element-wise steps.

An engine states its algorithm once, in terms of these operations; a backend's implementation
(:class:`~ptychompi.ops.cpu_ops.CpuOps`: numba kernels and, where it can, one compiled FFTW
pipeline per chunk; :class:`~ptychompi.ops.array_ops.ArrayOps`: array-module expressions, CuPy
on a GPU or numpy as the reference) decides how. The pipelines here (:meth:`Operations.epie_chunk`
and the others) are the one statement of each per-position pipeline; a compiled implementation
may replace one by a fused call that computes the same thing, and the tests hold the two to it.

Arrays of exit waves have shape (B, K, M, M) (positions, probe modes, frame); measured
amplitudes are ``sqrt(I)`` with masked pixels ``-1``. Pipeline arguments come as named records
(:class:`EpieJob` and the others), built by keyword, so that two arrays cannot be swapped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..model.physics import EPS, Propagator, Windows, probe_index, run_ramps

if TYPE_CHECKING:
    from ..backends import Backend


class ProbeShifts(NamedTuple):
    """How a chunk's positions see the probe with sub-pixel shifts: the probe's spectrum
    (K, M, M), the shift table's ramps (G, M) per axis and each position's row in it (host)."""

    spectrum: Any
    table: tuple[Any, Any]
    ids: np.ndarray

    def ramps(self, backend: Backend) -> tuple[Any, Any]:
        """Each position's ramps (B, M) per axis."""
        rows = backend.xp.asarray(self.ids)
        return self.table[0][rows], self.table[1][rows]


class EpieJob(NamedTuple):
    """ePIE on a chunk of positions with disjoint windows (see :meth:`Operations.epie_chunk`)."""

    amplitudes: Any  # (N, M, M), all measured amplitudes of the tile
    frames: np.ndarray  # (B,) each position's row of ``amplitudes``
    win: Windows
    obj: Any  # updated in place
    probe: Any  # (K, M, M)
    shifts: ProbeShifts | None  # None: every position sees ``probe``
    steps: tuple[float, float]  # (α, w) of :meth:`Operations.epie_update`
    grad: str  # "none", "sum" or "stack" (the back-shifted sum's spectrum)
    prop: Propagator
    # (B, 4) float64 host array that receives each position's position-gradient sums
    # (:meth:`Operations.residual_position_sums` of its χ against the object before its
    # update: the position refinement), or None (not computed)
    positions: np.ndarray | None = None


class LsqmlJob(NamedTuple):
    """LSQML's exit-wave targets and sums of a chunk (see :meth:`Operations.lsqml_chunk`)."""

    amplitudes: Any
    frames: np.ndarray
    win: Windows
    obj: Any
    probes: Any  # (G, K, M, M) distinct probes
    probe_of: Any  # each position's row in ``probes`` (None: see :func:`probe_index`)
    num: Any  # object numerator accumulator, added to
    den: Any  # illumination accumulator, added to
    with_probe: bool  # also the probe direction terms
    per_position: bool  # the terms per position (exact sub-pixel positions)
    runs: np.ndarray | None  # start offsets of runs sharing a shift
    shifts: tuple[Any, Any] | None  # ramps to back-shift the terms by (per run or position)
    prop: Propagator
    noise: Any  # the noise model (:mod:`ptychompi.engines.noise`)
    # (B, 17) float64 on the host to fill with the position refinement's sums of χ
    # (:meth:`Operations.residual_refinement_sums`), or None
    refinement: np.ndarray | None = None


class DmFourierJob(NamedTuple):
    """DM's Fourier step on a chunk (see :meth:`Operations.dm_fourier_chunk`)."""

    amplitudes: Any  # (B, M, M), the chunk's own
    win: Windows
    obj: Any
    probes: Any
    probe_of: Any
    waves: Any  # (B, K, M, M) detector-plane exit waves, updated in place
    bound: float  # the relaxed projection's bound (0: strict)
    prop: Propagator


class DmObjectJob(NamedTuple):
    """DM's object sums of a chunk (see :meth:`Operations.dm_object_chunk`)."""

    waves: Any
    win: Windows
    probes: Any
    probe_of: Any
    num: Any
    den: Any
    keep: Any  # (B, K, M, M) buffer that receives the sample-plane exit waves, or None
    prop: Propagator


class DmProbeJob(NamedTuple):
    """DM's probe residual with sub-pixel shifts (see :meth:`Operations.dm_probe_chunk`)."""

    psi: Any  # (B, K, M, M) sample-plane exit waves
    obj: Any
    win: Windows
    ramps: tuple[Any, Any]  # each position's
    runs: np.ndarray | None
    probes: Any
    probe_of: Any


class PositionJob(NamedTuple):
    """The position refinement's per-position sums of a chunk (see
    :meth:`Operations.position_chunk`)."""

    amplitudes: Any
    frames: np.ndarray
    win: Windows
    obj: Any
    probes: Any
    probe_of: Any
    d_row: Any  # the object's derivatives along rows and columns
    d_col: Any
    prop: Propagator


def central_differences(xp: Any, obj: Any) -> tuple[Any, Any]:
    """∂O/∂row and ∂O/∂col of a 2-D array (central differences, one-sided at the edges)."""
    d_row, d_col = xp.zeros_like(obj), xp.zeros_like(obj)
    if obj.shape[0] > 1:
        d_row[1:-1] = (obj[2:] - obj[:-2]) * 0.5
        d_row[0], d_row[-1] = obj[1] - obj[0], obj[-1] - obj[-2]
    if obj.shape[1] > 1:
        d_col[:, 1:-1] = (obj[:, 2:] - obj[:, :-2]) * 0.5
        d_col[:, 0], d_col[:, -1] = obj[:, 1] - obj[:, 0], obj[:, -1] - obj[:, -2]
    return d_row, d_col


def window_differences(xp: Any, obj: Any, win: Windows) -> tuple[Any, Any]:
    """:func:`central_differences` of ``obj`` on the windows only, (B, M, M) each: the same
    values at the windows' pixels, without a pass over the whole object."""
    h, w = obj.shape
    y = np.asarray(win.rows, np.int64)[:, None] + np.arange(win.frame)  # (B, M)
    x = np.asarray(win.cols, np.int64)[:, None] + np.arange(win.frame)
    out = []
    for idx, other, axis in ((y, x, 0), (x, y, 1)):
        high = np.minimum(idx + 1, (h, w)[axis] - 1)
        low = np.maximum(idx - 1, 0)
        scale = xp.asarray(np.where(high - low == 2, 0.5, 1.0).astype(obj.real.dtype))
        hi, lo, oth = xp.asarray(high), xp.asarray(low), xp.asarray(other)
        if axis == 0:
            diff = (obj[hi[:, :, None], oth[:, None, :]] - obj[lo[:, :, None], oth[:, None, :]])
            out.append(diff * scale[:, :, None])
        else:
            diff = (obj[oth[:, :, None], hi[:, None, :]] - obj[oth[:, :, None], lo[:, None, :]])
            out.append(diff * scale[:, None, :])
    return out[0], out[1]


def mode_sums(probes: Any, chi: Any) -> tuple[Any, Any]:
    """``q = Σ_k conj(P_k) χ_k`` and ``p = Σ_k |P_k|²`` (B or 1, M, M): how the modes enter
    :func:`gradient_sums` and :func:`valley_terms`."""
    return (probes.conj() * chi).sum(axis=1), (probes.real ** 2 + probes.imag ** 2).sum(axis=1)


def gradient_sums(xp: Any, probes: Any, chi: Any, d_row: Any, d_col: Any,
                  modes: tuple[Any, Any] | None = None) -> Any:
    """Per position (B, 4) float64, in the arrays' memory: ``(Σ Re(conj(g_r) χ), Σ |g_r|²,
    Σ Re(conj(g_c) χ), Σ |g_c|²)`` with ``g = P_j · ∂O`` from the probes (B or 1, K, M, M),
    the residuals ``chi`` (B, K, M, M) and the derivatives on the windows (B, M, M); the
    modes enter as :func:`mode_sums` (``modes``, when the caller has them)."""
    q, power = mode_sums(probes, chi) if modes is None else modes
    terms = []
    for d in (d_row, d_col):
        terms.append((d.conj() * q).real.sum(axis=(1, 2), dtype=np.float64))
        terms.append(((d.real ** 2 + d.imag ** 2) * power).sum(axis=(1, 2), dtype=np.float64))
    return xp.stack(terms, axis=1)


def valley_terms(xp: Any, probes: Any, chi: Any, d_row: Any, d_col: Any,
                 modes: tuple[Any, Any] | None = None) -> Any:
    """Per position (B, 13) float64, in the arrays' memory, the terms of the scan's linear
    mode along the object-position valley (:func:`valley_equations` assembles them):
    ``−Σ w_b Re(conj(∂_aO) q)`` (index ``2a + b``), then ``Σ u_s v_t`` (index ``4 + 3s + t``)
    with ``u`` = ``|∂_rO|² p``, ``Re(conj(∂_rO) ∂_cO) p``, ``|∂_cO|² p`` and ``v`` =
    ``w_r²``, ``w_r w_c``, ``w_c²`` (``q = Σ_k conj(P_k) χ_k``, ``p = Σ_k |P_k|²``, ``w``
    the frame coordinates about its centre). Shapes and ``modes`` as :func:`gradient_sums`."""
    m = chi.shape[-1]
    q, power = mode_sums(probes, chi) if modes is None else modes
    w = xp.arange(m, dtype=power.dtype) - m / 2
    weights = (w[:, None], w[None, :])
    terms = [-((d.conj() * q).real * wb).sum(axis=(1, 2), dtype=np.float64)
             for d in (d_row, d_col) for wb in weights]
    for u in (d_row.real ** 2 + d_row.imag ** 2, (d_row.conj() * d_col).real,
              d_col.real ** 2 + d_col.imag ** 2):
        u = u * power
        terms += [(u * v).sum(axis=(1, 2), dtype=np.float64)
                  for v in (weights[0] ** 2, weights[0] * weights[1], weights[1] ** 2)]
    return xp.stack(terms, axis=1)


def valley_equations(terms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The normal equations ``G E = N`` (4 x 4, 4; index ``2a + b``: ``E_ab`` moves axis a
    of every position by its distance from the scan's centre along axis b) of the scan's
    linear mode along the object-position valley, from :func:`valley_terms` summed over
    positions (13,). Moving every position by ``E`` times its distance from the centre
    and warping the object by the same map leaves every window's translation as it was;
    the data then see only the object's scale, rotation and shear within each frame,
    ``∂ψ/∂E_ab = −P ∂_aO w_b``, whose Gauss-Newton step this is."""
    num = np.asarray(terms[:4], np.float64)
    s = np.asarray(terms[4:], np.float64).reshape(3, 3)  # (u: rr, rc, cc) x (v: rr, rc, cc)
    pair = ((0, 1), (1, 2))  # u (or v) index of (a, c) = (0, 0), (0, 1) / (1, 0), (1, 1)
    gram = np.empty((4, 4))
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                for e in (0, 1):
                    gram[2 * a + b, 2 * c + e] = s[pair[a][c], pair[b][e]]
    return gram, num


class Operations:
    """The element-wise steps (implemented by a backend) and the per-position pipelines
    composed from them. ``probes`` and ``probe_of`` throughout: position j sees
    ``probes[probe_of[j]]`` (default: ``probes[j]``, or ``probes[0]`` for one probe)."""

    #: whether the operations run numba kernels on host arrays (the CPU implementation)
    compiled = False

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    # ------------------------------------------------------------------ element-wise steps
    def extract(self, obj: Any, win: Windows) -> Any:
        """The object's windows (B, M, M)."""
        raise NotImplementedError

    def scatter_add(self, target: Any, values: Any, rows: np.ndarray, cols: np.ndarray) -> None:
        """``target[r:r+M, c:c+M] += values[j]`` for every j (windows may overlap)."""
        raise NotImplementedError

    def scatter_add_disjoint(self, target: Any, values: Any, win: Windows) -> None:
        """:meth:`scatter_add` of windows that do not overlap (ePIE's batches)."""
        raise NotImplementedError

    def exit_waves(self, probes: Any, obj: Any, win: Windows, probe_of: Any = None) -> Any:
        """Exit waves ``P_j · O_j`` (B, K, M, M)."""
        raise NotImplementedError

    def ramp_fill(self, probe_ft: Any, ramps: tuple[Any, Any]) -> Any:
        """Spectra (B, K, M, M) ``probe_ft · ramp_r[b] ⊗ ramp_c[b]``: the probe's spectrum
        shifted by each ramp pair (in the backend's memory for its FFTs)."""
        raise NotImplementedError

    def ramp_sum(self, spec: Any, ramps: tuple[Any, Any]) -> Any:
        """``Σ_b spec_b · conj(ramp_r[b] ⊗ ramp_c[b])`` over the batch axis, (B, K, M, N) ->
        (K, M, N) complex128 (``N``: the ramps' columns, a half spectrum's too)."""
        raise NotImplementedError

    def shifted_probes(self, probe_ft: Any, ramps: tuple[Any, Any] | None, probe: Any) -> Any:
        """Probes (B, K, M, M) shifted by each ramp pair; without ramps ``probe[None]``."""
        if ramps is None:
            return probe[None]
        return self.backend.ifft2(self.ramp_fill(probe_ft, ramps), overwrite=True)

    def unshift_sum(self, values: Any, ramps: tuple[Any, Any] | None, spectrum: bool = False,
                    overwrite: bool = False, real: bool = False) -> Any:
        """``Σ_j shift_{-f_j}(values_j)`` over the batch axis, (B, K, M, M) -> (K, M, M), in
        double precision (complex128; float64 with ``real`` frames, transformed by ``rfft2``).
        Linear: one forward FFT per position and one inverse in total. ``spectrum``: the
        sum's spectrum instead (callers add several and take one inverse FFT); ``overwrite``:
        the FFT may reuse ``values``."""
        be = self.backend
        if ramps is None:
            return values.sum(axis=0, dtype=np.complex128 if not real else np.float64)
        rr, rc = ramps
        if real:
            spec = be.rfft2(values)
            rc = rc[:, :spec.shape[-1]]
        else:
            spec = be.fft2(values, overwrite=overwrite)
        total = self.ramp_sum(spec, (rr, rc))
        if spectrum:
            return total
        if real:
            return be.irfft2(total, values.shape[-2:])
        return be.ifft2(total, overwrite=True)

    def apply_transfer(self, spec: Any, transfer: Any, inverse: bool) -> Any:
        """``spec · H`` (``inverse``: ``conj(H)``) in place: the near-field multiply."""
        raise NotImplementedError

    def modulus_project(self, wave: Any, amplitude: Any, *, in_place: bool = True
                        ) -> tuple[Any, float]:
        """Replace the modulus of ``wave`` by ``amplitude`` (masked pixels keep the model);
        returns the wave and ``Σ_valid (sqrt(Î) − A)²``."""
        raise NotImplementedError

    def dm_fourier_update(self, model: Any, waves: Any, amplitude: Any, bound: float) -> float:
        """DM's Fourier step in place: ``Ψ ← Ψ + π_F(2Φ − Ψ) − Φ`` (Φ = ``model``), π_F the
        relaxed projection with ``bound`` (strict at 0); returns ``Σ_valid (|Φ| − A)²``."""
        raise NotImplementedError

    def object_terms(self, values: Any, probes: Any, win: Windows, num: Any, den: Any,
                     probe_of: Any = None) -> None:
        """Scatter-add ``Σ_k values_k conj(P_k)`` into ``num`` and ``Σ_k |P_k|²`` into
        ``den`` at every window."""
        raise NotImplementedError

    def probe_terms(self, values: Any, obj: Any, win: Windows) -> tuple[Any, Any]:
        """``(Σ_j conj(O_j) values_j, Σ_j |O_j|²)`` in double precision: (K, M, M)
        complex128, (M, M) float64."""
        raise NotImplementedError

    def conj_object_products(self, values: Any, obj: Any, win: Windows,
                             with_power: bool = False, runs: np.ndarray | None = None) -> Any:
        """``conj(O_j) · values_j`` (B, K, M, M), with ``|O_j|²`` as mode K when
        ``with_power``; with ``runs`` summed per run in double precision (R, K(+1), M, M)."""
        raise NotImplementedError

    def lsqml_object_terms(self, chi: Any, psi: Any, probes: Any, obj: Any, win: Windows,
                           num: Any, den: Any, with_probe: bool, probe_of: Any = None,
                           per_position: bool = False, runs: np.ndarray | None = None) -> Any:
        """``chi -= psi`` in place, :meth:`object_terms` of ``chi`` and, with ``with_probe``,
        the probe direction terms ``chi_j conj(O_j)``: summed (complex128 (K, M, M)), per
        position (``per_position``: (B, K, M, M) working precision) or per run (``runs``:
        (R, K, M, M) complex128); else None."""
        raise NotImplementedError

    def lsqml_step_terms(self, chi: Any, probes: Any, obj: Any, d_obj: Any, d_probe: Any,
                         win: Windows, probe_of: Any = None) -> list[Any]:
        """Per-position float64 sums (each (B,)) of LSQML's step-length system:
        ``Re⟨dop, dop⟩, Re⟨dop, χ⟩`` and with ``d_probe`` ``Re⟨dpo, dpo⟩, Re⟨dop, dpo⟩,
        Re⟨dpo, χ⟩``, ``dop = ΔO_j P_j``, ``dpo = ΔP O_j``."""
        raise NotImplementedError

    def epie_update(self, chi: Any, psi: Any, probes: Any, obj: Any, win: Windows,
                    steps: tuple[float, float], probe_grad: str) -> Any:
        """rPIE's object update in place for disjoint windows and its probe gradient.

        ``steps = (α, w)``, ``Δ = chi − psi``; ``O_j += α Σ_k conj(P_jk) Δ_jk / ((1 − w)|P_j|²
        + w max|P_j|²)`` (``w = 1``: ePIE's ``α / max|P_j|²``); the gradient ``Δ_k conj(O_j)
        / max|O_j|²`` of the old object (ePIE's, as in rPIE) is returned summed
        (``probe_grad="sum"``, complex128 (K, M, M)), per position (``"stack"``) or not at
        all (``"none"``)."""
        raise NotImplementedError

    def weighted_power(self, values: Any, weight: Any) -> float:
        """``Σ weight[g, r] |values[g, k, r]|²`` (values (G, K, M, M), weight (G, M, M)) in
        double precision."""
        raise NotImplementedError

    def reduce_accumulators(self, acc: Any, dtype: Any, out: Any = None,
                            spans: Any = None) -> Any:
        """``Σ_t acc[t]`` over per-thread accumulators (T, H, ...) in thread order, as
        ``dtype`` (into ``out``); ``spans`` (T, 2): the rows each may be non-zero in."""
        raise NotImplementedError

    def lsqml_object_direction(self, num: Any, illum: Any, damping: float,
                               out: Any = None) -> Any:
        """``num / sqrt(illum² + damping + EPS)`` in working precision."""
        raise NotImplementedError

    def position_sums(self, probes: Any, probe_of: Any, back: Any, psi: Any, d_row: Any,
                      d_col: Any, win: Windows) -> np.ndarray:
        """Per position (B, 4) float64 on the host: ``(Σ Re(conj(g_r) χ), Σ |g_r|²,
        Σ Re(conj(g_c) χ), Σ |g_c|²)`` over modes and pixels, ``χ = back − psi``,
        ``g = P_j · ∂O`` on the window."""
        raise NotImplementedError

    def residual_position_sums(self, probes: Any, probe_of: Any, chi: Any, obj: Any,
                               win: Windows) -> np.ndarray:
        """:meth:`position_sums` of a residual ``chi`` an engine already formed (LSQML's
        ``Ψ' − ψ``), ``∂O`` the central differences of ``obj``."""
        d_row, d_col = central_differences(self.backend.xp, obj)
        return self.position_sums(probes, probe_of, chi, self.backend.xp.zeros_like(chi),
                                  d_row, d_col, win)

    def window_position_sums(self, probes: Any, chi: Any, obj: Any,
                             win: Windows) -> np.ndarray:
        """:meth:`residual_position_sums` (position j sees ``probes[j]``, or ``probes[0]``
        for one probe) with the differences taken on the windows alone
        (:func:`window_differences`): no pass over the whole object, for ePIE's chunks."""
        xp = self.backend.xp
        d_row, d_col = window_differences(xp, obj, win)
        return np.asarray(self.backend.asnumpy(gradient_sums(xp, probes, chi, d_row, d_col)),
                          np.float64)

    def residual_refinement_sums(self, probes: Any, probe_of: Any, chi: Any, obj: Any,
                                 win: Windows) -> np.ndarray:
        """Of a residual ``chi`` an engine formed, per position (B, 17) float64 on the host:
        :meth:`residual_position_sums`'s four then :func:`valley_terms`' 13."""
        xp = self.backend.xp
        probes = probes if probe_of is None else probes[xp.asarray(probe_of)]
        d_row, d_col = window_differences(xp, obj, win)  # the whole object's, on the windows
        modes = mode_sums(probes, chi)  # once for both
        both = xp.concatenate([gradient_sums(xp, probes, chi, d_row, d_col, modes),
                               valley_terms(xp, probes, chi, d_row, d_col, modes)], axis=1)
        return np.asarray(self.backend.asnumpy(both), np.float64)

    # ------------------------------------------------------------------ shared compositions
    def shifted_set(self, probe: Any, shifts: ProbeShifts | None) -> tuple[Any, Any]:
        """The distinct shifted probes (G, K, M, M) of a chunk's positions and each position's
        row in them (None: one row per position, or the unshifted probe (1, K, M, M))."""
        if shifts is None:
            return probe[None], None
        ids, member = np.unique(shifts.ids, return_inverse=True)
        if len(ids) == len(member):
            return self.shifted_probes(shifts.spectrum, shifts.ramps(self.backend), probe), None
        rows = self.backend.xp.asarray(ids)
        ramps = shifts.table[0][rows], shifts.table[1][rows]
        return (self.shifted_probes(shifts.spectrum, ramps, probe),
                self.backend.xp.asarray(member.reshape(-1)))

    def between_bin_probes(self, probe: Any, shifts: ProbeShifts, rest: np.ndarray) -> Any:
        """Probes (B, K, M, M) of positions ``rest`` (B, 2) px past their bins' shifts:
        ``P_b − rest · ∇P_b``, the bin's shifted probe moved on to first order (the shift's
        Fourier ramp ``exp(−2πi (f + δ) q) ≈ exp(−2πi f q) (1 − 2πi δ q)``), its gradient by
        Fourier from the same spectrum: three inverse transforms per distinct bin, none per
        position, and a model continuous in each position."""
        xp = self.backend.xp
        ids, member = np.unique(shifts.ids, return_inverse=True)
        rows = xp.asarray(ids)
        rr, rc = shifts.table[0][rows], shifts.table[1][rows]
        slope = xp.asarray(2j * np.pi * np.fft.fftfreq(rr.shape[-1]), dtype=rr.dtype)
        g = len(ids)
        stack = self.shifted_probes(shifts.spectrum, (xp.concatenate([rr, rr * slope, rr]),
                                                      xp.concatenate([rc, rc, rc * slope])),
                                    probe)
        member = xp.asarray(member.reshape(-1))
        d = xp.asarray(rest, dtype=self.backend.real_dtype)
        out = stack[member]
        out -= d[:, 0, None, None, None] * stack[g + member]
        out -= d[:, 1, None, None, None] * stack[2 * g + member]
        return out

    def shifted_probe_residual(self, psi: Any, obj: Any, win: Windows, ramps: tuple[Any, Any],
                               probes: Any, probe_of: Any = None,
                               runs: np.ndarray | None = None) -> tuple[Any, Any, Any]:
        """DM's probe residual with sub-pixel shifts: the spectrum of
        ``Σ_j S_-j[conj(O_j)(ψ_j − P_j O_j)]`` (K, M, M) complex128, ``Σ_j |O_j|²`` (M, M)
        and each run's own ``Σ_{j∈run} |O_j|²`` (R, M, M), float64. A run shares ``P_j``,
        so its residual is ``Σ conj(O_j) ψ_j − (Σ |O_j|²) P_run`` from the run's two sums in
        double precision, back-shifted once; the result does not depend on how positions are
        grouped into chunks or tiles."""
        xp, b, k = self.backend.xp, psi.shape[0], psi.shape[1]
        both = self.conj_object_products(psi, obj, win, with_power=True, runs=runs)
        power = both[:, k].real
        first = np.arange(b) if runs is None else np.asarray(runs)
        rows = (probe_of[xp.asarray(first)] if probe_of is not None
                else xp.asarray(probe_index(probes, b, None)[first]))
        residual = both[:, :k] - power[:, None] * probes[rows]
        num = self.unshift_sum(residual, run_ramps(self.backend, ramps, runs), spectrum=True,
                               overwrite=True)
        den = power.sum(axis=0, dtype=np.float64)  # in run order, as the fused kernel adds
        return num, den, power.astype(np.float64)

    # ------------------------------------------------------------------ per-position pipelines
    def epie_chunk(self, job: EpieJob) -> tuple[float, Any]:
        """ePIE on a chunk of disjoint windows: exit waves of the (shifted) probe, modulus
        projection, object update in place and the probe gradient (as ``job.grad`` asks;
        "stack": the spectrum of the back-shifted gradients' sum); with ``job.positions``
        also each position's position-gradient sums into it. Returns the chunk's Fourier
        error numerator and the gradient (or None)."""
        xp = self.backend.xp
        distinct, member = self.shifted_set(job.probe, job.shifts)
        probes = distinct if member is None else distinct[member]
        psi = self.exit_waves(probes, job.obj, job.win)
        projected, err = self.modulus_project(job.prop.forward(psi),
                                              job.amplitudes[xp.asarray(job.frames)])
        chi = job.prop.backward(projected, overwrite=True)
        if job.positions is not None:  # against the object before this chunk's update
            job.positions[...] = self.window_position_sums(probes, chi - psi, job.obj, job.win)
        grad = self.epie_update(chi, psi, probes, job.obj, job.win, job.steps, job.grad)
        if job.grad == "stack":
            grad = self.unshift_sum(grad, job.shifts.ramps(self.backend), spectrum=True,
                                    overwrite=True)
        return err, grad

    def lsqml_chunk(self, job: LsqmlJob) -> tuple[float, Any, Any]:
        """LSQML's step 1 on a chunk: exit waves ψ, the noise model's targets Ψ', χ = Ψ' − ψ
        back in the sample plane, the object sums into ``job.num``/``job.den`` and the probe
        direction terms (back-shifted by ``job.shifts`` into a spectrum when given), and the
        position refinement's sums into ``job.refinement`` when given. Returns
        ``(error, χ, terms)``."""
        xp = self.backend.xp
        psi = self.exit_waves(job.probes, job.obj, job.win, job.probe_of)
        target, err = job.noise.target(self.backend, job.prop.forward(psi),
                                       job.amplitudes[xp.asarray(job.frames)])
        chi = job.prop.backward(target, overwrite=True)
        terms = self.lsqml_object_terms(chi, psi, job.probes, job.obj, job.win, job.num,
                                        job.den, job.with_probe, job.probe_of,
                                        per_position=job.per_position, runs=job.runs)
        if job.refinement is not None:  # of χ = Ψ' − ψ (the object terms formed it)
            job.refinement[...] = self.residual_refinement_sums(job.probes, job.probe_of, chi,
                                                                job.obj, job.win)
        if job.with_probe and job.shifts is not None:
            terms = self.unshift_sum(terms, job.shifts, spectrum=True, overwrite=True)
        return err, chi, terms

    def dm_fourier_chunk(self, job: DmFourierJob) -> float:
        """DM's Fourier step on a chunk's exit waves; returns the models' error."""
        phi = self.exit_waves(job.probes, job.obj, job.win, job.probe_of)
        return self.dm_fourier_update(job.prop.forward(phi), job.waves, job.amplitudes,
                                      job.bound)

    def dm_object_chunk(self, job: DmObjectJob) -> None:
        """DM's object sums of a chunk's sample-plane exit waves (kept in ``job.keep``)."""
        if job.keep is None:
            psi = job.prop.backward(job.waves)
        else:
            job.keep[...] = job.waves
            psi = job.prop.backward(job.keep, overwrite=True)
            if psi is not job.keep:
                job.keep[...] = psi
                psi = job.keep
        self.object_terms(psi, job.probes, job.win, job.num, job.den, job.probe_of)

    def dm_probe_chunk(self, job: DmProbeJob) -> tuple[Any, Any, Any]:
        """DM's probe residual of a chunk (:meth:`shifted_probe_residual`)."""
        return self.shifted_probe_residual(job.psi, job.obj, job.win, job.ramps, job.probes,
                                           job.probe_of, job.runs)


    def position_chunk(self, job: PositionJob) -> np.ndarray:
        """The position gradient's sums of a chunk (:meth:`position_sums`) after a modulus
        projection of its exit waves: (B, 4) float64."""
        xp = self.backend.xp
        psi = self.exit_waves(job.probes, job.obj, job.win, job.probe_of)
        projected, _ = self.modulus_project(job.prop.forward(psi),
                                            job.amplitudes[xp.asarray(job.frames)])
        back = job.prop.backward(projected, overwrite=True)
        return self.position_sums(job.probes, job.probe_of, back, psi, job.d_row, job.d_col,
                                  job.win)


__all__ = ["EPS", "DmFourierJob", "DmObjectJob", "DmProbeJob", "EpieJob", "LsqmlJob",
           "Operations", "PositionJob", "ProbeShifts"]
