"""Geometry in SI units: wavelength, pixel sizes, position conversion, object shape."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

PLANCK_EV_S = 4.135667696e-15
SPEED_OF_LIGHT = 299_792_458.0
HC_KEV_M = PLANCK_EV_S * SPEED_OF_LIGHT / 1e3  # keV * m
ELECTRON_VOLT_J = 1.602176634e-19
#: metres per length unit, by the unit's name in lower case
LENGTH_TO_M = {"m": 1.0, "cm": 1e-2, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "μm": 1e-6,
               "micron": 1e-6, "microns": 1e-6, "nm": 1e-9}


def length_scale(unit: str | None) -> float | None:
    """Metres per ``unit`` (``"mm"``, ``" um "``, ...); ``None`` for no or an unknown unit."""
    return LENGTH_TO_M.get(unit.strip().lower()) if unit else None


def wavelength_from_kev(energy_kev: float) -> float:
    """Photon wavelength in metres for an energy in keV."""
    if energy_kev <= 0:
        raise ConfigError(f"photon energy {energy_kev} keV must be positive")
    return HC_KEV_M / energy_kev


def kev_from_wavelength(wavelength_m: float) -> float:
    """Photon energy in keV for a wavelength in metres."""
    return HC_KEV_M / wavelength_m


def kev_from_joules(energy_j: float) -> float:
    return energy_j / ELECTRON_VOLT_J / 1e3


def joules_from_kev(energy_kev: float) -> float:
    return energy_kev * 1e3 * ELECTRON_VOLT_J


def farfield_pixel_size(wavelength_m: float, distance_m: float, frame_px: int,
                        detector_pixel_m: float) -> float:
    """Object pixel size ``λ z / (M · p)`` of a far-field set-up."""
    return wavelength_m * distance_m / (frame_px * detector_pixel_m)


@dataclass(frozen=True)
class NearField:
    """Fresnel scaling of a cone-beam near-field set-up to an equivalent parallel beam."""

    magnification: float
    pixel_size_m: float  # effective sample-plane pixel
    distance_m: float  # effective propagation distance


def fresnel_scaling(detector_pixel_m: float, sample_detector_m: float,
                    focus_to_sample_m: float | None) -> NearField:
    """Magnification ``M = (z01 + z12)/z01``, pixel ``p / M`` and distance ``z12 / M``.

    Without a focus-to-sample distance the beam is parallel: ``M = 1``.
    """
    if focus_to_sample_m is None:
        return NearField(1.0, detector_pixel_m, sample_detector_m)
    if focus_to_sample_m <= 0:
        raise ConfigError("geometry.focus_to_sample_m must be positive for a cone beam")
    mag = (focus_to_sample_m + sample_detector_m) / focus_to_sample_m
    return NearField(mag, detector_pixel_m / mag, sample_detector_m / mag)


def positions_to_pixels(positions_m: np.ndarray, pixel_size_m: float, *,
                        flip: tuple[bool, bool] = (False, False), transpose: bool = False,
                        margin_px: int = 0) -> np.ndarray:
    """Positions in metres ``(row, col)`` to top-left window corners in object pixels.

    Applies the optional transpose and flips, divides by the pixel size and shifts so that the
    smallest corner sits at ``margin_px``.
    """
    pos = np.asarray(positions_m, dtype=np.float64).reshape(-1, 2).copy()
    if transpose:
        pos = pos[:, ::-1].copy()
    for axis in (0, 1):
        if flip[axis]:
            pos[:, axis] = -pos[:, axis]
    pix = pos / pixel_size_m
    return pix - pix.min(axis=0) + margin_px


def object_shape(positions_px: np.ndarray, frame_shape: tuple[int, int],
                 margin_px: int = 0) -> tuple[int, int]:
    """Global object shape holding every window plus the margin on each side."""
    top = np.floor(np.asarray(positions_px)).max(axis=0).astype(int)
    return (int(top[0]) + frame_shape[0] + 1 + margin_px,
            int(top[1]) + frame_shape[1] + 1 + margin_px)


def overlap_ratio(positions_px: np.ndarray, probe_diameter_px: float) -> float:
    """Linear overlap 1 - (median nearest-neighbour step) / probe diameter."""
    pos = np.asarray(positions_px, dtype=np.float64)
    if len(pos) < 2 or probe_diameter_px <= 0:
        return 0.0
    d = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1)) if len(pos) <= 4000 else None
    if d is None:
        sel = pos[:: max(1, len(pos) // 2000)]
        d = np.sqrt(((sel[:, None, :] - pos[None, :, :]) ** 2).sum(-1))
        d[d == 0] = np.inf
    else:
        np.fill_diagonal(d, np.inf)
    step = float(np.median(d.min(axis=1)))
    return 1.0 - step / probe_diameter_px
