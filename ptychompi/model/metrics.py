"""Quality metrics against a ground truth (simulations and tests)."""

from __future__ import annotations

import numpy as np


def illuminated_region(probe: np.ndarray, positions_px: np.ndarray, shape: tuple[int, int],
                       level: float = 0.1) -> np.ndarray:
    """Pixels whose summed illumination Σ_j |P|² is at least ``level`` of its maximum."""
    power = (np.abs(np.asarray(probe).reshape(-1, *probe.shape[-2:])) ** 2).sum(axis=0)
    m0, m1 = power.shape
    weight = np.zeros(shape)
    for r, c in np.round(positions_px).astype(int):
        weight[r:r + m0, c:c + m1] += power
    return weight >= level * weight.max()


def phase_ramp(product: np.ndarray, region: np.ndarray, upsample: int = 4,
               refine: int = 3) -> tuple[float, float]:
    """Frequencies (cycles/pixel) of the linear phase ramp that best explains ``product``.

    Maximises ``|Σ_region product · exp(-2πi(k_r r + k_c c))|``: the peak of a zero-padded FFT,
    then a few rounds of local grid refinement.
    """
    d = np.where(region, product, 0)
    h, w = d.shape
    spec = np.abs(np.fft.fft2(d, s=(upsample * h, upsample * w)))
    i, j = np.unravel_index(np.argmax(spec), spec.shape)
    kr = np.fft.fftfreq(upsample * h)[i]
    kc = np.fft.fftfreq(upsample * w)[j]
    rows, cols = np.nonzero(region)
    vals = d[rows, cols]
    step_r, step_c = 1.0 / (upsample * h), 1.0 / (upsample * w)
    grid = np.linspace(-1, 1, 5)
    for _ in range(refine):
        scores = [(abs(np.sum(vals * np.exp(-2j * np.pi * ((kr + a * step_r) * rows
                                                          + (kc + b * step_c) * cols)))), a, b)
                  for a in grid for b in grid]
        _, a, b = max(scores)
        kr, kc = kr + a * step_r, kc + b * step_c
        step_r, step_c = step_r / 2, step_c / 2
    for _ in range(2):  # weighted least squares on the (now small) residual phase
        resid = np.angle(vals * np.exp(-2j * np.pi * (kr * rows + kc * cols)))
        weight = np.abs(vals)
        design = np.stack([rows, cols, np.ones_like(rows)], 1).astype(np.float64)
        sol = np.linalg.lstsq(design * weight[:, None], resid * weight, rcond=None)[0]
        kr, kc = kr + sol[0] / (2 * np.pi), kc + sol[1] / (2 * np.pi)
    return float(kr), float(kc)


def aligned_error(estimate: np.ndarray, truth: np.ndarray, region: np.ndarray | None = None,
                  remove_ramp: bool = True) -> float:
    """``min ‖c·e^{i k·r}·x − t‖ / ‖t‖`` over ``region``: c one complex factor, k a ramp.

    The factor removes the global phase and the scale ambiguity (O·s, P/s); the linear phase
    ramp is the other exact ambiguity of blind ptychography (O·e^{ik·r}, P·e^{-ik·r}).
    """
    estimate, truth = np.asarray(estimate), np.asarray(truth)
    if region is None:
        region = np.ones(truth.shape, dtype=bool)
    x = estimate.astype(np.complex128)
    if remove_ramp and truth.ndim == 2:
        kr, kc = phase_ramp(truth * np.conj(x), region)
        r, c = np.mgrid[:truth.shape[0], :truth.shape[1]]
        x = x * np.exp(2j * np.pi * (kr * r + kc * c))
    x, t = x[region], truth[region]
    c = np.vdot(x, t) / max(np.vdot(x, x).real, 1e-30)
    return float(np.linalg.norm(c * x - t) / np.linalg.norm(t))


def object_error(estimate: np.ndarray, estimate_positions: np.ndarray, truth: np.ndarray,
                 truth_positions: np.ndarray, truth_probe: np.ndarray,
                 level: float = 0.1) -> float:
    """Normalised, phase-invariant error of a reconstructed object against the truth.

    The two objects are aligned by the (integer) offset between their position lists; the
    comparison covers the truth pixels illuminated at ``level`` of the maximum or more.
    """
    offset = np.round(np.median(np.asarray(estimate_positions) - np.asarray(truth_positions),
                                axis=0)).astype(int)
    region = illuminated_region(truth_probe, truth_positions, truth.shape, level)
    h, w = truth.shape
    r0, c0 = offset
    if r0 < 0 or c0 < 0 or r0 + h > estimate.shape[0] or c0 + w > estimate.shape[1]:
        raise ValueError("the estimate does not cover the truth's area")
    return aligned_error(estimate[r0:r0 + h, c0:c0 + w], truth, region)


def shift_image(a: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """``a`` moved by ``shift`` (rows, cols) pixels through a Fourier phase ramp (periodic)."""
    q0 = np.fft.fftfreq(a.shape[0])[:, None]
    q1 = np.fft.fftfreq(a.shape[1])[None, :]
    ramp = np.exp(-2j * np.pi * (q0 * shift[0] + q1 * shift[1]))
    return np.fft.ifft2(np.fft.fft2(a) * ramp)


def registered_object_error(estimate: np.ndarray, estimate_positions: np.ndarray,
                            truth: np.ndarray, truth_positions: np.ndarray,
                            truth_probe: np.ndarray, search: int = 2,
                            level: float = 0.1, grid: float = 1.0) -> float:
    """:func:`object_error` after registering the estimate to the truth to a few hundredths
    of a pixel: blind ptychography may shift object and probe together (opposite ways), and
    refined positions carry an arbitrary common shift. Steps of ``grid`` px (whole pixels by
    default) within ``search`` first, then sub-pixel steps around the best (0.39 px in all:
    ``grid`` 0.5 also finds an object shifted by half a pixel against the positions, as a
    probe that slid with it leaves it)."""
    est = np.asarray(estimate, np.complex128)

    def error(shift: tuple[float, float]) -> float:
        moved = shift_image(est, shift) if any(shift) else est
        try:
            return object_error(moved, estimate_positions, truth, truth_positions, truth_probe,
                                level)
        except ValueError:
            return float("inf")

    d = np.mean(np.asarray(estimate_positions) - np.asarray(truth_positions), axis=0)
    start = np.round(d) - d  # the common sub-pixel offset of the positions, removed first
    steps = np.arange(-search, search + grid / 2, grid)
    best = min((error((start[0] + r, start[1] + c)), (start[0] + r, start[1] + c))
                for r in steps for c in steps)
    for step in (0.25, 0.1, 0.04):
        r0, c0 = best[1]
        best = min([best] + [(error((r0 + a * step, c0 + b * step)), (r0 + a * step,
                                                                       c0 + b * step))
                             for a in (-1, 0, 1) for b in (-1, 0, 1) if a or b])
    return float(best[0])
