"""Starting probe and object: from files, from the CXI illumination, or from the data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..config import AlgorithmConfig
from ..errors import ConfigError, DataError
from .defocus import defocus_sign, drift_grid, drift_scores, neighbour_spacing
from .physics import Propagator

BEAM_EDGE_LEVEL = 0.03  # the autocorrelation's edge, as a fraction of its peak


def read_array_file(path: str, what: str) -> np.ndarray:
    """A complex array from .npy, .h5 (dataset ``what`` or the first complex one) or .csv."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"algorithm.{what}_guess file {path!r} not found; check the path")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(p)
        if suffix in (".h5", ".hdf5", ".cxi"):
            import h5py  # noqa: PLC0415

            with h5py.File(p, "r") as f:
                if what in f:
                    return f[what][()]
                for name in f:
                    if isinstance(f[name], h5py.Dataset) and np.iscomplexobj(f[name]):
                        return f[name][()]
            raise DataError(f"{path}: no dataset {what!r} and no complex dataset; "
                            f"store the {what} as /{what}")
        if suffix in (".csv", ".txt"):
            from ..io.export import read_ptychopy_csv  # noqa: PLC0415

            return read_ptychopy_csv(str(p))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the {what} guess ({exc})") from None
    raise ConfigError(f"algorithm.{what}_guess {path!r}: use a .npy, .h5 or ptychopy .csv file")


def add_modes(probe: np.ndarray, modes: int, rng: np.random.Generator) -> np.ndarray:
    """Extend a probe to ``modes`` modes: extra modes are weak, low-order variations."""
    probe = np.asarray(probe, dtype=np.complex128)
    if probe.shape[0] >= modes:
        return probe[:modes]
    m = probe.shape[-1]
    y, x = (np.mgrid[:m, :m] - m / 2) / (m / 4)
    extra = []
    shapes = [x, y, x * y, x * x - y * y, x * x + y * y - 1]
    for k in range(modes - probe.shape[0]):
        factor = shapes[k % len(shapes)] + 0.01 * rng.standard_normal((m, m))
        extra.append(0.1 * probe[0] * factor)
    return np.concatenate([probe, np.asarray(extra)], axis=0)


def beam_diameter_from_data(mean_amplitude: np.ndarray, positions_px: np.ndarray | None,
                            level: float = BEAM_EDGE_LEVEL) -> float:
    """The beam's diameter in pixels, estimated from the data (far field).

    The inverse FFT of the mean intensity is the mean autocorrelation of the exit waves,
    which reaches out to the beam's diameter: the radius at which its radial profile falls to
    ``level`` of its peak. A beam with strong phase curvature decorrelates sooner, so the
    estimate is at least twice the median distance between neighbouring positions (a scan
    needs its beams to overlap).
    """
    power = np.asarray(mean_amplitude, dtype=np.float64) ** 2
    m = power.shape[-1]
    corr = np.abs(np.fft.fftshift(np.fft.ifft2(power)))
    yy, xx = np.mgrid[:m, :m] - m // 2
    radius = np.rint(np.hypot(yy, xx)).astype(np.int64).ravel()
    profile = np.bincount(radius, corr.ravel()) / np.maximum(np.bincount(radius), 1)
    below = np.nonzero(profile < level * profile[0])[0]
    diameter = float(below[0]) if below.size else m / 2
    if positions_px is not None and len(positions_px) > 1:
        from scipy.spatial import cKDTree  # noqa: PLC0415

        distance, _ = cKDTree(positions_px).query(positions_px, k=2)
        diameter = max(diameter, 2.0 * float(np.median(distance[:, 1])))
    return float(min(diameter, 0.75 * m))


def probe_from_data(mean_amplitude: np.ndarray, propagator: Propagator,
                    diameter_px: float | None = None, sign: int = 1) -> np.ndarray:
    """Starting probe from the mean measured amplitude (engines' layout), centred.

    Far field: the inverse FFT of the mean amplitude with the quadratic (defocus) phase
    ``±π c q²`` that spreads an aperture of radius ``q_max`` to a beam of radius ``c·q_max``
    (stationary phase), for the nominal ``diameter_px`` (no phase, a beam in focus, when
    None); ``sign`` is the side of the focus (:mod:`.defocus`). Near field: the mean
    amplitude propagated back to the sample.
    """
    amp = np.asarray(mean_amplitude, dtype=np.complex128)
    m = amp.shape[-1]
    if propagator.kind == "farfield":
        if diameter_px:
            q = np.fft.fftfreq(m)
            q2 = q[:, None] ** 2 + q[None, :] ** 2
            power = np.abs(amp) ** 2
            q_max = np.sqrt(2.0 * (power * q2).sum() / max(power.sum(), 1e-30))
            c = (1 if sign >= 0 else -1) * 0.5 * diameter_px / max(q_max, 1e-6)
            amp = amp * np.exp(1j * np.pi * c * q2)
        return np.fft.fftshift(np.fft.ifft2(amp, norm="ortho"))
    be = propagator.backend
    return be.asnumpy(propagator.backward(be.asarray(amp[None, None], be.complex_dtype)))[0, 0]


def starts_from_data(cfg: AlgorithmConfig, illumination: np.ndarray | None,
                     propagation: str) -> bool:
    """Whether :func:`initial_probe` makes a far-field start from the data (no guess file,
    no stored illumination): then it reads the shadow drift (:mod:`.defocus`)."""
    return propagation == "farfield" and not cfg.probe_guess and illumination is None


def shadow_drift(cfg: AlgorithmConfig, illumination: np.ndarray | None, propagation: str,
                 amplitudes: np.ndarray, positions_px: np.ndarray, indices: np.ndarray,
                 mean_amplitude: np.ndarray, exchange: Any) -> np.ndarray | None:
    """The whole scan's :func:`.defocus.drift_scores` (collective: every rank calls it) where
    the start is made from the data, else None. ``amplitudes`` are this rank's frames,
    ``indices`` their rows of ``positions_px`` (the whole scan's)."""
    if not starts_from_data(cfg, illumination, propagation):
        return None
    frame = int(np.shape(mean_amplitude)[-1])
    kappas = drift_grid(frame, neighbour_spacing(positions_px))
    try:
        local = drift_scores(amplitudes, np.asarray(positions_px)[np.asarray(indices)],
                             mean_amplitude, kappas)
    except (ValueError, FloatingPointError, MemoryError):  # no answer rather than a hang
        local = np.zeros(3 * len(kappas) + 1)
    return np.asarray(exchange.allreduce(np.nan_to_num(local)), np.float64)


def initial_probe(cfg: AlgorithmConfig, frame: int, illumination: np.ndarray | None,
                  mean_amplitude: np.ndarray, photons: float, propagator: Propagator,
                  pixel_size_m: float, positions_px: np.ndarray | None = None,
                  drift: np.ndarray | None = None) -> np.ndarray:
    """The starting probe (K, M, M) scaled so that Σ|P|² equals the mean photons per frame.

    Without a guess or a stored illumination it is made from the data, for the nominal
    ``probe_diameter_m`` or, in the far field without one, for the beam diameter the data
    show (:func:`beam_diameter_from_data`, with ``positions_px`` of the whole scan), defocused
    to the side of the focus that ``drift`` (the summed :func:`.defocus.drift_scores` over
    :func:`.defocus.drift_grid`) shows; without it, to the positive side."""
    rng = np.random.default_rng(cfg.seed)
    if cfg.probe_guess:
        probe = np.asarray(read_array_file(cfg.probe_guess, "probe"))
        if probe.ndim == 2 and probe.shape[0] % frame == 0 and probe.shape[0] > frame:
            probe = probe.reshape(-1, frame, frame)  # ptychopy stacks modes vertically
        if probe.ndim == 2:
            probe = probe[None]
        if probe.ndim != 3 or probe.shape[-2:] != (frame, frame):
            raise ConfigError(f"algorithm.probe_guess {cfg.probe_guess!r} has shape "
                              f"{probe.shape}; expected ({frame}, {frame}) or (K, {frame}, "
                              f"{frame}) to match the frames")
    elif illumination is not None:
        probe = np.asarray(illumination)
        probe = probe[None] if probe.ndim == 2 else probe
        if probe.shape[-2:] != (frame, frame):
            probe = None
    else:
        probe = None
    if probe is None:
        if cfg.probe_diameter_m:
            diameter = cfg.probe_diameter_m / pixel_size_m
        elif propagator.kind == "farfield":
            diameter = beam_diameter_from_data(mean_amplitude, positions_px)
        else:
            diameter = None
        sign = 1
        if drift is not None and positions_px is not None:
            spacing = neighbour_spacing(positions_px)
            sign = defocus_sign(drift_grid(frame, spacing), drift, frame, spacing)
        probe = probe_from_data(mean_amplitude, propagator, diameter, sign)[None]
    probe = add_modes(probe, cfg.probe_modes, rng)
    power = float((np.abs(probe) ** 2).sum())
    if power > 0 and photons > 0:
        probe = probe * np.sqrt(photons / power)
    return probe.astype(np.complex128)


def initial_object(cfg: AlgorithmConfig, shape: tuple[int, int]) -> np.ndarray:
    """The starting global object: the guess file, or flat 1."""
    if cfg.object_guess:
        obj = np.asarray(read_array_file(cfg.object_guess, "object"))
        if obj.shape != tuple(shape):
            raise ConfigError(f"algorithm.object_guess {cfg.object_guess!r} has shape "
                              f"{obj.shape}; the scan needs {tuple(shape)}")
        return obj.astype(np.complex128)
    return np.ones(shape, dtype=np.complex128)


