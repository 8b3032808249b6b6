"""Extra visits of positions within an iteration (``run --follow``: positions that arrived
late catch up on the updates they missed).

An engine's ``extra_visits`` (None, or indices with repeats: a position listed k times is
visited k more times this iteration) is turned into *rounds*: round r holds the positions
owed more than r visits, in a seeded random order, so no round repeats a position.
Without extra visits nothing is drawn from the generator (the offline trajectory).
"""

from __future__ import annotations

import numpy as np


def extra_rounds(rng: np.random.Generator, extra: np.ndarray | None) -> list[np.ndarray]:
    """The rounds of ``extra`` (see the module docstring); [] when there is none."""
    if extra is None or not len(extra):
        return []
    idx, counts = np.unique(np.asarray(extra, np.int64), return_counts=True)
    return [rng.permutation(idx[counts > r]) for r in range(int(counts.max()))]


def visit_order(rng: np.random.Generator, n: int, extra: np.ndarray | None) -> np.ndarray:
    """A seeded random order of the ``n`` positions followed by the rounds of ``extra``."""
    return np.concatenate([rng.permutation(n), *extra_rounds(rng, extra)])
