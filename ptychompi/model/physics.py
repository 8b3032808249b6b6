"""Forward model: windows, sub-pixel shift tables, propagators, the relaxed modulus projection,
errors: what does not depend on how a backend computes (the engines' per-position and
element-wise steps are its operations, :mod:`ptychompi.ops`).

Every function takes the array module (via a :class:`~ptychompi.backends.Backend`) explicitly and
works on batches: arrays of exit waves have shape (B, K, M, M) (positions, probe modes, frame).
Measured data enter as *amplitudes* ``A = sqrt(I)`` with invalid (masked) pixels encoded as
``-1``; far-field amplitudes are ``ifftshift``-ed once at load so no loop ever shifts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends import Backend

EPS = 1e-9


# --------------------------------------------------------------------------- windows
def window_index(rows: np.ndarray, cols: np.ndarray, frame: int, width: int) -> np.ndarray:
    """Flat indices (B, M, M) of the M x M windows with top-left corners (rows, cols)."""
    ar = np.arange(frame, dtype=np.int64)
    r = np.asarray(rows, np.int64)[:, None, None] + ar[None, :, None]
    c = np.asarray(cols, np.int64)[:, None, None] + ar[None, None, :]
    return r * width + c


@dataclass(frozen=True)
class Windows:
    """The M x M object windows of some positions: top-left corners on the host (what the
    kernels and the scatter-adds use) and, for the array-module operations, their flat
    indices on the device."""

    rows: np.ndarray
    cols: np.ndarray
    index: Any = None  # (B, M, M) flat indices (array-module gathers); None for the kernels
    frame: int = 0  # M

    def __len__(self) -> int:
        return len(self.rows)


def probe_index(probes: Any, n: int, probe_of: Any) -> np.ndarray:
    """Each of ``n`` positions' row in ``probes`` (CPU kernels)."""
    if probe_of is not None:
        return np.asarray(probe_of, dtype=np.int64)
    if probes.shape[0] == 1:
        return np.zeros(n, dtype=np.int64)
    return np.arange(n, dtype=np.int64)


# --------------------------------------------------------------------------- sub-pixel
def subpixel_grid(positions: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split positions (n, 2) into integer corners (n, 2), a table of sub-pixel fractions
    (G, 2) and each position's row in that table (n,).

    ``bins > 0`` rounds each fraction to a multiple of ``1/bins`` px: the table holds the
    distinct rounded fractions (sorted) and positions with the same fraction share a row, so
    a shifted probe or a back-shift can serve all of them. The corners stay
    ``floor(position)`` (a fraction may round up to a whole pixel, a one-pixel Fourier
    shift), so every window stays inside the tile. ``bins == 0`` keeps positions exact (one
    row each).
    """
    pos = np.asarray(positions, np.float64).reshape(-1, 2)
    top = np.floor(pos).astype(np.int64)
    if bins <= 0 or not len(pos):
        return top, pos - top, np.arange(len(pos), dtype=np.int64)
    rest = np.round((pos - top) * bins).astype(np.int64)  # 0 ... bins
    steps, ids = np.unique(rest, axis=0, return_inverse=True)
    return top, steps / bins, ids.reshape(-1)


def runs_of(ids: np.ndarray) -> np.ndarray:
    """Start offsets of the runs of equal consecutive ``ids``."""
    ids = np.asarray(ids)
    return np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, int)


def run_index(runs: np.ndarray, n: int) -> np.ndarray:
    """Each of ``n`` positions' run, from the runs' start offsets (:func:`runs_of`)."""
    return np.repeat(np.arange(len(runs)), np.diff([*runs, n]))


def subpixel_ramps(backend: Backend, fractions: np.ndarray, frame: int) -> tuple[Any, Any]:
    """1-D Fourier phase ramps (B, M) per axis that shift a frame by ``+fractions``."""
    xp = backend.xp
    q = xp.asarray(np.fft.fftfreq(frame), dtype=backend.real_dtype)
    f = xp.asarray(fractions, dtype=backend.real_dtype)
    ramp_r = xp.exp((-2j * np.pi) * f[:, 0:1] * q[None, :]).astype(backend.complex_dtype)
    ramp_c = xp.exp((-2j * np.pi) * f[:, 1:2] * q[None, :]).astype(backend.complex_dtype)
    return ramp_r, ramp_c


def run_ramps(backend: Backend, ramps: tuple[Any, Any], runs: np.ndarray | None
              ) -> tuple[Any, Any]:
    """The ramps of each run's first position (all of them without runs)."""
    if runs is None:
        return ramps
    first = backend.xp.asarray(runs)
    return ramps[0][first], ramps[1][first]


# --------------------------------------------------------------------------- propagation
@dataclass
class Propagator:
    """Sample plane -> detector plane and back, unitary.

    Far field: ``F``. Near field: angular spectrum ``F⁻¹[F ψ · H]`` with the Fresnel transfer
    function ``H = exp(-i π λ z q²)`` on the frame grid (``z`` and the pixel already
    Fresnel-scaled for a cone beam).
    """

    backend: Backend
    kind: str  # "farfield" | "nearfield"
    transfer: Any = None  # (M, M) complex, near field only

    @classmethod
    def build(cls, backend: Backend, kind: str, frame: int, wavelength_m: float | None = None,
              distance_m: float | None = None, pixel_m: float | None = None) -> Propagator:
        if kind == "farfield":
            return cls(backend, kind)
        q = np.fft.fftfreq(frame, d=pixel_m)
        q2 = q[:, None] ** 2 + q[None, :] ** 2
        h = np.exp(-1j * np.pi * wavelength_m * distance_m * q2)
        return cls(backend, kind, backend.asarray(h, backend.complex_dtype))

    def forward(self, psi: Any) -> Any:
        if self.kind == "farfield":
            return self.backend.fft2(psi)
        return self.backend.ifft2(self._apply(self.backend.fft2(psi), False), overwrite=True)

    def backward(self, wave: Any, overwrite: bool = False) -> Any:
        if self.kind == "farfield":
            return self.backend.ifft2(wave, overwrite=overwrite)
        spec = self.backend.fft2(wave, overwrite=overwrite)
        return self.backend.ifft2(self._apply(spec, True), overwrite=True)

    def _apply(self, spec: Any, inverse: bool) -> Any:
        """``spec · H`` (``inverse``: ``conj(H)``) in place."""
        return self.backend.ops.apply_transfer(spec, self.transfer, inverse)

    @property
    def ffts_per_pass(self) -> int:
        return 1 if self.kind == "farfield" else 2


# --------------------------------------------------------------------------- constraint
def model_intensity(wave: Any) -> Any:
    """``Î = Σ_k |Ψ_k|²`` over the mode axis: (B, K, M, M) -> (B, M, M)."""
    return (wave.real ** 2 + wave.imag ** 2).sum(axis=1)


def model_amplitude(backend: Backend, wave: Any) -> Any:
    """``sqrt(Σ_k |Ψ_k|²)``: (B, K, M, M) -> (B, M, M), one pass when K = 1."""
    if wave.shape[1] == 1:
        return backend.xp.abs(wave[:, 0])
    return backend.xp.sqrt(model_intensity(wave))


def _deviation(backend: Backend, model: Any, amplitude: Any) -> tuple[Any, Any, float]:
    """Valid mask, measured amplitude (0 where masked) and ``Σ_valid (model - A)²``."""
    xp = backend.xp
    valid = amplitude >= 0
    meas = xp.maximum(amplitude, 0)
    diff = model - meas
    diff *= valid
    flat = diff.reshape(-1)
    return valid, meas, float(xp.dot(flat, flat))


def relaxed_modulus_project(backend: Backend, wave: Any, amplitude: Any,
                            bound: float) -> Any:
    """Modulus projection that stops at the noise level (DM's power-bound constraint).

    Per frame, the mean squared amplitude deviation ``e_j`` over valid pixels is compared
    with ``bound`` (0.25 photons is the Poisson floor of ``(sqrt(I) - A)²``): frames within
    it are left as they are, others are moved so that their deviation is exactly ``bound``.
    Works in place on ``wave``.
    """
    xp = backend.xp
    model = model_amplitude(backend, wave)
    valid = amplitude >= 0
    meas = xp.maximum(amplitude, 0)
    dev = model - meas
    dev *= valid
    count = xp.maximum(valid.sum(axis=(1, 2)), 1)
    n = dev.shape[0]
    flat = dev.reshape(n, -1)
    err = xp.einsum("ij,ij->i", flat, flat) / count
    renorm = xp.sqrt(bound / xp.maximum(err, bound)).astype(backend.real_dtype)
    dev *= renorm[:, None, None]
    dev += meas  # the target amplitude
    model += EPS
    xp.divide(dev, model, out=dev)  # the factor
    xp.copyto(dev, 1, where=~valid)
    wave *= dev[:, None]
    return wave


def fourier_error_terms(backend: Backend, wave: Any, amplitude: Any) -> float:
    """``Σ_valid (sqrt(Î) - A)²`` of a batch without projecting."""
    return _deviation(backend, model_amplitude(backend, wave), amplitude)[2]


# --------------------------------------------------------------------------- engine sums


def probe_term_slots(shape: tuple[int, ...], dtype: Any, with_probe: bool, per_position: bool,
                     runs: np.ndarray | None, zeros: Callable = np.zeros
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Each position's slot and the zeroed slots (S, K, M, M) of LSQML's probe direction terms
    for (B, K, M, M) waves: none (S = 0), one per run of equal shift (complex128), one per
    position (``per_position``, working precision) or one for all (complex128); ``zeros``
    allocates them."""
    b, k = shape[:2]
    if not with_probe:
        slot, size, kind = np.zeros(b, np.int64), (0, k, 0, 0), np.complex128
    elif runs is not None:
        slot, size, kind = run_index(runs, b), (len(runs), *shape[1:]), np.complex128
    elif per_position:
        slot, size, kind = np.arange(b), tuple(shape), dtype
    else:
        slot, size, kind = np.zeros(b, np.int64), (1, *shape[1:]), np.complex128
    return slot, zeros(size, dtype=kind)


def probe_terms_result(pnum: np.ndarray, with_probe: bool, per_position: bool,
                       runs: np.ndarray | None) -> np.ndarray | None:
    """What :func:`lsqml_object_terms` returns from the slots of :func:`probe_term_slots`."""
    if not with_probe:
        return None
    return pnum if runs is not None or per_position else pnum[0]


def mode_sum(waves: Any, weights: Any) -> Any:
    """``Σ_k waves_k · weights_k``: (B, K, M, M) x (B or 1, K, M, M) -> (B, M, M).

    One multiply without a (B, K, M, M) temporary in the common one-mode case.
    """
    if waves.shape[1] == 1:
        return waves[:, 0] * weights[:, 0]
    return (waves * weights).sum(axis=1)


def re_inner(backend: Backend, x: Any, y: Any) -> Any:
    """``Re Σ conj(x_b) y_b`` per leading index b, without complex temporaries.

    Complex arrays are viewed as interleaved real pairs, so the sum is one real row-wise dot.
    """
    xp = backend.xp
    n = x.shape[0]
    xv = xp.ascontiguousarray(x).view(backend.real_dtype).reshape(n, -1)
    yv = xp.ascontiguousarray(y).view(backend.real_dtype).reshape(n, -1)
    return xp.einsum("ij,ij->i", xv, yv)


# --------------------------------------------------------------------------- probe modes
def orthogonalize_modes(backend: Backend, probe: Any) -> Any:
    """Orthogonal probe modes spanning the same space, sorted by decreasing power."""
    xp = backend.xp
    k = probe.shape[0]
    if k == 1:
        return probe
    flat = probe.reshape(k, -1)
    gram = flat.conj() @ flat.T
    w, v = np.linalg.eigh(backend.asnumpy(gram).astype(np.complex128))
    order = np.argsort(w)[::-1]
    v = xp.asarray(v[:, order].astype(probe.dtype))
    return (v.T @ flat).reshape(probe.shape)


def apply_amplitude_limits(backend: Backend, obj: Any, low: float | None,
                           high: float | None) -> None:
    """Clip the object's amplitude to [low, high] in place, keeping its phase."""
    if low is None and high is None:
        return
    xp = backend.xp
    amp = xp.abs(obj)
    target = xp.clip(amp, low if low is not None else 0.0, high if high is not None else np.inf)
    unit = xp.where(amp > 0, obj / xp.maximum(amp, EPS), 1.0)
    obj[...] = (unit * target).astype(obj.dtype)
