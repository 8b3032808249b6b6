"""The compact halo numerator (``parallel/halo_codec.py``): rounding bound, exact round trip."""

from __future__ import annotations

import numpy as np

from ptychompi.parallel import halo_codec as hc


def rounded(src: np.ndarray, obj: np.ndarray, illum: np.ndarray, floor: float, bits: int,
            runs: np.ndarray, at: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    n = int((runs[:, 2] - runs[:, 1]).sum())
    vals, exps = np.empty(2 * n, np.float32), np.empty(n, np.int32)
    assert hc.gather_quantized(src, *at, runs, obj, illum, floor, bits, vals, exps) == n
    return vals, exps


def round_trip(vals: np.ndarray, exps: np.ndarray) -> tuple[np.ndarray, int]:
    n = len(exps)
    buf = np.empty(hc.max_bytes(n), np.uint8)
    written = hc.encode(vals, vals.view(np.uint32), exps, n, buf)
    out = np.empty(2 * n, np.float32)
    assert hc.decode(buf, n, out, out.view(np.uint32)) == written <= hc.max_bytes(n)
    return out, written


def scene(rng: np.random.Generator, h: int = 24, w: int = 40
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    obj = (rng.uniform(0.2, 1, (h, w)) * np.exp(1j * rng.uniform(0, 6, (h, w))))
    illum = rng.uniform(0.01, 5, (h, w)).astype(np.float32)
    src = (rng.normal(size=(h, w)) + 1j * rng.normal(size=(h, w))) * 1e-2
    return src.astype(np.complex64), obj.astype(np.complex64), illum


def test_rounding_bound_in_place_and_idempotent() -> None:
    rng = np.random.default_rng(0)
    src, obj, illum = scene(rng)
    runs = np.array([[0, 3, 30], [2, 0, 40], [7, 10, 11], [20, 5, 25]], np.int64)
    before, floor = src.copy(), 0.3
    vals, _ = rounded(src, obj, illum, floor, 21, runs)
    scale = np.abs(obj.astype(np.complex128)) * np.sqrt(illum.astype(np.float64) ** 2 + floor)
    touched = np.zeros(src.shape, bool)
    for y, a, b in runs:
        touched[y, a:b] = True
    change = np.abs((src - before).astype(np.complex128))
    assert (change[touched] <= 2.0 ** -21 * scale[touched]).all()  # ≤ half a step a part
    assert change[touched].max() > 0 and (src[~touched] == before[~touched]).all()
    np.testing.assert_array_equal(vals.view(np.complex64), src[touched])  # the copy sent
    again = src.copy()
    rounded(again, obj, illum, floor, 21, runs)
    np.testing.assert_array_equal(again, src)  # a pixel sent to two neighbours: one value


def test_round_trip_is_exact_and_smaller() -> None:
    rng = np.random.default_rng(1)
    src, obj, illum = scene(rng)
    runs = np.array([[y, 0, 40] for y in range(24)], np.int64)
    vals, exps = rounded(src, obj, illum, 0.3, 21, runs)
    out, written = round_trip(vals, exps)
    np.testing.assert_array_equal(out.view(np.uint32), vals.view(np.uint32))
    assert written < 0.75 * 8 * len(exps)  # fewer bytes than complex64


def test_raw_blocks_zeros_and_extremes() -> None:
    rng = np.random.default_rng(2)
    for trial in range(40):
        src, obj, illum = scene(rng, 12, 30)
        src *= (10.0 ** rng.uniform(-9, 4, src.shape)).astype(np.float32)
        src[rng.random(src.shape) < 0.2] = 0
        obj[rng.random(src.shape) < 0.05] = 0  # no scale: the value as it is
        obj[rng.random(src.shape) < 0.05] *= np.float32(1e-30)
        runs = np.array([[y, 0, 30] for y in range(12)], np.int64)
        n = int(rng.integers(1, 12 * 30))
        vals, exps = rounded(src, obj, illum, float(rng.uniform(0, 2)), 21, runs)
        out, _ = round_trip(vals[:2 * n], exps[:n])
        np.testing.assert_array_equal(out.view(np.uint32), vals[:2 * n].view(np.uint32),
                                      err_msg=f"trial {trial}")
