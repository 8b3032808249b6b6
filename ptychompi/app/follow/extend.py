"""Where light has not fallen yet: a new row's part of the object continues the lit object.

While a scan is written, the object outside the lit area still holds the starting guess (flat
1), while the lit area has settled at its own level and phase (blind ptychography leaves the
object's scale and phase free; they drift as it converges). A row arriving there would start
from the guess: a step in amplitude and phase at the lit area's edge, which the engines iron
out only slowly (a low-frequency error, the slowest mode to converge), and whose first misfits
pull the probe. So at each rebuild the pixels lit weakly or not at all take a smooth
continuation of the lit object: the illumination-weighted object blurred by a Gaussian over
the blurred illumination (a normalised convolution), which tends to the lit object's weighted
mean far from it, blended with their own values in proportion to their illumination
(while rows are still to come: once the scan has ended, its weakly lit fringe keeps what was
learnt there).
A function of the assembled object, the probe and the positions in: the same on every rank.
"""

from __future__ import annotations

import numpy as np

LEVEL = 0.1  # pixels lit at this fraction of the most lit one or more keep their values
EPS = 1e-3  # far from the lit area the continuation tends to the lit object's mean


def illumination(power: np.ndarray, positions_px: np.ndarray,
                 shape: tuple[int, int]) -> np.ndarray:
    """Σ_j |P|² of the windows at ``positions_px`` (corners: their whole pixels, as the
    engines place them) on a ``shape`` grid."""
    weight = np.zeros(shape, np.float64)
    m0, m1 = power.shape
    for r, c in np.floor(positions_px).astype(np.int64):
        r, c = min(max(r, 0), shape[0] - m0), min(max(c, 0), shape[1] - m1)
        weight[r:r + m0, c:c + m1] += power
    return weight


def blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """``a`` convolved with a Gaussian of ``sigma`` pixels (zero outside; FFT, padded)."""
    pad = int(np.ceil(3 * sigma))
    shape = (a.shape[0] + 2 * pad, a.shape[1] + 2 * pad)
    q0 = np.fft.fftfreq(shape[0])[:, None]
    q1 = np.fft.rfftfreq(shape[1])[None, :] if not np.iscomplexobj(a) else \
        np.fft.fftfreq(shape[1])[None, :]
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (q0 ** 2 + q1 ** 2))
    if np.iscomplexobj(a):
        out = np.fft.ifft2(np.fft.fft2(a, s=shape) * kernel)
    else:
        out = np.fft.irfft2(np.fft.rfft2(a, s=shape) * kernel, s=shape)
    return out[:a.shape[0], :a.shape[1]]


def continued(obj: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """``obj`` (complex, NaN where nothing is known) with its pixels lit below ``LEVEL`` of
    the most lit blended towards the smooth continuation of the lit object (see the module
    docstring); ``weight``: each pixel's illumination."""
    known = np.isfinite(obj)
    w = np.where(known, weight, 0.0)
    values = np.where(known, obj, 0)
    top = float(w.max()) if w.size else 0.0
    if top <= 0:
        return obj
    num, den = blur(values * w, sigma), blur(w, sigma)
    eps = EPS * float(den.max())
    mean = np.sum(values * w) / np.sum(w)
    fill = (num + eps * mean) / (den + eps)
    a = np.minimum(w / (LEVEL * top), 1.0)
    return np.where(a >= 1, values, a * values + (1 - a) * fill)
