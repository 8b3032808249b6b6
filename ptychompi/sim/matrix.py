"""A matrix of unlike far-field scans for robustness tests and benchmarks.

The engines were first tuned on :mod:`ptychompi.sim.simulate`'s scans (a band-limited Siemens
star, a defocused zone-plate probe, a jittered raster). This module makes scans that differ
in every respect, with its own forward model (numpy's FFT, the probe shifted by a Fourier
phase ramp): objects with sharp edges everywhere (not band-limited), weak phase objects,
strong absorbers; Fresnel-fringed pinhole probes, focused probes with many waves of
curvature, Gaussian beams; doses from 1e4 to 1e8 photons per frame; overlaps from 50 to
85 %; jittered rasters and Fermat spirals. Every case is seeded, and returns its truth.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..data.scan import ArrayScan, ScanGeometry
from ..model.geometry import farfield_pixel_size, wavelength_from_kev
from .simulate import make_object

OBJECTS = ("star", "texture", "photo", "weak_phase", "absorber")
PROBES = ("pinhole", "focused", "gaussian")
PATTERNS = ("raster", "spiral")
PAD_PX = 6  # smallest window corner in the truth object
ENERGY_KEV, DISTANCE_M, DETECTOR_PIXEL_M = 6.2, 1.5, 55e-6


@dataclass(frozen=True)
class Case:
    """One scan of the matrix (sizes in pixels of the reconstruction grid)."""

    object: str = "texture"
    probe: str = "pinhole"
    photons: float = 1e6
    overlap: float = 0.62  # linear overlap 1 - step / diameter
    pattern: str = "raster"
    grid: int = 20  # raster: grid x grid positions; spiral: about as many
    frame: int = 128
    diameter_px: float = 40.0  # the beam's nominal diameter
    fresnel: float = 5.0  # pinhole: Fresnel number of the aperture at the sample
    jitter: float = 0.1  # raster: uniform jitter as a fraction of the step
    seed: int = 0
    mirrored: bool = False  # the probe conj(P(-r)): the sample on the other side of the focus

    @property
    def name(self) -> str:
        dose = f"{self.photons:.0e}".replace("+0", "").replace("+", "")
        probe = f"pinhole{self.fresnel:g}" if self.probe == "pinhole" else self.probe
        return (f"{self.object}-{probe}-{dose}-ov{round(100 * self.overlap)}-"
                f"{self.pattern}{self.grid}x{self.frame}" + ("-mirrored" if self.mirrored else ""))

    @property
    def step_px(self) -> float:
        return self.diameter_px * (1.0 - self.overlap)

    def scaled(self, grid: int, frame: int) -> Case:
        """The same case at another size (beam and steps scaled with the frame)."""
        f = frame / self.frame
        return replace(self, grid=grid, frame=frame, diameter_px=self.diameter_px * f)


@dataclass
class MatrixScan:
    """A simulated scan with its truth; positions are top-left window corners in pixels."""

    case: Case
    frames: np.ndarray  # float32 (N, M, M), centred
    positions_px: np.ndarray
    object: np.ndarray  # complex128 (H, W)
    probe: np.ndarray  # complex128 (1, M, M)
    pixel_size_m: float
    wavelength_m: float

    def as_scan(self) -> ArrayScan:
        """The scan as the engines read it (geometry as a beamline file would give it)."""
        return ArrayScan(path=self.case.name, n_frames=len(self.frames),
                         frame_shape=self.frames.shape[1:], dtype=np.float32,
                         positions_m=self.positions_px * self.pixel_size_m, frames=self.frames,
                         geometry=ScanGeometry(self.wavelength_m, DISTANCE_M, DETECTOR_PIXEL_M))


# ---------------------------------------------------------------------------- objects
def _voronoi(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """Piecewise-constant random cells in [0, 1]: sharp edges everywhere."""
    h, w = shape
    seeds = rng.uniform(0, 1, size=(cells, 2)) * (h, w)
    values = rng.uniform(0, 1, size=cells)
    yy, xx = np.mgrid[:h, :w]
    best = np.full(shape, np.inf)
    out = np.zeros(shape)
    for (sy, sx), v in zip(seeds, values, strict=True):
        d = (yy - sy) ** 2 + (xx - sx) ** 2
        closer = d < best
        best[closer] = d[closer]
        out[closer] = v
    return out


def _fractal(shape: tuple[int, int], slope: float, rng: np.random.Generator) -> np.ndarray:
    """1/f^slope noise in [0, 1] (the texture of natural images)."""
    h, w = shape
    q = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    q[0, 0] = 1.0
    spec = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / q ** slope
    spec[0, 0] = 0
    field = np.fft.ifft2(spec).real
    return _unit(field)


def _unit(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, [0.5, 99.5])
    return np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)


def _shapes(shape: tuple[int, int], count: int, rng: np.random.Generator) -> np.ndarray:
    """Random sharp-edged discs, rectangles and bars in [0, 1]."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    out = np.zeros(shape)
    for _ in range(count):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        size = rng.uniform(0.02, 0.12) * min(h, w)
        kind = rng.integers(3)
        if kind == 0:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < size ** 2
        else:
            angle = rng.uniform(0, np.pi)
            u = (yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)
            v = -(yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
            aspect = 1.0 if kind == 1 else 0.2
            mask = (np.abs(u) < size) & (np.abs(v) < size * aspect)
        out[mask] = rng.uniform(0, 1)
    return out


def _texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A natural-image-like texture in [0, 1]: cells, shapes and 1/f noise, edges everywhere."""
    cells = max(8, shape[0] * shape[1] // 900)
    base = 0.5 * _voronoi(shape, cells, rng) + 0.3 * _fractal(shape, 1.0, rng)
    shapes = _shapes(shape, max(6, cells // 3), rng)
    return _unit(np.where(shapes > 0, 0.6 * shapes + 0.4 * base, base))


PHOTOS = Path(__file__).with_name("photos")  # camera (CC0) and astronaut (NASA, public domain)


def _photo(name: str, shape: tuple[int, int]) -> np.ndarray:
    """A grey-level photograph resampled (bicubic) to ``shape``, in [0, 1]."""
    from PIL import Image  # noqa: PLC0415 - only this object kind needs it

    with Image.open(PHOTOS / f"{name}.png") as image:
        grey = image.convert("F").resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    return _unit(np.asarray(grey, np.float64))


def make_matrix_object(kind: str, shape: tuple[int, int],
                       rng: np.random.Generator) -> np.ndarray:
    """Complex transmission of one of :data:`OBJECTS` (complex128)."""
    if kind == "star":
        return make_object(shape, rng).astype(np.complex128)
    if kind == "texture":  # amplitude and phase from different textures
        amp = 0.6 + 0.4 * _texture(shape, rng)
        phase = (np.pi / 2) * (2 * _texture(shape, rng) - 1)
    elif kind == "photo":  # natural photographs: amplitude one picture, phase another
        amp = 0.6 + 0.4 * _photo("camera", shape)
        phase = (np.pi / 2) * (2 * _photo("astronaut", shape) - 1)
    elif kind == "weak_phase":
        amp = 1.0 - 0.02 * _texture(shape, rng)
        phase = 0.15 * (2 * _texture(shape, rng) - 1)
    elif kind == "absorber":  # a dense sample: amplitude down to 0.1, phase with thickness
        thickness = _texture(shape, rng)
        amp = np.exp(np.log(0.1) * thickness)
        phase = -1.2 * thickness + 0.3 * (2 * _texture(shape, rng) - 1)
    else:
        raise ValueError(f"unknown object kind {kind!r}; use one of {OBJECTS}")
    return amp * np.exp(1j * phase)


# ---------------------------------------------------------------------------- probes
def _propagate(field: np.ndarray, lambda_z_px2: float) -> np.ndarray:
    """Fresnel (angular spectrum, paraxial) propagation over ``λz`` in pixel² units, on a
    grid padded twice so that the fringes do not wrap."""
    m = field.shape[-1]
    pad = np.zeros((2 * m, 2 * m), complex)
    pad[m // 2:m // 2 + m, m // 2:m // 2 + m] = field
    q = np.fft.fftfreq(2 * m)
    q2 = q[:, None] ** 2 + q[None, :] ** 2
    out = np.fft.ifft2(np.fft.fft2(pad) * np.exp(-1j * np.pi * lambda_z_px2 * q2))
    return out[m // 2:m // 2 + m, m // 2:m // 2 + m]


def make_matrix_probe(kind: str, frame: int, diameter_px: float, fresnel: float = 5.0,
                      photons: float = 1.0) -> np.ndarray:
    """One of :data:`PROBES` (complex128 (1, M, M)), centred, ``Σ|P|² = photons``.

    pinhole: a circular aperture of diameter D propagated to Fresnel number
    ``(D/2)² / (λz) = fresnel`` (Fresnel fringes, about a wave of curvature); focused: a
    zone-plate pupil (central stop, a little coma and astigmatism) defocused so that the beam
    is D wide, with several waves of phase curvature; gaussian: a Gaussian beam of FWHM D
    (intensity) whose curvature makes it about twice its waist (its spectral curvature has
    the opposite sign to the focused beam's).
    """
    m = int(frame)
    yy, xx = (np.mgrid[:m, :m] - m / 2).astype(np.float64)
    r = np.hypot(yy, xx)
    if kind == "pinhole":
        aperture = np.clip(diameter_px / 2 - r + 0.5, 0, 1).astype(complex)
        field = _propagate(aperture, (diameter_px / 2) ** 2 / fresnel)
    elif kind == "focused":
        q = np.fft.fftfreq(m)
        qr, qc = np.meshgrid(q, q, indexing="ij")
        qabs = np.hypot(qr, qc)
        qa = 0.3
        pupil = np.clip((qa - qabs) * m + 0.5, 0, 1) * np.clip((qabs - 0.3 * qa) * m + 0.5, 0, 1)
        c = np.pi * diameter_px / (2 * qa)  # beam edge at c qa / π = D / 2
        aberration = c * qabs ** 2 + 0.8 * (qr * qc) / qa ** 2 + 0.4 * (qc ** 3) / qa ** 3
        field = np.fft.fftshift(np.fft.ifft2(pupil * np.exp(1j * aberration)))
    elif kind == "gaussian":
        sigma = diameter_px / 2.3548
        field = np.exp(-r ** 2 / (4 * sigma ** 2)) * np.exp(1j * np.pi * r ** 2 / (8 * m))
    else:
        raise ValueError(f"unknown probe kind {kind!r}; use one of {PROBES}")
    field = field * np.sqrt(photons / np.sum(np.abs(field) ** 2))
    return field[None]


# ---------------------------------------------------------------------------- scans
def mirrored(probe: np.ndarray) -> np.ndarray:
    """``conj(P(-r))`` about the frame's centre: the same far-field intensity, the defocus
    (phase curvature) of the other sign."""
    return np.conj(np.roll(probe[..., ::-1, ::-1], (1, 1), (-2, -1)))


def scan_positions(case: Case, rng: np.random.Generator) -> np.ndarray:
    """Top-left corners (N, 2) in pixels: a jittered raster or a Fermat spiral."""
    step = case.step_px
    if case.pattern == "raster":
        r, c = np.meshgrid(np.arange(case.grid), np.arange(case.grid), indexing="ij")
        pos = np.stack([r.ravel(), c.ravel()], 1).astype(np.float64) * step
        pos += rng.uniform(-case.jitter, case.jitter, pos.shape) * step
    elif case.pattern == "spiral":  # same density: one position per step² of area
        n = np.arange(case.grid * case.grid)
        radius = step * np.sqrt(n / np.pi)
        theta = n * np.deg2rad(137.508)
        pos = np.stack([radius * np.sin(theta), radius * np.cos(theta)], 1)
    else:
        raise ValueError(f"unknown pattern {case.pattern!r}; use one of {PATTERNS}")
    return pos - pos.min(axis=0) + PAD_PX


def far_field(obj: np.ndarray, probe: np.ndarray, positions_px: np.ndarray) -> np.ndarray:
    """Noiseless centred intensities (N, M, M): ``|FFT(P shifted · O window)|²``, the
    probe shifted by the sub-pixel remainder through a Fourier phase ramp."""
    m = probe.shape[-1]
    q = np.fft.fftfreq(m)
    spectrum = np.fft.fft2(probe[0])
    out = np.empty((len(positions_px), m, m), np.float32)
    for j, (r, c) in enumerate(positions_px):
        r0, c0 = int(np.floor(r)), int(np.floor(c))
        ramp = np.exp(-2j * np.pi * ((r - r0) * q[:, None] + (c - c0) * q[None, :]))
        shifted = np.fft.ifft2(spectrum * ramp)
        wave = np.fft.fft2(shifted * obj[r0:r0 + m, c0:c0 + m], norm="ortho")
        out[j] = np.fft.fftshift(np.abs(wave) ** 2)
    return out


def make_scan(case: Case) -> MatrixScan:
    """Simulate ``case`` (seeded): frames with Poisson noise, and the truth."""
    rng = np.random.default_rng(case.seed)
    positions = scan_positions(case, rng)
    top = np.floor(positions).astype(int)
    shape = tuple(int(v) for v in top.max(axis=0) + case.frame + PAD_PX)
    obj = make_matrix_object(case.object, shape, rng)
    probe = make_matrix_probe(case.probe, case.frame, case.diameter_px, case.fresnel,
                              case.photons)
    if case.mirrored:
        probe = mirrored(probe)
    frames = rng.poisson(far_field(obj, probe, positions)).astype(np.float32)
    wavelength = wavelength_from_kev(ENERGY_KEV)
    pixel = farfield_pixel_size(wavelength, DISTANCE_M, case.frame, DETECTOR_PIXEL_M)
    return MatrixScan(case, frames, positions, obj, probe, pixel, wavelength)


def matrix(grid: int = 20, frame: int = 128) -> list[Case]:
    """The full matrix at a size: every object × probe kind at 1e6 photons, every probe kind
    at 1e4 and 1e8, overlaps 50 and 85 %, Fermat spirals, Fresnel numbers 2 and 10, and the
    focused and Gaussian beams mirrored (the sample on the other side of the focus)."""
    base = Case(grid=20, frame=128)
    cases = [replace(base, object=o, probe=p) for o in OBJECTS for p in PROBES]
    cases += [replace(base, probe=p, photons=d) for p in PROBES for d in (1e4, 1e8)]
    cases += [replace(base, overlap=v) for v in (0.5, 0.85)]
    cases += [replace(base, pattern="spiral", probe=p) for p in PROBES]
    cases += [replace(base, fresnel=f) for f in (2.0, 10.0)]
    cases += [replace(base, probe=p, mirrored=True) for p in ("focused", "gaussian")]
    return [c.scaled(grid, frame) for c in cases]
