"""Exports of refined positions (issue 18): a ptychopy position list and a PNG error plot.

* csv: ``<stem>_positions_refined.csv``, ptychopy's ``-lf`` position list (one ``row, col``
  line per frame, metres), so the refined positions can be given back to ptychopy or to a
  later run (``data.position_file``).
* png: ``<stem>_positions.png``, every input position as a dot with an arrow to its refined
  position, the arrows scaled up (the factor is written in the corner).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .atomic import atomic_path

PLOT_PX = 640  # the plot's longer side
ARROW_FRACTION = 0.08  # the longest arrow as a fraction of the plot's longer side


def write_positions_csv(path: str | os.PathLike, positions_px: np.ndarray,
                        pixel_size: float) -> None:
    """Positions (N, 2) of object pixels as ptychopy's position list in metres."""
    metres = np.asarray(positions_px, np.float64).reshape(-1, 2) * float(pixel_size)
    with atomic_path(Path(path)) as tmp:
        np.savetxt(tmp, metres, fmt="%.9e", delimiter=", ")


def arrow_scale(positions: np.ndarray, refined: np.ndarray) -> float:
    """The factor the arrows are drawn with: the longest becomes ``ARROW_FRACTION`` of the
    scan's extent (1 when nothing moved)."""
    d = np.hypot(*(np.asarray(refined) - np.asarray(positions)).T)
    extent = float(np.ptp(positions, axis=0).max()) if len(positions) > 1 else 1.0
    longest = float(d.max()) if d.size else 0.0
    if longest <= 0 or extent <= 0:
        return 1.0
    return ARROW_FRACTION * extent / longest


def write_position_plot(path: str | os.PathLike, positions: np.ndarray,
                        refined: np.ndarray) -> float:
    """The error plot (see the module); returns the arrows' scale factor."""
    pos = np.asarray(positions, np.float64).reshape(-1, 2)
    new = np.asarray(refined, np.float64).reshape(-1, 2)
    scale = arrow_scale(pos, new)
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    span = np.maximum(hi - lo, 1e-9)
    pad = 0.1 * span.max() + 1.0
    fit = (PLOT_PX - 1) / float((span + 2 * pad).max())
    h, w = (np.ceil((span + 2 * pad) * fit).astype(int) + 1).tolist()
    img = Image.new("RGB", (max(w, 64), max(h, 64)), "white")
    draw = ImageDraw.Draw(img)

    def xy(p: np.ndarray) -> tuple[float, float]:  # (row, col) -> image (x, y)
        return float((p[1] - lo[1] + pad) * fit), float((p[0] - lo[0] + pad) * fit)

    for a, b in zip(pos, new, strict=True):
        x0, y0 = xy(a)
        x1, y1 = xy(a + scale * (b - a))
        draw.line([(x0, y0), (x1, y1)], fill=(200, 30, 30), width=2)
        draw.ellipse([x0 - 2, y0 - 2, x0 + 2, y0 + 2], fill=(20, 20, 20))
        length = np.hypot(x1 - x0, y1 - y0)
        if length > 4:  # the head: two short strokes back from the tip
            ux, uy = (x1 - x0) / length, (y1 - y0) / length
            for sign in (1, -1):
                draw.line([(x1, y1), (x1 - 5 * ux - sign * 3 * uy, y1 - 5 * uy + sign * 3 * ux)],
                          fill=(200, 30, 30), width=2)
    rms = float(np.sqrt(((new - pos) ** 2).sum(axis=1).mean())) if len(pos) else 0.0
    draw.text((6, 4), f"input -> refined, arrows x{scale:.3g}; RMS move {rms:.3g} px",
              fill=(0, 0, 0))
    with atomic_path(Path(path)) as tmp:
        img.save(tmp, format="PNG")
    return scale
