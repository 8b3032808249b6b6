"""Exports of a result: TIFF (float32 and 8-bit), PNG previews with a scale bar, ptychopy CSV.

File names start with ``<stem>_`` (the result file's stem, ``result`` by default):

* tiff: ``object_amplitude.tif``, ``object_phase.tif`` (float32; phase in radians after removing
  the object's global phase) and ``*_8bit.tif`` versions scaled between the 0.5 and 99.5
  percentiles; ``probe_amplitude.tif`` / ``probe_phase.tif`` (+ ``_8bit``) with one page per
  mode. Resolution tags carry the pixel size (ImageJ/Fiji calibration in µm).
* png: ``object_amplitude.png``, ``object_phase.png``, ``probe.png`` (mode amplitudes side by
  side), 8-bit greyscale with a labelled scale bar in the bottom-left corner.
* csv: ptychopy's ``<stem>_object_0.csv`` and ``<stem>_probes_0.csv`` (``re+imj`` elements,
  6 significant digits, ``", "`` separators, probe modes stacked vertically).
* with refined positions, png adds ``positions.png`` (arrows from input to refined position)
  and csv ``positions_refined.csv`` (ptychopy's position list, metres).

Every file is written to ``<name>.tmp-<pid>`` and renamed when complete: a full disk leaves
the files finished before it and no partial one.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageDraw, ImageFont

from ..errors import DataError, PtychompiError, os_reason
from .atomic import atomic_path

__all__ = ["export_result", "export_arrays", "estimate_export_bytes", "read_ptychopy_csv",
           "write_ptychopy_csv", "split_probe_modes", "scale_to_uint8", "scale_bar_length",
           "format_length"]

FORMATS = ("tiff", "png", "csv")
PREVIEW_MAX_PX = 4096  # PNG previews larger than this are reduced (the bar follows)


# ----------------------------------------------------------------------------- helpers
def scale_to_uint8(a: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Linear map of ``a`` to 0..255 between two percentiles of its finite values."""
    a = np.asarray(a, dtype=np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, np.uint8)
    lo, hi = np.percentile(a[finite], [low_pct, high_pct])
    if not hi > lo:
        lo, hi = lo - 0.5, lo + 0.5
    out = np.clip((np.where(finite, a, lo) - lo) / (hi - lo), 0.0, 1.0)
    return np.rint(out * 255).astype(np.uint8)


def _object_phase(obj: np.ndarray) -> np.ndarray:
    """Phase of ``obj`` with its global phase (of the amplitude-weighted mean) removed."""
    total = np.sum(obj, dtype=np.complex128)
    ref = total / abs(total) if abs(total) > 0 and np.isfinite(total) else 1.0
    return np.angle(obj * np.conj(ref)).astype(np.float32)


def scale_bar_length(width_m: float) -> float:
    """A round length (1, 2 or 5 × 10^n metres) close to a fifth of ``width_m``."""
    target = width_m / 5.0
    if not (target > 0 and math.isfinite(target)):
        raise ValueError(f"cannot size a scale bar for a width of {width_m} m")
    exp = math.floor(math.log10(target))
    candidates = [m * 10.0 ** e for e in (exp - 1, exp, exp + 1) for m in (1, 2, 5)]
    return min(candidates, key=lambda c: abs(math.log(c / target)))


def format_length(metres: float) -> str:
    """``2e-6`` -> ``"2 µm"``: the SI prefix that keeps the number in 1..999."""
    for unit, scale in (("km", 1e3), ("m", 1.0), ("mm", 1e-3), ("µm", 1e-6), ("nm", 1e-9),
                        ("pm", 1e-12)):
        if metres >= scale * 0.9995:
            return f"{metres / scale:.3g} {unit}"
    return f"{metres / 1e-15:.3g} fm"


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font, scaled where Pillow can (FreeType), else its bitmap font."""

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # old Pillow or no FreeType: bitmap font
        return ImageFont.load_default()


def has_glyph(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, char: str) -> bool:
    """False when ``font`` draws ``char`` as its missing-glyph box (Pillow's default has no µ)."""
    try:
        return bytes(font.getmask(char)) != bytes(font.getmask("\uffff"))
    except (UnicodeEncodeError, ValueError, OSError):
        return False


def _draw_scale_bar(img: Image.Image, pixel_size: float, ref_width_px: int) -> None:
    """White bar with a black outline and its length, in the bottom-left corner of ``img``."""
    w, h = img.size
    if not (pixel_size > 0 and math.isfinite(pixel_size)) or w < 32 or h < 24:
        return
    length = scale_bar_length(ref_width_px * pixel_size)
    bar_px = max(1, round(length / pixel_size))
    margin = max(3, h // 40)
    thick = max(2, h // 100)
    font = _font(max(10, min(w, h) // 25))
    draw = ImageDraw.Draw(img)
    x0, y1 = margin, h - margin
    draw.rectangle([x0, y1 - thick, x0 + bar_px, y1], fill=255, outline=0)
    label = format_length(length)
    if "µ" in label and not has_glyph(font, "µ"):
        label = label.replace("µ", "u")
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    ty = y1 - thick - 2 - (bottom - top) - top - 1
    for dx in (-1, 0, 1):  # black outline, then the white text on top
        for dy in (-1, 0, 1):
            if dx or dy:
                draw.text((x0 + dx, ty + dy), label, fill=0, font=font)
    draw.text((x0, ty), label, fill=255, font=font)


def _preview(a8: np.ndarray, pixel_size: float, ref_width_px: int, path: Path) -> None:
    """Save an 8-bit PNG (reduced beyond PREVIEW_MAX_PX) with its scale bar."""
    img = Image.fromarray(a8)
    factor = max(img.size) / PREVIEW_MAX_PX
    if factor > 1:
        size = (max(1, round(img.size[0] / factor)), max(1, round(img.size[1] / factor)))
        img = img.resize(size, Image.Resampling.BOX)
        pixel_size *= a8.shape[1] / size[0]
        ref_width_px = round(ref_width_px * size[0] / a8.shape[1])
    _draw_scale_bar(img, pixel_size, ref_width_px)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", optimize=False)


def _side_by_side(pages: np.ndarray, gap: int = 2) -> np.ndarray:
    """(K, M, M) uint8 -> (M, K·M + (K-1)·gap) with black gaps."""
    k, m, n = pages.shape
    out = np.zeros((m, k * n + (k - 1) * gap), np.uint8)
    for i in range(k):
        out[:, i * (n + gap): i * (n + gap) + n] = pages[i]
    return out


# ----------------------------------------------------------------------------- CSV
def _csv_fmt(ncols: int) -> list[str]:
    return ["%g%+gj"] * ncols


def write_ptychopy_csv(path: str | os.PathLike, a: np.ndarray) -> None:
    """One array row per line, ``re+imj`` elements (``%g``) separated by ``", "``."""
    a = np.asarray(a)
    if a.ndim == 3:
        a = a.reshape(-1, a.shape[-1])
    if a.ndim != 2:
        raise ValueError(f"ptychopy CSV holds 2-D arrays, got shape {a.shape}")
    a = a.astype(np.complex128)
    # -0.0 imaginary parts print as "+0j" (C++ writes "+-0j", which nobody can parse)
    a.imag[a.imag == 0] = 0.0
    np.savetxt(path, a, fmt=_csv_fmt(a.shape[1]), delimiter=", ")


_I_SUFFIX = re.compile(r"([0-9.]|inf|nan)[iI](?=\s*(?:,|\)|$))", re.MULTILINE)


def read_ptychopy_csv(path: str | os.PathLike) -> np.ndarray:
    """Read a ptychopy CSV array (``a+bj``, ``(a+bj)``, ``a+bi``, plain reals) as complex 2-D.

    A probe file holds its modes stacked vertically; :func:`split_probe_modes` splits them.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise DataError(f"CSV file {str(p)!r} not found; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{p}: cannot read it as text ({exc})") from None
    if "i" in text.lower().replace("inf", ""):  # the a+bi spelling (rare: skip the regex)
        text = _I_SUFFIX.sub(r"\1j", text)
    text = text.replace("(", "").replace(")", "")
    rows = []
    for line in text.splitlines():
        line = line.strip().rstrip(",").strip()
        if line and not line.startswith("#"):
            rows.append(line.replace(" ", ""))
    if not rows:
        raise DataError(f"{p}: empty CSV file; expected rows of complex values like 1+2j")
    ncols = [r.count(",") + 1 for r in rows]
    if len(set(ncols)) != 1:
        bad = next(i for i, n in enumerate(ncols) if n != ncols[0])
        raise DataError(f"{p}: line {bad + 1} has {ncols[bad]} values but line 1 has "
                        f"{ncols[0]}; every row must have the same length")
    try:
        vals = np.loadtxt(rows, delimiter=",", dtype=np.complex128, ndmin=2, comments=None)
    except ValueError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "unparsable value"
        raise DataError(f"{p}: not a ptychopy complex CSV ({reason}); expected values like "
                        "1.5-0.2j, (1.5-0.2j) or 1.5-0.2i") from None
    return vals.reshape(len(rows), ncols[0])


def split_probe_modes(a: np.ndarray) -> np.ndarray:
    """ptychopy's stacked probe ((K·M) × M) -> (K, M, M)."""
    a = np.asarray(a)
    if a.ndim == 3:
        return a
    rows, cols = a.shape
    if cols == 0 or rows % cols:
        raise DataError(f"a probe CSV of {rows} x {cols} values is not K stacked square "
                        "modes (rows must be a multiple of the columns)")
    return a.reshape(rows // cols, cols, cols)


# ----------------------------------------------------------------------------- exports
def _tiff_pair(path_float: Path, path_8bit: Path, a: np.ndarray, pixel_size: float) -> None:
    """Float32 and percentile-scaled 8-bit ImageJ TIFFs; a 3-D array gives one page per mode."""
    a = np.asarray(a, np.float32)
    meta: dict = {"axes": "ZYX" if a.ndim == 3 else "YX"}
    kw: dict = {}
    if pixel_size > 0 and math.isfinite(pixel_size):
        per_um = 1e-6 / pixel_size  # pixels per micrometre
        kw["resolution"] = (per_um, per_um)
        meta["unit"] = "um"
    for path, data in ((path_float, a), (path_8bit, scale_to_uint8(a))):
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, data, imagej=True, metadata=meta, photometric="minisblack",
                             **kw)


def export_arrays(obj: np.ndarray, probe: np.ndarray, pixel_size: float, to: str,
                  out_dir: str | os.PathLike, stem: str = "result",
                  positions: np.ndarray | None = None,
                  refined_positions: np.ndarray | None = None) -> list[str]:
    """Write the ``to`` export (tiff | png | csv) of an object and probe; return the paths.
    With ``refined_positions`` (and the input ``positions``) png adds the position-error plot
    and csv the refined position list (:mod:`ptychompi.io.positions_export`)."""
    if to not in FORMATS:
        raise PtychompiError(f"export format {to!r} is not one of {', '.join(FORMATS)}")
    obj = np.asarray(obj)
    probe = np.asarray(probe)
    if probe.ndim == 2:
        probe = probe[None]
    if obj.ndim != 2 or probe.ndim != 3:
        raise DataError(f"expected an (H, W) object and a (K, M, M) probe, got {obj.shape} "
                        f"and {probe.shape}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PtychompiError(f"cannot create the export folder {str(out)!r} "
                             f"({exc.strerror or exc}); give --out a writable folder") from None
    prefix = f"{stem}_" if stem else ""
    written: list[Path] = []
    try:
        _write_export(obj, probe, pixel_size, to, out, prefix, written)
        if refined_positions is not None and positions is not None and to != "tiff":
            _write_positions(positions, refined_positions, pixel_size, to, out, prefix, written)
    except OSError as exc:
        failed = written[-1] if written else out
        raise PtychompiError(
            f"cannot write the {to} export {failed} ({os_reason(exc)}); the files "
            f"written before it are complete and no partial file is left: free space and "
            f"export again") from None
    return [str(p) for p in written]


def _write_export(obj: np.ndarray, probe: np.ndarray, pixel_size: float, to: str, out: Path,
                  prefix: str, written: list[Path]) -> None:
    """Write one format's files, appending each path to ``written`` before writing it."""
    if to == "csv":
        for name, arr in (("object_0", obj), ("probes_0", probe)):
            written.append(out / f"{prefix}{name}.csv")
            with atomic_path(written[-1]) as tmp:
                write_ptychopy_csv(tmp, arr)
    elif to == "tiff":
        for name, arr in (("object_amplitude", np.abs(obj)), ("object_phase", _object_phase(obj)),
                          ("probe_amplitude", np.abs(probe)), ("probe_phase", np.angle(probe))):
            f, f8 = out / f"{prefix}{name}.tif", out / f"{prefix}{name}_8bit.tif"
            written += [f, f8]
            _tiff_pair(f, f8, arr, pixel_size)
    else:
        m = probe.shape[-1]
        for name, a8, ref in (
                ("object_amplitude", scale_to_uint8(np.abs(obj)), obj.shape[1]),
                ("object_phase", scale_to_uint8(_object_phase(obj)), obj.shape[1]),
                ("probe", _side_by_side(scale_to_uint8(np.abs(probe))), m)):
            written.append(out / f"{prefix}{name}.png")
            _preview(a8, pixel_size, ref, written[-1])


def _write_positions(positions: np.ndarray, refined: np.ndarray, pixel_size: float, to: str,
                     out: Path, prefix: str, written: list[Path]) -> None:
    from .positions_export import write_position_plot, write_positions_csv  # noqa: PLC0415

    if to == "csv":
        written.append(out / f"{prefix}positions_refined.csv")
        write_positions_csv(written[-1], refined, pixel_size)
    else:
        written.append(out / f"{prefix}positions.png")
        write_position_plot(written[-1], positions, refined)


def estimate_export_bytes(object_shape: tuple[int, ...], probe_shape: tuple[int, ...],
                          formats: list[str] | tuple[str, ...]) -> int:
    """An upper bound of the bytes the exports in ``formats`` write (hdf5 is the result)."""
    obj = int(np.prod(object_shape))
    probe = int(np.prod(probe_shape))
    total = 0
    for fmt in set(formats):
        if fmt == "csv":  # "-1.23457e-305+1.23457e-305j, " at most per element
            total += 30 * (obj + probe) + 2 * 4096
        elif fmt == "tiff":  # float32 and 8-bit pages of amplitude and phase, plus headers
            total += 2 * (4 + 1) * (obj + probe) + 8 * 8192
        elif fmt == "png":  # 8-bit previews, stored at worst as raw rows
            rows = int(object_shape[0]) + int(probe_shape[-2])
            total += int(1.01 * (2 * obj + probe + 3 * rows)) + 3 * 8192
            total += 3 * 640 * 640 + 8192  # the position plot, when positions were refined
    return total


def export_result(result_path: str | os.PathLike, to: str,
                  out_dir: str | os.PathLike | None = None) -> list[str]:
    """Export a result file (``ptychompi export``); ``out_dir`` defaults to its folder."""
    from .results import read_result  # noqa: PLC0415

    if to not in FORMATS:
        raise PtychompiError(f"export format {to!r} is not one of {', '.join(FORMATS)}")
    res = read_result(result_path)
    p = Path(result_path)
    return export_arrays(res.object, res.probe, res.pixel_size, to,
                         out_dir if out_dir is not None else p.parent, stem=p.stem,
                         positions=res.positions, refined_positions=res.refined_positions)
