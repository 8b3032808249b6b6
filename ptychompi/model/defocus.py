"""Which side of the focus the sample is on, from how the data's shadow image drifts.

A defocused beam projects a shadow of the sample into the bright centre of every far-field
pattern. With the probe's spectrum ``A(k)·exp(iπ c k²)`` (k in cycles per pixel), stationary
phase puts the sample point ``p − c·k`` at detector frequency k, so when the sample moves by
Δ between two positions the shadow moves by ``Δ / c``. The sign of the drift between
neighbouring patterns is the sign of the defocus, which the mean pattern cannot show (both
signs give the same far-field intensity). A beam whose patterns show no drift (an aperture
near the sample, a beam at its waist) gives no answer.

The scores are sums over pairs of frames, so ranks add theirs (one ``allreduce``) before
:func:`defocus_sign` reads them; a sign is taken only where the pairs agree on it (the mean
preference several standard errors from zero).
"""

from __future__ import annotations

import numpy as np

MAX_PAIRS = 96  # pairs of neighbouring frames scored per rank
BRIGHT_LEVEL = 0.05  # the region of the mean pattern whose contrast is compared
# drifts this small at the typical step are no drift: the pairs' shared centre and its shoulder
# (the shadow's correlation length, blurred further by errors in the positions)
SMALLEST_DRIFT_PX = 1.25
SIGNIFICANCE = 4.0  # the pairs' mean preference for one sign, in standard errors
# and that preference as a fraction of the best drift's correlation: a drifted shadow is
# one-sided (its mirror near zero), a lopsided shoulder of the centre (a pinhole's) is not
ONE_SIDED = 0.5


def neighbour_spacing(positions_px: np.ndarray) -> float:
    """The median distance (pixels) from a position to its nearest neighbour."""
    pos = np.asarray(positions_px, np.float64)
    if len(pos) < 2:
        return 0.0
    from scipy.spatial import cKDTree  # noqa: PLC0415

    distance, _ = cKDTree(pos).query(pos, k=2)
    return float(np.median(distance[:, 1]))


def drift_grid(frame: int, spacing_px: float) -> np.ndarray:
    """Candidate curvatures κ = 1/c whose drift at ``spacing_px`` spans ±frame/4 pixels in
    quarter-pixel steps (the same on every rank: it depends on the whole scan only)."""
    shifts = np.arange(-frame // 4, frame // 4 + 0.125, 0.25)
    return shifts / (frame * max(spacing_px, 1e-6))


def drift_scores(amplitudes: np.ndarray, positions_px: np.ndarray, mean_amplitude: np.ndarray,
                 kappas: np.ndarray, max_pairs: int = MAX_PAIRS) -> np.ndarray:
    """This rank's scores (3K + 1): for each κ of the symmetric grid the sums over pairs of
    neighbouring frames of their contrasts' normalised cross-correlation ``x`` at the drift
    ``κ·M·Δ``, of ``x²`` and of ``x`` times its value at ``-κ``; the pair count last.

    ``amplitudes`` (N, M, M) in the engines' layout (negative = masked), ``positions_px``
    their positions, ``mean_amplitude`` the whole scan's mean amplitude (same layout).
    """
    from scipy.ndimage import map_coordinates  # noqa: PLC0415
    from scipy.spatial import cKDTree  # noqa: PLC0415

    k = len(kappas)
    out = np.zeros(3 * k + 1)
    n, m = len(amplitudes), int(np.shape(mean_amplitude)[-1])
    if n < 2:
        return out
    reference = np.asarray(mean_amplitude, np.float64) ** 2
    bright = reference > BRIGHT_LEVEL * max(float(reference.max()), 1e-30)
    weight = np.where(bright, np.sqrt(reference / max(float(reference.max()), 1e-30)), 0.0)
    pos = np.asarray(positions_px, np.float64)
    _, near = cKDTree(pos).query(pos, k=min(5, n))
    pairs = sorted({(min(j, int(k)), max(j, int(k))) for j in range(n) for k in near[j, 1:]
                    if int(k) != j})
    if len(pairs) > max_pairs:
        pick = np.random.default_rng(0).choice(len(pairs), max_pairs, replace=False)
        pairs = [pairs[i] for i in np.sort(pick)]
    spectra: dict[int, np.ndarray] = {}

    def spectrum(i: int) -> np.ndarray:
        if i not in spectra:
            a = np.asarray(amplitudes[i], np.float64)
            intensity = np.where(a >= 0, a * a, 0.0)
            total = intensity[bright].sum()
            scale = reference[bright].sum() / total if total > 0 else 0.0
            contrast = np.where(bright, intensity * scale / np.maximum(reference, 1e-30) - 1, 0)
            spectra[i] = np.fft.fft2(contrast * weight)
        return spectra[i]

    centre = np.array([m // 2, m // 2], np.float64)
    for j, i in pairs:
        fj, fk = spectrum(j), spectrum(i)
        norm = np.sqrt(np.sum(np.abs(fj) ** 2) * np.sum(np.abs(fk) ** 2)) / (m * m)
        if norm <= 0:
            continue
        cc = np.fft.fftshift(np.fft.ifft2(fk * np.conj(fj)).real) / norm
        coords = centre[:, None] + np.outer(pos[i] - pos[j], kappas * m)
        x = map_coordinates(cc, coords, order=1, mode="constant")
        out[:k] += x
        out[k:2 * k] += x * x
        out[2 * k:3 * k] += x * x[::-1]
        out[-1] += 1
    return out


def defocus_sign(kappas: np.ndarray, scores: np.ndarray, frame: int,
                 spacing_px: float) -> int:
    """-1 where the patterns' shadow drifts as a beam of negative curvature makes it, else +1
    (also where no drift shows, or the pairs do not agree on one: the usual sign)."""
    k, count = len(kappas), scores[-1]
    if count < 3:
        return 1
    mean, square, cross = (scores[i * k:(i + 1) * k] / count for i in range(3))
    # the best drift of either sign; no drift (the pairs' shared centre, which errors in the
    # positions favour by blurring the drifted peak) tells no sign, so it does not compete
    drifting = np.abs(kappas) * frame * spacing_px >= SMALLEST_DRIFT_PX
    if not drifting.any():
        return 1
    best = int(np.argmax(np.where(drifting, mean, -np.inf)))
    mirror = k - 1 - best
    lead = mean[best] - mean[mirror]  # per pair: x(κ) - x(-κ), its mean and spread
    spread = max(square[best] + square[mirror] - 2 * cross[best] - lead * lead, 0.0)
    error = np.sqrt(spread / (count - 1))
    if lead <= SIGNIFICANCE * error or lead < ONE_SIDED * mean[best]:
        return 1
    return -1 if kappas[best] < 0 else 1
