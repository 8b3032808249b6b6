"""Tile merging: the illumination-weighted object average over the halos and the probe mean
over the ranks (the part of :class:`~ptychompi.engines.base.Engine` that reconciles tiles
whose exchanges are spaced out)."""

from __future__ import annotations

from typing import Any


class TileMerging:
    """Object and probe averages across ranks (an :class:`Engine` mixin: it reads
    ``backend``, ``exchange``, ``data``, ``rows``, ``cols``, ``object`` and ``probe``)."""

    def illumination(self) -> Any:
        """Σ_j S_jᵀ Σ_k |P_k|² over this tile's positions (the assembly weight)."""
        xp = self.backend.xp
        weight = xp.zeros(self.data.box_shape, dtype=self.backend.real_dtype)
        power = (xp.abs(self.probe) ** 2).sum(axis=0).astype(self.backend.real_dtype)
        n = len(self.rows)
        values = xp.broadcast_to(power, (n, *power.shape))
        self.backend.ops.scatter_add(weight, values, self.rows, self.cols)
        return weight

    def merge_object(self) -> None:
        """Illumination-weighted average of the tiles over their halos (halo sum of w·O, w)."""
        if self.exchange.size == 1:
            return
        xp = self.backend.xp
        w = self.illumination()
        num = self.object * w
        den = w.copy()
        self.exchange.halo_sum(num, den)
        lit = den > 0
        self.object = xp.where(lit, num / xp.where(lit, den, 1), self.object).astype(
            self.object.dtype)

    def average_probe(self) -> None:
        """Mean of the ranks' probes (for engines whose probe drifts between shares)."""
        if self.exchange.size == 1:
            return
        self.probe = self.exchange.allreduce(self.probe) / self.exchange.size
