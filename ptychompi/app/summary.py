"""``ptychompi inspect FILE``: a one-screen summary to read before reconstructing.

Knows CXI scans, MDA scan files and ptychompi result files (HDF5 with a root ``object``).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from ..errors import DataError
from ..model.geometry import farfield_pixel_size, kev_from_wavelength, overlap_ratio

_SAMPLE_FRAMES = 50


def _si(value: float | None, unit: str) -> str:
    """``1.2e-6, "m"`` -> ``"1.2 µm"``; ``None`` -> ``"not in file"``."""
    if value is None:
        return "not in file"
    for scale, prefix in ((1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p")):
        if abs(value) >= scale:
            return f"{value / scale:.4g} {prefix}{unit}"
    return f"{value:.4g} {unit}"


def _median_step(pos: np.ndarray) -> float:
    """Median nearest-neighbour distance of the positions (same units as ``pos``)."""
    pos = np.asarray(pos, dtype=np.float64)
    if len(pos) < 2:
        return 0.0
    sel = pos[:: max(1, len(pos) // 2000)]
    d = np.sqrt(((sel[:, None, :] - pos[None, :, :]) ** 2).sum(-1))
    d[d == 0] = np.inf
    nearest = d.min(axis=1)
    nearest = nearest[np.isfinite(nearest)]
    return float(np.median(nearest)) if nearest.size else 0.0


def _probe_diameter_px(illumination: np.ndarray) -> float:
    """Diameter (pixels) of the disc holding the pixels above 10 % of the peak intensity."""
    inten = (np.abs(np.asarray(illumination)) ** 2).reshape(-1, *illumination.shape[-2:])
    inten = inten.sum(axis=0)
    area = float((inten > 0.1 * inten.max()).sum()) if inten.max() > 0 else 0.0
    return 2.0 * np.sqrt(area / np.pi)


def _inspect_cxi(path: str) -> str:
    from ..io.cxi import read_cxi  # noqa: PLC0415

    with read_cxi(path) as scan:
        n = scan.n_frames
        m_r, m_c = scan.frame_shape
        g = scan.geometry
        lines = [
            f"CXI scan   {Path(path).name}",
            f"frames     {n} x {m_r} x {m_c}  {np.dtype(scan.dtype).name}  "
            f"compression {scan.compression}  chunks {scan.metadata.get('chunks')}",
        ]
        if g.wavelength_m:
            lines.append(f"energy     {kev_from_wavelength(g.wavelength_m):.4f} keV  "
                         f"(wavelength {_si(g.wavelength_m, 'm')})")
        else:
            lines.append("energy     not in file (set geometry.energy_kev)")
        lines.append(f"distance   {_si(g.distance_m, 'm')}   detector pixel "
                     f"{_si(g.detector_pixel_m, 'm')}")
        pixel = None
        if g.wavelength_m and g.distance_m and g.detector_pixel_m:
            pixel = farfield_pixel_size(g.wavelength_m, g.distance_m, m_r, g.detector_pixel_m)
            lines.append(f"object px  {_si(pixel, 'm')}  (far field, lambda z / (M p); "
                         "near field differs)")

        pos = np.asarray(scan.positions_m, dtype=np.float64)
        extent = pos.max(axis=0) - pos.min(axis=0)
        step = _median_step(pos)
        text = f"positions  {len(pos)}, extent {extent[0] * 1e6:.4g} x {extent[1] * 1e6:.4g} µm"
        if pixel:
            text += f" = {extent[0] / pixel:.1f} x {extent[1] / pixel:.1f} px"
        lines.append(text)
        text = f"step       median nearest-neighbour {step * 1e6:.4g} µm"
        if pixel:
            text += f" = {step / pixel:.1f} px"
            if scan.illumination is not None:
                diam = _probe_diameter_px(scan.illumination)
                ratio = overlap_ratio(pos / pixel, diam)
                text += f"; stored probe ~{diam:.0f} px wide, overlap {ratio:.2f}"
            else:
                text += "; overlap unknown (no illumination in file)"
        lines.append(text)

        sample = np.unique(np.linspace(0, n - 1, min(n, _SAMPLE_FRAMES)).astype(np.int64))
        frames = scan.read(sample)
        valid = scan.mask if scan.mask is not None else np.ones((m_r, m_c), bool)
        sums = frames[:, valid].sum(axis=1, dtype=np.float64)
        lines.append(f"photons    per frame mean {sums.mean():.4g}  min {sums.min():.4g}  "
                     f"max {sums.max():.4g}  (valid pixels, {len(sample)} frames sampled)")
        bad = int((~valid).sum())
        nonfinite = int((~np.isfinite(frames)).sum())
        lines.append(f"mask       {bad} masked pixels of {m_r * m_c}"
                     + ("" if scan.mask is not None else " (no mask in file)")
                     + (f"; {nonfinite} NaN/inf values in the sample!" if nonfinite else ""))
        ill = scan.illumination
        lines.append("probe      " + (f"stored illumination {ill.shape}" if ill is not None
                                      else "none stored (estimated from the data)"))
    return "\n".join(lines)


def _describe(obj: h5py.Dataset) -> str:
    return f"{obj.shape} {obj.dtype}"


def _inspect_result(path: str, f: h5py.File) -> str:
    kind = "truth" if "positions_px" in f and "error" not in f else "result"
    lines = [f"{kind:<10} {Path(path).name}"]
    for name in ("object", "probe", "positions"):
        if isinstance(f.get(name), h5py.Dataset):
            lines.append(f"{name:<10} {_describe(f[name])}")
    lines += _refinement_lines(f)
    if isinstance(f.get("error"), h5py.Dataset):
        err = np.asarray(f["error"][()], dtype=np.float64).reshape(-1)
        if err.size:
            lines.append(f"error      {err.size} iterations, final {err[-1]:.5g}, "
                         f"min {np.nanmin(err):.5g}")
        else:
            lines.append("error      empty")
    if isinstance(f.get("pixel_size"), h5py.Dataset):
        px = np.asarray(f["pixel_size"][()], dtype=np.float64).reshape(-1)
        lines.append("pixel size " + ", ".join(_si(float(v), "m") for v in px))
    others = sorted(k for k, v in f.items() if isinstance(v, h5py.Dataset)
                    and k not in ("object", "probe", "positions", "error", "pixel_size"))
    if others:
        lines.append("datasets   " + ", ".join(f"{k} {f[k].shape}" for k in others))
    for key, val in f.attrs.items():
        lines.append(f"attr       {key} = {_short(val)}")
    prov = f.get("provenance")
    if isinstance(prov, h5py.Group):
        lines += _provenance_lines(prov, "")
    return "\n".join(lines)


def _refinement_lines(f: h5py.File) -> list[str]:
    """Position refinement: how far the positions moved, and the fitted affine transform
    (scale, rotation, shear, offset) when there is one."""
    lines = []
    pos, ref = f.get("positions"), f.get("refined_positions")
    if isinstance(pos, h5py.Dataset) and isinstance(ref, h5py.Dataset) and pos.shape == ref.shape:
        d = np.asarray(ref[()], np.float64) - np.asarray(pos[()], np.float64)
        dist = np.hypot(d[:, 0], d[:, 1]) if d.size else np.zeros(1)
        lines.append(f"refined    positions moved by {np.sqrt(np.mean(dist ** 2)):.3f} px RMS, "
                     f"{dist.max():.3f} px at most")
    tr = f.get("position_transform")
    if isinstance(tr, h5py.Dataset) and tr.shape == (3, 2):
        t = np.asarray(tr[()], np.float64)
        m = t[:2].T  # (row, col) -> (row, col)
        scale = np.sqrt(abs(np.linalg.det(m)))
        rotation = np.degrees(np.arctan2(m[1, 0] - m[0, 1], m[0, 0] + m[1, 1]))
        shear = (m[0, 1] + m[1, 0]) / 2
        lines.append(f"affine     scale {scale:.5f}, rotation {rotation:.4f}°, shear {shear:.5f}, "
                     f"offset ({t[2, 0]:.3f}, {t[2, 1]:.3f}) px; T = "
                     + np.array2string(t, precision=5, separator=", ").replace("\n", ""))
    return lines


def _provenance_lines(group: h5py.Group, prefix: str) -> list[str]:
    """``provenance KEY = VALUE`` for attributes, shape and dtype for datasets; subgroups
    (``versions``) as ``group/key``."""
    lines = []
    for key, val in group.attrs.items():
        shown = "null" if isinstance(val, h5py.Empty) else _short(val)
        lines.append(f"provenance {prefix}{key} = {shown}")
    for key, val in group.items():
        if isinstance(val, h5py.Dataset):
            lines.append(f"provenance {prefix}{key} {val.shape} {val.dtype}")
        elif isinstance(val, h5py.Group):
            lines += _provenance_lines(val, f"{prefix}{key}/")
    return lines


def _short(value: object, width: int = 70) -> str:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def inspect_file(path: str | os.PathLike) -> str:
    """A one-screen text summary of a CXI scan, an MDA file or a ptychompi result file.

    A file that cannot be read (truncated, a corrupt compressed chunk) is one DataError line.
    """
    try:
        return _inspect(str(path))
    except DataError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path}: cannot read it ({reason}); the file may be truncated or "
                        "corrupt") from None


def _inspect(p: str) -> str:
    if not Path(p).is_file():
        raise DataError(f"{p}: no such file")
    if p.lower().endswith(".mda"):
        from ..io.mda import read_mda, summary  # noqa: PLC0415

        return summary(read_mda(p))
    if not h5py.is_hdf5(p):
        raise DataError(f"{p}: not a CXI (HDF5), MDA or ptychompi result file; "
                        "inspect knows .cxi, .mda and result .h5 files")
    from ..io.filters import load  # noqa: PLC0415

    load()  # hdf5plugin's filters, if installed: compressed datasets in result files

    with h5py.File(p, "r") as f:
        if isinstance(f.get("object"), h5py.Dataset):
            return _inspect_result(p, f)
        is_cxi = "entry_1" in f
    if is_cxi:
        return _inspect_cxi(p)
    raise DataError(f"{p}: HDF5 file with neither /entry_1 (CXI) nor a root 'object' "
                    "(ptychompi result); inspect cannot summarise it")
