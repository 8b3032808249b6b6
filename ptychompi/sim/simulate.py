"""Synthetic far-field ptychography scans with ground truth (no downloads).

The object is procedural: a 36-spoke Siemens star in amplitude (0.44..1) and phase (-0.7 rad
in the spokes), soft discs (amplitude down to 0.3), and a smooth phase landscape of about
+/-0.5 rad, band-limited to 0.2 cycles/pixel. The probe is a
defocused zone-plate-like beam: a circular pupil with a central stop, a quadratic (defocus)
phase and a little astigmatism, giving a real-space spot about ``probe_diameter_px`` wide.

The forward model follows DESIGN.md section 4 and is written here independently of the
engines: window at ``floor(pos)``, sub-pixel remainder as a Fourier phase-ramp shift of the
probe, ``Psi = fft2(P_shift * O_window, norm="ortho")``, ``I = sum_k |Psi_k|^2``, centred
with ``fftshift``, then Poisson noise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft as sfft
from numpy.lib.stride_tricks import sliding_window_view

from ..data.scan import ArrayScan, ScanGeometry
from ..errors import ConfigError
from ..model.geometry import farfield_pixel_size, joules_from_kev, object_shape, wavelength_from_kev

PAD_PX = 4  # smallest window corner in the truth object, in both axes
_BATCH = 64  # frames per FFT batch
SMOOTH_PHASE_RAD = 0.5  # peak of the smooth phase landscape
CONTRAST = 1.4  # amplitude dips down to 0.3, star phase -0.7 rad
# The exit wave's spectrum is the object's widened by the probe's pupil (0.15 cycles/pixel):
# an object band-limited to ~0.2 cycles/pixel keeps it inside the detector (Nyquist 0.5), so
# the FFT forward model does not wrap scattering around the frame edge (aliasing that no real
# detector records).
OBJECT_BANDWIDTH: float | None = 0.2


@dataclass
class Simulation:
    """A simulated scan and its ground truth (positions are top-left window corners)."""

    frames: np.ndarray  # float32 (N, M, M), centred (zero frequency in the middle)
    positions_px: np.ndarray  # float64 (N, 2) row, col in truth-object pixels
    positions_m: np.ndarray  # float64 (N, 2) = positions_px * pixel_size_m
    object: np.ndarray  # complex64 (H, W)
    probe: np.ndarray  # complex64 (K, M, M)
    pixel_size_m: float
    wavelength_m: float
    distance_m: float
    detector_pixel_m: float
    energy_kev: float
    photons: float = 0.0

    def as_scan(self, positions_px: np.ndarray | None = None) -> ArrayScan:
        """The scan in memory, as the engines read it; ``positions_px``: other positions
        than the true ones (e.g. with errors), in pixels."""
        px = self.positions_px if positions_px is None else np.asarray(positions_px)
        return ArrayScan(path="sim", n_frames=len(self.frames),
                         frame_shape=self.frames.shape[1:], dtype=np.dtype(np.float32),
                         positions_m=px * self.pixel_size_m, frames=self.frames,
                         geometry=ScanGeometry(self.wavelength_m, self.distance_m,
                                               self.detector_pixel_m))


def raster_positions(grid: int, step_px: float, jitter_px: float,
                     rng: np.random.Generator, pad_px: int = PAD_PX) -> np.ndarray:
    """Row-major ``grid x grid`` raster with uniform jitter, shifted so the minimum is ``pad``."""
    r, c = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    pos = np.stack([r.ravel(), c.ravel()], axis=1).astype(np.float64) * step_px
    if jitter_px > 0:
        pos += rng.uniform(-jitter_px, jitter_px, size=pos.shape)
    return pos - pos.min(axis=0) + pad_px


def _soft(d: np.ndarray, width: float = 1.0) -> np.ndarray:
    """Anti-aliased step: 0 for d << 0, 1 for d >> 0, linear over ``width`` pixels."""
    return np.clip(d / width + 0.5, 0.0, 1.0)


def band_limit(obj: np.ndarray, bandwidth: float) -> np.ndarray:
    """``obj`` low-passed by the super-Gaussian ``exp(-(|q| / bandwidth)^4)`` (cycles/pixel)."""
    q = np.hypot(sfft.fftfreq(obj.shape[0])[:, None], sfft.fftfreq(obj.shape[1])[None, :])
    return sfft.ifft2(sfft.fft2(obj) * np.exp(-((q / bandwidth) ** 4)), workers=-1)


def make_object(shape: tuple[int, int], rng: np.random.Generator, *,
                smooth_rad: float = SMOOTH_PHASE_RAD, contrast: float = CONTRAST,
                bandwidth: float | None = OBJECT_BANDWIDTH) -> np.ndarray:
    """Procedural complex transmission (complex64) of the given shape.

    ``smooth_rad`` is the peak of the smooth phase landscape, ``contrast`` scales the
    amplitude dips and the phase of the star and discs, ``bandwidth`` (cycles/pixel, None for
    none) band-limits the result (amplitudes stay at most 1).
    """
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    y, x = yy - cy, xx - cx
    r = np.hypot(y, x)
    theta = np.arctan2(y, x)
    size = float(min(h, w))

    # Siemens star: 36 spokes, anti-aliased edges (distance to an edge ~ cos(n θ) r / n).
    n_spokes = 36
    radius = 0.42 * size
    spoke = _soft(np.cos(n_spokes * theta) * np.maximum(r, 1.0) / n_spokes)
    inner = n_spokes / np.pi  # below this radius the spokes are narrower than a pixel
    spoke = np.where(r < inner, 0.5, spoke)
    star = spoke * _soft(radius - r, 2.0)

    amp = 1.0 - 0.4 * star
    phase = -0.5 * star

    # Smooth phase landscape: Gaussians plus a slow sinusoid, scaled to about +/- 1 rad.
    smooth = 0.3 * np.sin(2 * np.pi * (1.5 * xx / w + 1.0 * yy / h) + rng.uniform(0, 2 * np.pi))
    for _ in range(8):
        gy, gx = rng.uniform(0, h), rng.uniform(0, w)
        sig = rng.uniform(0.06, 0.2) * size
        smooth += rng.uniform(-1, 1) * np.exp(-((yy - gy) ** 2 + (xx - gx) ** 2) / (2 * sig**2))
    smooth *= smooth_rad / max(float(np.abs(smooth).max()), 1e-12)

    # Soft discs scattered over the field (amplitude dips and phase bumps).
    for _ in range(14):
        gy, gx = rng.uniform(0, h), rng.uniform(0, w)
        rad = rng.uniform(0.02, 0.07) * size
        disc = _soft(rad - np.hypot(yy - gy, xx - gx), 3.0)
        amp = amp * (1.0 - rng.uniform(0.05, 0.15) * disc)
        phase = phase + rng.uniform(0.2, 0.6) * disc

    amp = 1.0 - contrast * (1.0 - np.clip(amp, 0.5, 1.0))
    obj = amp * np.exp(1j * (contrast * phase + smooth))
    if bandwidth is not None:  # then no gain: the filter's overshoot clipped at |O| = 1
        obj = band_limit(obj, bandwidth)
        obj /= np.maximum(np.abs(obj), 1.0)
    return obj.astype(np.complex64)


def make_probe(frame: int, diameter_px: float, modes: int = 1,
               photons: float = 1.0) -> np.ndarray:
    """Defocused zone-plate-like probe (complex64, (K, M, M)) centred in the frame.

    A pupil of radius ``qa`` (cycles/pixel) with a central stop and defocus phase
    ``c |q|^2``; geometric optics puts the beam edge at ``c qa / pi`` pixels, so
    ``c = pi D / (2 qa)`` gives a spot of diameter ``D``. Extra modes are Hermite-like pupil
    functions (q_c, q_r, q_r q_c, ...), Gram-Schmidt orthogonalised, with power weights
    ``3**-k`` (two modes: 75 % and 25 %). ``sum_k sum |P_k|^2 = photons``.
    """
    m = int(frame)
    q = sfft.fftfreq(m)
    qr, qc = np.meshgrid(q, q, indexing="ij")
    qabs = np.hypot(qr, qc)
    qa = 0.15
    pupil = _soft((qa - qabs) * m) * _soft((qabs - 0.25 * qa) * m)
    c = np.pi * diameter_px / (2 * qa)
    aberration = c * qabs**2 + 1.0 * (qr**2 - qc**2) / qa**2 + 0.5 * (qr**3) / qa**3
    base = pupil * np.exp(1j * aberration)

    shapes = [np.ones_like(qr), qc / qa, qr / qa, qr * qc / qa**2, (qc**2 - qr**2) / qa**2]
    fields: list[np.ndarray] = []
    for k in range(modes):
        f = base * (shapes[k] if k < len(shapes) else (qr / qa) ** (k - 3) * (qc / qa))
        for g in fields:  # Gram-Schmidt: exactly orthogonal modes
            f = f - np.vdot(g, f) / np.vdot(g, g) * g
        fields.append(f)
    weights = 3.0 ** -np.arange(modes)
    weights = weights / weights.sum()
    probe = np.empty((modes, m, m), np.complex64)
    for k, f in enumerate(fields):
        p = sfft.fftshift(sfft.ifft2(f, norm="ortho"))
        p *= np.sqrt(photons * weights[k] / np.sum(np.abs(p) ** 2))
        probe[k] = p
    return probe


def forward(obj: np.ndarray, probe: np.ndarray, positions_px: np.ndarray) -> np.ndarray:
    """Noiseless centred intensities float32 (N, M, M) of probe (K, M, M) over ``obj``."""
    k, m, _ = probe.shape
    pos = np.asarray(positions_px, dtype=np.float64)
    corner = np.floor(pos).astype(np.int64)
    frac = pos - corner
    windows = sliding_window_view(obj, (m, m))
    q = sfft.fftfreq(m)
    pf = sfft.fft2(probe.astype(np.complex64), workers=-1)
    out = np.empty((len(pos), m, m), np.float32)
    for a in range(0, len(pos), _BATCH):
        b = min(a + _BATCH, len(pos))
        ramp_r = np.exp(-2j * np.pi * frac[a:b, 0, None] * q[None, :]).astype(np.complex64)
        ramp_c = np.exp(-2j * np.pi * frac[a:b, 1, None] * q[None, :]).astype(np.complex64)
        ramp = ramp_r[:, :, None] * ramp_c[:, None, :]
        p_shift = sfft.ifft2(pf[None] * ramp[:, None], workers=-1)  # (B, K, M, M)
        win = windows[corner[a:b, 0], corner[a:b, 1]]  # (B, M, M) copy
        psi = sfft.fft2(p_shift * win[:, None], norm="ortho", workers=-1, overwrite_x=True)
        inten = (psi.real**2 + psi.imag**2).sum(axis=1)
        out[a:b] = sfft.fftshift(inten, axes=(-2, -1))
    return out


def simulate(frame: int = 128, grid: int = 30, step_px: float = 15.0,
             probe_diameter_px: float = 40.0, photons: float = 1e6, seed: int = 0,
             probe_modes: int = 1, jitter_px: float | None = None, energy_kev: float = 8.8,
             distance_m: float = 2.0, detector_pixel_m: float = 75e-6,
             poisson: bool = True, object_options: dict[str, Any] | None = None
             ) -> Simulation:
    """Simulate a jittered raster scan (row-major, ``grid x grid``) with ground truth.

    ``object_options`` go to :func:`make_object` (``smooth_rad``, ``contrast``, ``bandwidth``).
    """
    if frame < 8:
        raise ConfigError(f"simulate: frame {frame} is too small; use at least 8 pixels")
    if grid < 1 or step_px <= 0:
        raise ConfigError("simulate: grid must be >= 1 and step_px positive")
    if not 0 < probe_diameter_px < frame:
        raise ConfigError(f"simulate: probe_diameter_px {probe_diameter_px} must be positive "
                          f"and below the frame size {frame}")
    if photons <= 0 or probe_modes < 1:
        raise ConfigError("simulate: photons must be positive and probe_modes >= 1")
    jitter = 0.1 * step_px if jitter_px is None else float(jitter_px)
    rng = np.random.default_rng(seed)

    positions_px = raster_positions(grid, step_px, jitter, rng)
    shape = object_shape(positions_px, (frame, frame), margin_px=PAD_PX)
    obj = make_object(shape, rng, **(object_options or {}))
    probe = make_probe(frame, probe_diameter_px, probe_modes, photons)
    frames = forward(obj, probe, positions_px)
    if poisson:
        frames = rng.poisson(frames).astype(np.float32)

    wavelength = wavelength_from_kev(energy_kev)
    pixel = farfield_pixel_size(wavelength, distance_m, frame, detector_pixel_m)
    return Simulation(frames=frames, positions_px=positions_px,
                      positions_m=positions_px * pixel, object=obj, probe=probe,
                      pixel_size_m=pixel, wavelength_m=wavelength, distance_m=distance_m,
                      detector_pixel_m=detector_pixel_m, energy_kev=energy_kev,
                      photons=float(photons))


def truth_path(out: str | os.PathLike) -> str:
    """``scan.cxi`` -> ``scan.truth.h5`` (the ground-truth file beside a simulated scan)."""
    p = str(out)
    return (p[:-4] if p.endswith(".cxi") else p) + ".truth.h5"


def simulate_to_files(out: str | os.PathLike, **kwargs: Any) -> list[str]:
    """Simulate (``kwargs`` as :func:`simulate`) and write ``out`` (CXI) and its truth file.

    The CXI file holds frames (integers when Poisson), positions, energy, distance and pixel
    size, but no illumination: a reconstruction must not start from the true probe. The truth
    file holds ``object``, ``probe``, ``positions_px``, ``positions_m``, ``pixel_size_m``.
    """
    from ..io.atomic import atomic_h5  # noqa: PLC0415
    from ..io.cxi import write_cxi  # noqa: PLC0415 - io imports h5py plugins lazily

    sim = simulate(**kwargs)
    frames = sim.frames
    if np.all(frames == np.rint(frames)) and frames.max(initial=0) < 2**31:
        frames = frames.astype(np.int32)
    cxi = write_cxi(out, frames, sim.positions_m, energy_j=joules_from_kev(sim.energy_kev),
                    wavelength_m=sim.wavelength_m, distance_m=sim.distance_m,
                    pixel_size_m=sim.detector_pixel_m, compression="gzip")

    truth = truth_path(out)
    with atomic_h5(truth) as f:
        f.create_dataset("object", data=sim.object, compression="gzip")
        f.create_dataset("probe", data=sim.probe)
        f.create_dataset("positions_px", data=sim.positions_px)
        f.create_dataset("positions_m", data=sim.positions_m)
        f.create_dataset("pixel_size_m", data=sim.pixel_size_m)
        for key in ("wavelength_m", "distance_m", "detector_pixel_m", "energy_kev",
                    "photons"):
            f.attrs[key] = getattr(sim, key)
        for key, val in kwargs.items():
            if val is not None and isinstance(val, int | float | bool | str):
                f.attrs[f"simulate.{key}"] = val
        f.attrs["scan_file"] = os.path.basename(cxi)
    return [cxi, truth]
