"""Tests for frame preprocessing on the real APS scan-235 frames (read through the APS layout)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptychompi.config import DataConfig, PreprocessConfig
from ptychompi.data.preprocess import Preprocessor, plan_preprocess, sample_indices
from ptychompi.data.scan import ArrayScan
from ptychompi.errors import ConfigError, DataError
from ptychompi.io.aps import open_aps, write_aps

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SCAN235 = DATA / "aps-scan235-truncated" / "test235_truncated.npz"

pytestmark = pytest.mark.skipif(not SCAN235.is_file(), reason=f"no scan 235 data at {SCAN235}")

SIZE = 256


@pytest.fixture(scope="module")
def raw() -> np.ndarray:
    return np.load(SCAN235)["reciprocal"]


@pytest.fixture(scope="module")
def source(raw, tmp_path_factory):
    d = tmp_path_factory.mktemp("scan235")
    write_aps(d, "scan235_data_%06d.h5", raw, frames_per_file=5, compression="lz4")
    cfg = DataConfig(path=str(d / "scan235_data_%06d.h5"), positions="spiral",
                     step_m=[2e-7, 2e-7])
    return open_aps(cfg)


@pytest.fixture(scope="module")
def frames(source, raw) -> np.ndarray:
    out = source.read(np.arange(source.n_frames))
    np.testing.assert_array_equal(out, raw)
    return out


@pytest.fixture(scope="module")
def center(source) -> tuple[int, int]:
    return plan_preprocess(PreprocessConfig(crop_size=SIZE), source).center


def _plan(source, **kw) -> Preprocessor:
    return plan_preprocess(PreprocessConfig(**kw), source)


def _crop(a: np.ndarray, center: tuple[int, int], size: int = SIZE) -> np.ndarray:
    r0, c0 = center[0] - size // 2, center[1] - size // 2
    return a[..., r0:r0 + size, c0:c0 + size]


def test_center_of_mass_and_crop_exact(source, frames, center):
    assert abs(center[0] - 255) <= 2 and abs(center[1] - 258) <= 2
    p = _plan(source, crop_size=SIZE)
    assert p.frame_shape == (SIZE, SIZE) and p.pixel_scale == 1
    assert p.static_mask.shape == (SIZE, SIZE) and p.static_mask.all()
    out = p.apply(frames)
    assert out.dtype == np.float32 and out.shape == (20, SIZE, SIZE)
    np.testing.assert_array_equal(out, _crop(frames, center))
    # the frame's brightest region sits at the centre of the crop window
    total = out.sum(axis=0)
    rows, cols = np.arange(SIZE), np.arange(SIZE)
    assert abs(total.sum(1) @ rows / total.sum() - SIZE // 2) < 1
    assert abs(total.sum(0) @ cols / total.sum() - SIZE // 2) < 1


def test_center_is_deterministic_and_sampled(source, raw, center):
    idx = sample_indices(1000)
    assert len(idx) == 64 and idx[0] == 0 and idx[-1] == 999
    np.testing.assert_array_equal(sample_indices(20), np.arange(20))
    # the same answer from an in-memory copy (another "rank", another reader)
    mem = ArrayScan(path="mem", n_frames=20, frame_shape=(512, 512), dtype=raw.dtype,
                    positions_m=np.zeros((20, 2)), frames=raw)
    assert plan_preprocess(PreprocessConfig(crop_size=SIZE), mem).center == center
    # a bright spot moves the centre of mass
    moved = raw.astype(np.float32).copy()
    moved[:, 100, 100] += 1e8
    mem2 = dataclasses.replace(mem, frames=moved)
    c2 = plan_preprocess(PreprocessConfig(crop_size=64), mem2).center
    assert c2[0] < center[0] - 20 and c2[1] < center[1] - 20


def test_explicit_center_and_window_outside(source, frames):
    p = _plan(source, crop_size=128, center=[200, 300])
    assert p.center == (200, 300)
    np.testing.assert_array_equal(p.apply(frames[:3]), frames[:3, 136:264, 236:364])
    with pytest.raises(DataError) as err:
        _plan(source, crop_size=128, center=[40, 300])
    msg = str(err.value)
    assert "[40, 300]" in msg and "128" in msg and "\n" not in msg
    with pytest.raises(DataError, match="600"):
        _plan(source, crop_size=600)


def test_no_crop_keeps_frame(source, frames):
    p = _plan(source)
    assert p.frame_shape == (512, 512) and p.center == (256, 256)
    np.testing.assert_array_equal(p.apply(frames[:2]), frames[:2])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rotate90(source, frames, center, k):
    out = _plan(source, crop_size=SIZE, center=list(center), rotate90=k).apply(frames[:4])
    np.testing.assert_array_equal(out, np.rot90(_crop(frames[:4], center), k, axes=(1, 2)))


@pytest.mark.parametrize(("key", "ref"), [
    ("flip_rows", lambda a: a[:, ::-1, :]),
    ("flip_cols", lambda a: a[:, :, ::-1]),
    ("transpose", lambda a: a.transpose(0, 2, 1)),
])
def test_flips_and_transpose(source, frames, center, key, ref):
    out = _plan(source, crop_size=SIZE, center=list(center), **{key: True}).apply(frames[:4])
    np.testing.assert_array_equal(out, ref(_crop(frames[:4], center)))


def test_threshold(source, frames, center):
    t = 3.5
    out = _plan(source, crop_size=SIZE, center=list(center), threshold=t).apply(frames[:4])
    c = _crop(frames[:4], center)
    expected = np.where(c < t, 0, c - np.float32(t)).astype(np.float32)
    np.testing.assert_array_equal(out, expected)
    assert (out == 0).sum() > (c == 0).sum()


def test_saturation(source, frames, center):
    c = _crop(frames[:4], center)
    bits = 14
    level = 2 ** bits - 1
    sat = c >= level
    assert 0 < sat.sum() < c.size // 100  # some pixels of the real frames saturate
    out = _plan(source, crop_size=SIZE, center=list(center), bit_depth=bits).apply(frames[:4])
    assert np.all(out[sat] == -1.0)
    np.testing.assert_array_equal(out[~sat], c[~sat])


def test_binning(source, frames, center):
    p = _plan(source, crop_size=SIZE, center=list(center), binning=2)
    assert p.frame_shape == (SIZE // 2, SIZE // 2) and p.pixel_scale == 2
    out = p.apply(frames[:4])
    c = _crop(frames[:4], center)
    np.testing.assert_array_equal(out, c.reshape(4, SIZE // 2, 2, SIZE // 2, 2).sum(axis=(2, 4)))
    with pytest.raises(ConfigError, match="divisible"):
        _plan(source, crop_size=SIZE + 2, center=list(center), binning=4)


def test_beamstop_npy_and_h5(source, frames, center, tmp_path):
    blocked = np.zeros((512, 512), bool)
    blocked[center[0] - 9:center[0] + 10, center[1] - 6:center[1] + 5] = True  # odd edges
    np.save(tmp_path / "bs.npy", blocked)
    p = _plan(source, crop_size=SIZE, center=list(center), beamstop_mask=str(tmp_path / "bs.npy"))
    cb = _crop(blocked, center)
    np.testing.assert_array_equal(p.static_mask, ~cb)
    out = p.apply(frames[:4])
    assert np.all(out[:, cb] == -1.0)
    np.testing.assert_array_equal(out[:, ~cb], _crop(frames[:4], center)[:, ~cb])
    # h5 file (numeric, nonzero = blocked), combined with binning: partly blocked bins are -1
    with h5py.File(tmp_path / "bs.h5", "w") as f:
        f["mask"] = blocked.astype(np.uint8)
    p2 = _plan(source, crop_size=SIZE, center=list(center), beamstop_mask=str(tmp_path / "bs.h5"),
               binning=2)
    binned_blocked = cb.reshape(SIZE // 2, 2, SIZE // 2, 2).any(axis=(1, 3))
    assert binned_blocked.sum() > cb.reshape(SIZE // 2, 2, SIZE // 2, 2).all(axis=(1, 3)).sum()
    np.testing.assert_array_equal(p2.static_mask, ~binned_blocked)
    out2 = p2.apply(frames[:2])
    assert np.all(out2[:, binned_blocked] == -1.0) and np.all(out2[:, ~binned_blocked] >= 0)
    np.save(tmp_path / "small.npy", np.zeros((256, 256), bool))
    with pytest.raises(DataError, match="small.npy"):
        _plan(source, crop_size=SIZE, beamstop_mask=str(tmp_path / "small.npy"))


def test_detector_mask_of_the_source(raw, center):
    mask = np.ones((512, 512), bool)
    mask[center[0] + 3, center[1] - 7] = False
    scan = ArrayScan(path="mem", n_frames=20, frame_shape=(512, 512), dtype=raw.dtype,
                     positions_m=np.zeros((20, 2)), frames=raw, mask=mask)
    p = plan_preprocess(PreprocessConfig(crop_size=SIZE, center=list(center)), scan)
    out = p.apply(scan.read([0, 1]))
    assert np.all(out[:, SIZE // 2 + 3, SIZE // 2 - 7] == -1.0)
    assert (out == -1).sum() == 2 and (~p.static_mask).sum() == 1


def _bad_frames(frames: np.ndarray, center) -> np.ndarray:
    bad = frames[:5].copy()
    r, c = center
    bad[3, r, c] = np.nan
    bad[3, r + 1, c] = -4.0
    bad[3, r + 2, c] = np.inf
    bad[4, r, c + 1] = -1.0
    return bad


def test_invalid_error(source, frames, center):
    bad = _bad_frames(frames, center)
    p = _plan(source, crop_size=SIZE, center=list(center))
    with pytest.raises(DataError) as err:
        p.apply(bad, indices=[10, 11, 12, 13, 14])
    msg = str(err.value)
    assert "frame 13" in msg and "3 invalid" in msg and "\n" not in msg
    with pytest.raises(DataError, match="frame 3 "):
        p.apply(bad)
    # also outside the crop window (the order: invalid values are checked before the crop)
    outside = frames[:1].copy()
    outside[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="frame 7 holds 1 invalid"):
        p.apply(outside, indices=[7])


def test_invalid_zero_and_mask(source, frames, center):
    bad = _bad_frames(frames, center)
    half = SIZE // 2
    spots = [(3, half, half), (3, half + 1, half), (3, half + 2, half), (4, half, half + 1)]
    ref = _crop(frames[:5], center)
    zero = _plan(source, crop_size=SIZE, center=list(center), invalid="zero").apply(bad)
    masked = _plan(source, crop_size=SIZE, center=list(center), invalid="mask").apply(bad)
    for f, r, c in spots:
        assert zero[f, r, c] == 0.0 and masked[f, r, c] == -1.0
    keep = np.ones(ref.shape, bool)
    for s in spots:
        keep[s] = False
    np.testing.assert_array_equal(zero[keep], ref[keep])
    np.testing.assert_array_equal(masked[keep], ref[keep])
    assert np.isfinite(zero).all() and np.isfinite(masked).all()


def test_amplitudes_are_squared(frames):
    amp = np.sqrt(frames[:3])
    mem = ArrayScan(path="mem", n_frames=3, frame_shape=(512, 512), dtype=np.float32,
                    positions_m=np.zeros((3, 2)), frames=amp)
    p = plan_preprocess(PreprocessConfig(crop_size=SIZE, amplitudes=True), mem)
    intens = dataclasses.replace(mem, frames=frames[:3])
    center = plan_preprocess(PreprocessConfig(crop_size=SIZE), intens).center
    assert p.center == center  # the centre of mass uses intensities
    no_square = plan_preprocess(PreprocessConfig(crop_size=SIZE), mem).center
    assert no_square != center
    out = p.apply(amp)
    np.testing.assert_array_equal(out, np.square(_crop(amp, center)))
    np.testing.assert_allclose(out, _crop(frames[:3], center), rtol=1e-6)


def test_full_chain_order(source, frames, center):
    cfg = dict(crop_size=SIZE, center=list(center), rotate90=1, flip_cols=True, transpose=True,
               threshold=2.0, binning=4, bit_depth=14, invalid="mask")
    bad = _bad_frames(frames, center)
    out = _plan(source, **cfg).apply(bad)
    # numpy reference in the documented order
    x = bad.astype(np.float32)
    invalid = ~np.isfinite(x) | (x < 0)
    x = np.where(invalid, 0, x)
    invalid |= x >= 2 ** 14 - 1
    x, invalid = _crop(x, center), _crop(invalid, center)
    x, invalid = np.rot90(x, 1, axes=(1, 2)), np.rot90(invalid, 1, axes=(1, 2))
    x, invalid = x[:, :, ::-1], invalid[:, :, ::-1]
    x, invalid = x.transpose(0, 2, 1), invalid.transpose(0, 2, 1)
    x = np.where(x < 2.0, 0, x - np.float32(2.0))
    m = SIZE // 4
    x = x.reshape(5, m, 4, m, 4).sum(axis=(2, 4))
    invalid = invalid.reshape(5, m, 4, m, 4).any(axis=(2, 4))
    x[invalid] = -1
    assert invalid.any()
    np.testing.assert_allclose(out, x, rtol=1e-6)
    np.testing.assert_array_equal(out == -1, invalid)


def test_non_square_frames_need_a_crop():
    img = np.zeros((1, 40, 50), np.float32)
    img[0, 18:23, 26:29] = 1.0
    scan = ArrayScan(path="mem", n_frames=1, frame_shape=(40, 50), dtype=np.float32,
                     positions_m=np.zeros((1, 2)), frames=img)
    with pytest.raises(DataError, match="crop_size"):
        plan_preprocess(PreprocessConfig(), scan)
    p = plan_preprocess(PreprocessConfig(crop_size=32), scan)
    assert p.center == (20, 27) and p.apply(scan.read([0])).shape == (1, 32, 32)
