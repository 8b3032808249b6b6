"""``run --follow``: the object where light has not fallen yet continues the lit object."""

from __future__ import annotations

import numpy as np

from ptychompi.app.follow.extend import LEVEL, continued, illumination


def _lit_object() -> tuple[np.ndarray, np.ndarray]:
    """A 120 x 160 object lit in rows 0-59 (NaN below): left half 0.8·e^{0.3i}, right half
    0.6·e^{-0.5i}; its illumination 1 there, 0 below."""
    obj = np.full((120, 160), np.nan + 0j)
    obj[:60, :80] = 0.8 * np.exp(0.3j)
    obj[:60, 80:] = 0.6 * np.exp(-0.5j)
    weight = np.zeros(obj.shape)
    weight[:60] = 1.0
    return obj, weight


def test_lit_pixels_keep_their_values_and_unlit_ones_continue_them():
    obj, weight = _lit_object()
    out = continued(obj, weight, sigma=8)
    assert np.array_equal(out[:60], obj[:60])
    assert np.isfinite(out).all()
    # just below the lit area each half's value goes on (not the flat guess 1)
    assert abs(out[62, 20] - obj[0, 0]) < 0.02 and abs(out[62, 140] - obj[0, 159]) < 0.02
    # far from it the lit object's mean
    mean = obj[:60].mean()
    assert abs(out[119, 80] - mean) < 0.05


def test_weakly_lit_pixels_are_blended_towards_the_continuation():
    obj, weight = _lit_object()
    obj[60:70] = 1.0  # lit, barely: a tenth of LEVEL -> mostly the continuation
    weight[60:70] = 0.1 * LEVEL
    out = continued(obj, weight, sigma=8)
    assert abs(out[61, 20] - obj[0, 0]) < 0.1 * abs(1 - obj[0, 0]) + 0.02


def test_illumination_places_windows_at_whole_pixels():
    power = np.ones((4, 4))
    w = illumination(power, np.array([[0.0, 0.0], [2.6, 0.0]]), (10, 6))
    assert w[:2, :4].sum() == 8 and w[2:4, :4].sum() == 16 and w[4:6, :4].sum() == 8
    assert w[6:].sum() == 0 and w[:, 4:].sum() == 0
