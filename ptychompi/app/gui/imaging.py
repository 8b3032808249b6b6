"""Arrays to PNG for the page: colour maps, percentile contrast and a scale bar (Pillow)."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ...io.export import format_length, has_glyph, scale_bar_length

__all__ = ["COLORMAPS", "render_png", "object_views", "MIN_WIDTH"]

MIN_WIDTH = 384  # small images are enlarged (nearest neighbour) so the bar label is legible

_ANCHORS = {
    "gray": [(0, 0, 0), (255, 255, 255)],
    "viridis": [(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
                (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)],
    "magma": [(0, 0, 4), (28, 16, 68), (79, 18, 123), (129, 37, 129), (181, 54, 122),
              (229, 80, 100), (251, 135, 97), (254, 194, 135), (252, 253, 191)],
    "cyclic": [(226, 217, 226), (120, 150, 195), (80, 60, 150), (47, 20, 54), (140, 45, 70),
               (195, 110, 80), (226, 217, 226)],
}


def _lut(anchors: list[tuple[int, int, int]]) -> np.ndarray:
    x = np.linspace(0, 1, len(anchors))
    t = np.linspace(0, 1, 256)
    a = np.asarray(anchors, np.float64)
    return np.stack([np.interp(t, x, a[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


COLORMAPS = {name: _lut(a) for name, a in _ANCHORS.items()}


def object_views(obj: np.ndarray) -> dict[str, np.ndarray]:
    """Amplitude and phase (global phase removed) of a complex object."""
    total = np.sum(obj, dtype=np.complex128)
    ref = np.conj(total / abs(total)) if abs(total) > 0 and np.isfinite(total) else 1.0
    return {"amplitude": np.abs(obj).astype(np.float32),
            "phase": np.angle(obj * ref).astype(np.float32)}


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans where the system has it (it has µ), else Pillow's default font."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        pass
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _scale_bar(img: Image.Image, pixel_size: float) -> None:
    """White bar with a black outline and its length, bottom left; ``pixel_size`` per image px."""
    w, h = img.size
    if not (pixel_size > 0 and math.isfinite(pixel_size)) or w < 48 or h < 32:
        return
    length = scale_bar_length(w * pixel_size)
    bar = max(1, round(length / pixel_size))
    margin, thick = max(4, h // 40), max(3, h // 90)
    font = _font(max(12, min(w, h) // 16))
    draw = ImageDraw.Draw(img)
    x0, y1 = margin, h - margin
    draw.rectangle([x0, y1 - thick, x0 + bar, y1], fill=(255, 255, 255), outline=(0, 0, 0))
    label = format_length(length)
    if "µ" in label and not has_glyph(font, "µ"):
        label = label.replace("µ", "u")
    top = draw.textbbox((0, 0), label, font=font)
    ty = y1 - thick - 3 - (top[3] - top[1]) - top[1]
    draw.text((x0, ty), label, fill=(255, 255, 255), font=font, stroke_width=2,
              stroke_fill=(0, 0, 0))


def render_png(a: np.ndarray, *, cmap: str = "gray", low: float = 0.5, high: float = 99.5,
               pixel_size: float | None = None, bar: bool = True) -> bytes:
    """``a`` (2-D, real) as a colour-mapped PNG between two percentiles, with a scale bar."""
    if cmap not in COLORMAPS:
        raise ValueError(f"colour map {cmap!r} is not one of {', '.join(COLORMAPS)}")
    low, high = float(low), float(high)
    if not (0 <= low < high <= 100):
        raise ValueError("contrast: need 0 <= low < high <= 100 (percentiles)")
    a = np.asarray(a, np.float64)
    finite = np.isfinite(a)
    if finite.any():
        lo, hi = np.percentile(a[finite], [low, high])
    else:
        lo, hi = 0.0, 1.0
    if not hi > lo:
        lo, hi = lo - 0.5, lo + 0.5
    idx = np.rint(np.clip((np.where(finite, a, lo) - lo) / (hi - lo), 0, 1) * 255)
    img = Image.fromarray(COLORMAPS[cmap][idx.astype(np.uint8)], "RGB")
    factor = 1
    if img.size[0] < MIN_WIDTH:
        factor = math.ceil(MIN_WIDTH / img.size[0])
        img = img.resize((img.size[0] * factor, img.size[1] * factor), Image.Resampling.NEAREST)
    if bar and pixel_size:
        _scale_bar(img, pixel_size / factor)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()
