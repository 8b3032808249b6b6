"""Per-frame preprocessing, applied to each rank's frames as they are read.

The steps run in this one order (``preprocess.*`` keys):

1. ``invalid``: NaN, infinity or negative values -> ``error`` (DataError naming the frame and
   the count), ``zero`` (set to 0) or ``mask`` (pixel invalid). Pixels already invalid in the
   detector mask or the beamstop mask are never errors. With ``error`` the whole raw frame is
   checked, also outside the crop window.
2. ``amplitudes``: the file holds amplitudes -> square them into intensities.
3. ``bit_depth``: saturated pixels, value >= 2**bit_depth - 1 (after step 2), are invalid.
4. ``beamstop_mask``: .npy or .h5 boolean array of the raw frame shape, True = blocked ->
   invalid.
5. crop ``crop_size`` x ``crop_size`` around ``center`` [row, col] (raw pixels): the window is
   ``[c - size//2, c - size//2 + size)`` per axis, so the centre lands on pixel size//2 (the
   zero frequency of a centred frame). Without ``center`` the centre of mass of the sum of up
   to 64 frames spread evenly over the scan is used (found once, identical on every rank; the
   sum excludes invalid values and detector/beamstop-masked pixels, after step 2). A window
   not inside the frame is a DataError. Without ``crop_size`` the frame is kept whole.
6. ``rotate90``: ``np.rot90(frame, rotate90)`` (counter-clockwise).
7. ``flip_rows`` (upside down), then ``flip_cols`` (left-right), then ``transpose``.
8. ``threshold`` t: values < t -> 0, others -> value - t.
9. ``binning`` b: sum b x b bins (the size must be divisible by b; the detector pixel grows by
   b); a bin holding an invalid pixel is invalid.

Output convention (the engines rely on it): float32 (k, M, M), centred (no fftshift here),
every invalid pixel (detector mask, beamstop, saturated, invalid values with ``mask``) is -1.0
and every valid pixel is >= 0. The pointwise steps 1-4 run on the cropped window only, which
gives the same result as running them on the whole frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..config import PreprocessConfig
from ..errors import ConfigError, DataError
from .scan import ScanSource

__all__ = ["Preprocessor", "plan_preprocess", "load_beamstop", "center_of_mass",
           "sample_indices"]

_N_SAMPLE = 64
_BATCH = 8


def sample_indices(n_frames: int, n_sample: int = _N_SAMPLE) -> np.ndarray:
    """Up to ``n_sample`` frame indices spread evenly over ``0..n_frames-1`` (deterministic)."""
    k = min(int(n_sample), int(n_frames))
    if k <= 0:
        return np.zeros(0, np.int64)
    return np.unique(np.round(np.linspace(0, n_frames - 1, k)).astype(np.int64))


def load_beamstop(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Beamstop mask from ``.npy`` or ``.h5`` (True/nonzero = blocked) checked against ``shape``.

    For HDF5, ``file.h5::/dataset`` names the dataset; otherwise the file's only dataset, or
    the first of ``mask``, ``beamstop_mask``, ``beamstop``, ``data``, ``entry/data/data``. A 3-D
    array contributes its first frame (as ptychopy's ``beamstopMask.h5``).
    """
    text = str(path)
    name = None
    if "::" in text:
        text, name = text.split("::", 1)
    p = Path(text)
    if not p.is_file():
        raise DataError(f"beamstop mask {text} not found; check preprocess.beamstop_mask")
    try:
        if p.suffix.lower() == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            arr = _read_h5_mask(p, name)
    except (OSError, ValueError) as exc:
        raise DataError(f"beamstop mask {text}: cannot read it ({exc})") from None
    arr = np.asarray(arr)
    if arr.ndim == 3:
        arr = arr[0]
    if tuple(arr.shape) != tuple(shape):
        raise DataError(f"beamstop mask {text} has shape {tuple(arr.shape)} but the raw frames "
                        f"are {tuple(shape)}; it must match the raw detector frame")
    if arr.dtype != bool:
        arr = arr != 0
    return arr


def _read_h5_mask(path: Path, name: str | None) -> np.ndarray:
    with h5py.File(path, "r") as f:
        if name is None:
            found: list[str] = []
            f.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) else None)
            if len(found) == 1:
                name = found[0]
            else:
                for cand in ("mask", "beamstop_mask", "beamstop", "data", "entry/data/data"):
                    if cand in found:
                        name = cand
                        break
            if name is None:
                raise ValueError(f"it holds datasets {found[:5]}; name one as "
                                 f"{path}::/dataset")
        ds = f.get(name)
        if not isinstance(ds, h5py.Dataset):
            raise ValueError(f"no dataset {name!r}")
        return ds[()]


def center_of_mass(image: np.ndarray) -> tuple[float, float]:
    """Intensity-weighted centre (row, col) of a 2-D image (float64 sums)."""
    img = np.asarray(image, np.float64)
    total = img.sum()
    if not total > 0:
        raise DataError("cannot find the diffraction centre: the sampled frames sum to zero; "
                        "set preprocess.center [row, col]")
    rows = np.arange(img.shape[0], dtype=np.float64)
    cols = np.arange(img.shape[1], dtype=np.float64)
    return float(img.sum(axis=1) @ rows / total), float(img.sum(axis=0) @ cols / total)


def _orient(a: np.ndarray, rotate90: int, flip_rows: bool, flip_cols: bool,
            transpose: bool) -> np.ndarray:
    """Steps 6-7 on the last two axes (views)."""
    if rotate90 % 4:
        a = np.rot90(a, rotate90 % 4, axes=(-2, -1))
    if flip_rows:
        a = a[..., ::-1, :]
    if flip_cols:
        a = a[..., :, ::-1]
    if transpose:
        a = np.swapaxes(a, -2, -1)
    return a


def _bin_any(mask: np.ndarray, b: int) -> np.ndarray:
    *lead, h, w = mask.shape
    return mask.reshape(*lead, h // b, b, w // b, b).any(axis=(-3, -1))


@dataclass
class Preprocessor:
    """A fixed preprocessing plan; :meth:`apply` maps raw frames to engine frames."""

    cfg: PreprocessConfig
    raw_shape: tuple[int, int]
    center: tuple[int, int]
    frame_shape: tuple[int, int]
    pixel_scale: int
    static_mask: np.ndarray  # output-shaped, True = valid
    raw_invalid: np.ndarray | None  # raw-shaped, True = detector-masked or beamstop
    window: tuple[slice, slice]

    def apply(self, frames: np.ndarray, indices: Sequence[int] | np.ndarray | None = None
              ) -> np.ndarray:
        """Preprocess float frames (k, H, W) -> float32 (k, M, M); invalid pixels = -1."""
        x = np.asarray(frames)
        if x.ndim == 2:
            x = x[None]
        if tuple(x.shape[-2:]) != self.raw_shape:
            raise DataError(f"frames are {x.shape[-2]}x{x.shape[-1]}, the preprocessing plan "
                            f"expects {self.raw_shape[0]}x{self.raw_shape[1]}")
        cfg = self.cfg
        if cfg.invalid == "error":
            self._check_invalid(x, indices)
        # (5, applied early) crop: steps 1-4 are pointwise, so cropping first is exact
        x = np.array(x[(slice(None), *self.window)], dtype=np.float32, copy=True)
        # (1) invalid values
        bad = ~(x >= 0)
        bad |= x == np.inf
        bad_any = bool(bad.any())
        if bad_any:
            x[bad] = 0.0
        # with "error", only detector/beamstop-masked pixels can be bad here; they end as -1
        invalid = bad if (bad_any and cfg.invalid == "mask") else None
        # (2) amplitudes -> intensities
        if cfg.amplitudes:
            np.square(x, out=x)
        # (3) saturation
        if cfg.bit_depth is not None:
            sat = x >= np.float32(2.0 ** cfg.bit_depth - 1)
            if sat.any():
                invalid = sat if invalid is None else (invalid | sat)
        # (4) beamstop and detector mask: folded into static_mask (output-shaped)
        # (8, pointwise so done here in place) threshold: v < t -> 0, else v - t
        if cfg.threshold > 0:
            x -= np.float32(cfg.threshold)
            np.maximum(x, np.float32(0), out=x)
        # (6-7) orientation
        x = _orient(x, cfg.rotate90, cfg.flip_rows, cfg.flip_cols, cfg.transpose)
        if invalid is not None:
            invalid = _orient(invalid, cfg.rotate90, cfg.flip_rows, cfg.flip_cols,
                              cfg.transpose)
        # (9) binning
        b = self.pixel_scale
        if b > 1:
            k, h, w = x.shape
            x = x.reshape(k, h // b, b, w // b, b).sum(axis=(2, 4), dtype=np.float32)
            if invalid is not None:
                invalid = _bin_any(invalid, b)
        out = np.ascontiguousarray(x, dtype=np.float32)
        if invalid is not None:
            out[invalid] = -1.0
        if not self.static_mask.all():
            out[:, ~self.static_mask] = -1.0
        return out

    def _check_invalid(self, x: np.ndarray, indices: Sequence[int] | np.ndarray | None) -> None:
        """Step 1 with ``invalid: error``: raise on the first frame with bad values."""
        good = (x >= 0) & (x != np.inf)
        if self.raw_invalid is not None:
            good |= self.raw_invalid
        counts = (~good).reshape(len(x), -1).sum(axis=1)
        hit = np.flatnonzero(counts)
        if hit.size:
            j = int(hit[0])
            frame = int(np.asarray(indices).reshape(-1)[j]) if indices is not None else j
            more = f" ({hit.size} frames of this batch affected)" if hit.size > 1 else ""
            raise DataError(f"frame {frame} holds {int(counts[j])} invalid values (NaN, "
                            f"infinity or negative){more}; set preprocess.invalid to zero or "
                            "mask, or fix the data")


def _window(center: tuple[int, int], size: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    r0, c0 = center[0] - size // 2, center[1] - size // 2
    if r0 < 0 or c0 < 0 or r0 + size > shape[0] or c0 + size > shape[1]:
        raise DataError(f"crop window {size}x{size} around centre [{center[0]}, {center[1]}] "
                        f"reaches outside the {shape[0]}x{shape[1]} frame; choose a smaller "
                        "preprocess.crop_size or set preprocess.center")
    return slice(r0, r0 + size), slice(c0, c0 + size)


def _find_center(cfg: PreprocessConfig, source: ScanSource,
                 raw_invalid: np.ndarray | None) -> tuple[int, int]:
    """Centre of mass of the summed sample frames, rounded to a pixel."""
    idx = sample_indices(source.n_frames)
    total = np.zeros(source.frame_shape, np.float64)
    for lo in range(0, len(idx), _BATCH):
        frames = source.read(idx[lo: lo + _BATCH]).astype(np.float32, copy=False)
        frames = np.where((frames >= 0) & (frames != np.inf), frames, np.float32(0))
        if cfg.amplitudes:
            frames = frames * frames
        total += frames.sum(axis=0, dtype=np.float64)
    if raw_invalid is not None:
        total[raw_invalid] = 0.0
    r, c = center_of_mass(total)
    return int(np.rint(r)), int(np.rint(c))


def plan_preprocess(cfg: PreprocessConfig, source: ScanSource) -> Preprocessor:
    """Build the preprocessing plan for ``source`` (same answer on every rank).

    Loads the beamstop file and, without ``cfg.center`` and with a crop, reads up to 64 sample
    frames for the centre of mass.
    """
    raw_shape = (int(source.frame_shape[0]), int(source.frame_shape[1]))
    raw_invalid = None
    if source.mask is not None:
        m = np.asarray(source.mask, bool)
        if m.shape != raw_shape:
            raise DataError(f"{source.path}: mask shape {m.shape} does not match frames "
                            f"{raw_shape}")
        if not m.all():
            raw_invalid = ~m
    if cfg.beamstop_mask:
        blocked = load_beamstop(cfg.beamstop_mask, raw_shape)
        raw_invalid = blocked if raw_invalid is None else (raw_invalid | blocked)

    if cfg.crop_size is not None:
        size = int(cfg.crop_size)
        if cfg.center is not None:
            if len(cfg.center) != 2:
                raise ConfigError(f"preprocess.center = {cfg.center}: expected [row, col]")
            center = (int(cfg.center[0]), int(cfg.center[1]))
        else:
            center = _find_center(cfg, source, raw_invalid)
        window = _window(center, size, raw_shape)
    else:
        if raw_shape[0] != raw_shape[1]:
            raise DataError(f"{source.path}: frames are {raw_shape[0]}x{raw_shape[1]}; set "
                            "preprocess.crop_size (and center) to cut a square window")
        size = raw_shape[0]
        center = (raw_shape[0] // 2, raw_shape[1] // 2)
        window = (slice(0, size), slice(0, size))

    b = int(cfg.binning)
    if size % b:
        what = "preprocess.crop_size" if cfg.crop_size is not None else "the frame size"
        err = ConfigError if cfg.crop_size is not None else DataError
        raise err(f"{what} {size} is not divisible by preprocess.binning = {b}")

    valid = np.ones((size, size), bool)
    if raw_invalid is not None:
        valid = ~raw_invalid[window]
    valid = _orient(valid, cfg.rotate90, cfg.flip_rows, cfg.flip_cols, cfg.transpose)
    if b > 1:
        valid = ~_bin_any(~valid, b)
    m_out = size // b
    return Preprocessor(cfg=cfg, raw_shape=raw_shape, center=center, frame_shape=(m_out, m_out),
                        pixel_scale=b, static_mask=np.ascontiguousarray(valid),
                        raw_invalid=raw_invalid, window=window)
