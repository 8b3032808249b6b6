"""Forward model: windows, sub-pixel probe shifts, propagators, modulus projection, errors.

Every function takes the array module (via a :class:`~ptychompi.backend.Backend`) explicitly and
works on batches: arrays of exit waves have shape (B, K, M, M) (positions, probe modes, frame).
Measured data enter as *amplitudes* ``A = sqrt(I)`` with invalid (masked) pixels encoded as
``-1``; far-field amplitudes are ``ifftshift``-ed once at load so no loop ever shifts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .backend import Backend

EPS = 1e-9


# --------------------------------------------------------------------------- windows
def window_index(rows: np.ndarray, cols: np.ndarray, frame: int, width: int) -> np.ndarray:
    """Flat indices (B, M, M) of the M x M windows with top-left corners (rows, cols)."""
    ar = np.arange(frame, dtype=np.int64)
    r = np.asarray(rows, np.int64)[:, None, None] + ar[None, :, None]
    c = np.asarray(cols, np.int64)[:, None, None] + ar[None, None, :]
    return r * width + c


def _corners(index: Any, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left (rows, cols) of windows given by their flat indices."""
    return np.divmod(np.asarray(index[:, 0, 0]), width)


def extract(backend: Backend, obj: Any, index: Any) -> Any:
    """Windows (B, M, M) of a 2-D object at flat ``index`` (from :func:`window_index`).

    CPU: a gather through a strided window view (measured 1.5x faster than flat fancy
    indexing for 900 x 128²); GPU: one fancy-index gather.
    """
    if backend.is_gpu:
        return obj.reshape(-1)[index]
    rows, cols = _corners(index, obj.shape[1])
    m0, m1 = index.shape[-2:]
    return np.lib.stride_tricks.sliding_window_view(obj, (m0, m1))[rows, cols]


def scatter_add(backend: Backend, target: Any, values: Any, rows: np.ndarray,
                cols: np.ndarray) -> None:
    """``target[r:r+M, c:c+M] += values[j]`` for every j (windows may overlap).

    GPU: one CUDA kernel with atomic adds (``kernels/scatter_add.cu``). CPU: slice adds, which
    measure 3-4x faster than ``np.bincount`` or a sparse matrix product for 900 x 128^2.
    """
    if backend.is_gpu:
        from .kernels import scatter_add_gpu  # noqa: PLC0415

        scatter_add_gpu(target, values, rows, cols)
        return
    m0, m1 = values.shape[-2:]
    for j in range(len(rows)):
        r, c = int(rows[j]), int(cols[j])
        target[r:r + m0, c:c + m1] += values[j]


def scatter_add_disjoint(backend: Backend, target: Any, values: Any, index: Any) -> None:
    """Scatter-add of windows that do not overlap (ePIE batches).

    GPU: one vectorised fancy-index add (no duplicates, so no atomics needed). CPU: slice
    adds, several times faster than a fancy-index add for the few windows of a batch.
    """
    if backend.is_gpu:
        flat = target.reshape(-1)
        flat[index] += values
        return
    rows, cols = _corners(index, target.shape[1])
    scatter_add(backend, target, values, rows, cols)


# --------------------------------------------------------------------------- sub-pixel
def subpixel_ramps(backend: Backend, fractions: np.ndarray, frame: int) -> tuple[Any, Any]:
    """1-D Fourier phase ramps (B, M) per axis that shift a frame by ``+fractions``."""
    xp = backend.xp
    q = xp.asarray(np.fft.fftfreq(frame), dtype=backend.real_dtype)
    f = xp.asarray(fractions, dtype=backend.real_dtype)
    ramp_r = xp.exp((-2j * np.pi) * f[:, 0:1] * q[None, :]).astype(backend.complex_dtype)
    ramp_c = xp.exp((-2j * np.pi) * f[:, 1:2] * q[None, :]).astype(backend.complex_dtype)
    return ramp_r, ramp_c


def shifted_probes(backend: Backend, probe_ft: Any, ramps: tuple[Any, Any] | None,
                   probe: Any) -> Any:
    """Probes (B, K, M, M) shifted by each position's sub-pixel remainder.

    ``probe_ft`` is ``fft2(probe)`` (K, M, M); without ramps the probe is broadcast (1, K, M, M).
    """
    if ramps is None:
        return probe[None]
    rr, rc = ramps
    spec = probe_ft[None] * rr[:, None, :, None] * rc[:, None, None, :]
    return backend.ifft2(spec, overwrite=True)


def unshift_sum(backend: Backend, values: Any, ramps: tuple[Any, Any] | None) -> Any:
    """Σ_j shift_{-f_j}(values_j) over the batch axis: (B, K, M, M) -> (K, M, M).

    Linear, so the back-shift costs one forward FFT per position and one inverse in total.
    The sum is taken in double precision (complex128 result), so that it does not depend on
    how positions are grouped into batches, tiles or threads.
    """
    if ramps is None:
        return values.sum(axis=0, dtype=np.complex128)
    rr, rc = ramps
    spec = backend.fft2(values)
    spec *= rr.conj()[:, None, :, None]
    spec *= rc.conj()[:, None, None, :]
    return backend.ifft2(spec.sum(axis=0, dtype=np.complex128), overwrite=True)


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
        spec = self.backend.fft2(psi)
        spec *= self.transfer
        return self.backend.ifft2(spec, overwrite=True)

    def backward(self, wave: Any, overwrite: bool = False) -> Any:
        if self.kind == "farfield":
            return self.backend.ifft2(wave, overwrite=overwrite)
        spec = self.backend.fft2(wave, overwrite=overwrite)
        spec *= self.transfer.conj()
        return self.backend.ifft2(spec, overwrite=True)

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


def modulus_project(backend: Backend, wave: Any, amplitude: Any, *,
                    in_place: bool = True) -> tuple[Any, float]:
    """Replace the modulus of ``wave`` (B, K, M, M) by the measured ``amplitude`` (B, M, M).

    Masked pixels (amplitude < 0) keep their model value. Returns the projected wave and the
    batch's Fourier error numerator ``Σ_valid (sqrt(Î) - A)²``. The CPU path works in place
    on few temporaries (measured 1.8x faster than the plain expression for 400 x 128²).
    """
    if backend.is_gpu:
        from .kernels import modulus_project_gpu  # noqa: PLC0415

        return modulus_project_gpu(wave, amplitude, in_place=in_place)
    xp = backend.xp
    model = model_amplitude(backend, wave)
    valid, meas, err = _deviation(backend, model, amplitude)
    model += EPS
    xp.divide(meas, model, out=model)  # the factor A / |Ψ|
    xp.copyto(model, 1, where=~valid)
    out = wave if in_place else wave.copy()
    out *= model[:, None]
    return out, err


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
