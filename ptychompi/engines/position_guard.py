"""The position refinement's misfit guard (issue 18): refinement that makes the data fit worse
stops, and the positions go back to those of the best fit.

Positions and the model are fitted together. Where the scan has weakly determined modes (a
strongly curved or near-field beam trades the scan's scale and local shifts against the
probe's curvature and the object's phase), the joint iteration can drift along them, and the
engine's error then rises above what it had reached: a measure the data give, with no truth
needed. The guard watches the engine's error (one per iteration, the same on every rank): once
the positions have moved for ``window`` iterations, if every error of the last ``window``
iterations exceeds the best so far by more than ``rise`` (a falling error never does: its
latest value is its best), the refinement halts for the rest of the run and every position
returns to where it was in the iteration with the best error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RISE = 0.1  # the errors of a whole window may exceed the best by up to this fraction
WINDOW = 5  # iterations


class MisfitGuard:
    """One rank's record: the best error so far and the positions it was reached with."""

    def __init__(self, rise: float = RISE, window: int = WINDOW) -> None:
        self.rise, self.window = rise, window
        self.best_error = np.inf
        self.best_positions: np.ndarray | None = None
        self.ran_with: np.ndarray | None = None  # the positions of the iteration in progress
        self.first_move: int | None = None  # iteration after which positions first moved
        self.halted = False

    def moved(self, iteration: int) -> None:
        """The positions moved after ``iteration`` (0-based)."""
        if self.first_move is None:
            self.first_move = iteration

    def observe(self, errors: Sequence[float], positions: np.ndarray) -> np.ndarray | None:
        """Before the next iteration, with ``errors`` up to the last one and the ``positions``
        it will run with: the positions to return to when the refinement halts now, else
        None."""
        if errors and self.ran_with is not None and errors[-1] < self.best_error:
            self.best_error = float(errors[-1])
            self.best_positions = self.ran_with
        back = None
        if (not self.halted and self.first_move is not None and self.best_positions is not None
                and len(errors) - 1 - self.first_move >= self.window
                and min(errors[-self.window:]) > (1.0 + self.rise) * self.best_error):
            self.halted, back = True, self.best_positions
        self.ran_with = np.array(back if back is not None else positions, np.float64)
        return back

    def state(self) -> dict[str, np.ndarray]:
        """The record for a checkpoint: global numbers, and per-position arrays."""
        first = -1 if self.first_move is None else self.first_move
        out = {"position_guard": np.array([self.best_error, float(self.halted), float(first)])}
        if self.best_positions is not None:
            out["position_best"] = self.best_positions.copy()
        if self.ran_with is not None:
            out["position_ran_with"] = self.ran_with.copy()
        return out

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Continue from :meth:`state`'s output (a checkpoint without it: a fresh record)."""
        guard = state.get("position_guard")
        if guard is None:
            return
        best, halted, first = (float(v) for v in np.asarray(guard, np.float64).reshape(3))
        self.best_error, self.halted = best, bool(halted)
        self.first_move = None if first < 0 else int(first)
        for key, name in (("position_best", "best_positions"), ("position_ran_with",
                                                                 "ran_with")):
            value = state.get(key)
            setattr(self, name, None if value is None
                    else np.asarray(value, np.float64).reshape(-1, 2))
