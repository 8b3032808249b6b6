"""Catch-up visits for positions that arrived late (``run --follow``).

Offline, every position is visited once an iteration, ``total`` times in all. A position
that arrived before iteration ``a`` missed ``a`` visits; from its arrival on it is visited up
to ``rate`` times an iteration until it has had as many visits as a position present from
the start (``rate`` times the iterations since it arrived, at most the iterations so far),
so the missed updates are made up soon after the row arrives (while the engines would
otherwise wait for rows). With ``rate = ceil(total / kept)`` even the last row, arriving
with the kept iterations left, ends with ``total`` visits. A function of the arrival
iterations only: the same on every rank and on any rank count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class CatchUp:
    """Arrival iterations of the positions in (in the engines' global order) and the rule."""

    total: int  # the run's iterations
    kept: int  # iterations kept for after the last row
    arrived: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def rate(self) -> int:
        """The most visits of one position in one iteration."""
        return max(2, -(-self.total // max(self.kept, 1)))

    def add(self, count: int, iteration: int) -> None:
        """``count`` positions arrived before ``iteration``."""
        self.arrived = np.concatenate([self.arrived, np.full(count, iteration, np.int64)])

    def visits_by(self, iteration: int) -> np.ndarray:
        """Each position's visits in iterations ``0 .. iteration`` (0-based, inclusive)."""
        since = np.maximum(iteration - self.arrived + 1, 0)
        return np.minimum(self.rate * since, np.where(since > 0, iteration + 1, 0))

    def extra(self, iteration: int) -> np.ndarray:
        """The positions owed visits beyond the regular one in ``iteration``, each listed
        once per extra visit (empty when none is owed)."""
        owed = self.visits_by(iteration) - self.visits_by(iteration - 1) - 1
        owed = np.maximum(owed, 0)
        return np.repeat(np.arange(len(owed)), owed)
