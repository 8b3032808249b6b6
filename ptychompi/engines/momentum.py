"""mPIE's momentum (Maiden, Johnson & Li 2017, "Further improvements to the ptychographical
iterative engine", Optica 4, 736) on ePIE's object, once per pass of the scan."""

from __future__ import annotations

from typing import Any

import numpy as np


class ObjectMomentum:
    """After each pass: ``v ← η v + (O − O_last)``, ``O += g v`` (in place), ``O_last = O``.

    ``η`` (friction) and ``g`` (gain) as in mPIE, with the pass of the whole scan as its
    period ``T``; ``g = 0`` switches it off. The last object and the velocity are the
    engine's checkpoint state (:meth:`state`, :meth:`restore`)."""

    def __init__(self, friction: float, gain: float) -> None:
        self.friction = float(friction)
        self.gain = float(gain)
        self.last: Any = None
        self.velocity: Any = None

    @property
    def active(self) -> bool:
        return self.gain > 0

    def mark(self, obj: Any) -> None:
        """Remember ``obj`` as the start of the first pass (later passes start where the
        previous push left the object)."""
        if self.active and self.last is None:
            self.last = obj.copy()

    def push(self, obj: Any) -> None:
        """The pass from the last mark to ``obj`` (updated in place) and its velocity."""
        if not self.active or self.last is None:
            return
        change = obj - self.last
        if self.velocity is None:
            self.velocity = change
        else:
            self.velocity *= self.friction
            self.velocity += change
        obj += self.gain * self.velocity
        self.last[...] = obj

    def reset(self) -> None:
        self.last = self.velocity = None

    def state(self) -> dict[str, Any]:
        if self.last is None:
            return {}
        out = {"momentum_last": self.last}
        if self.velocity is not None:
            out["momentum_velocity"] = self.velocity
        return out

    def restore(self, state: dict[str, np.ndarray], xp: Any, dtype: Any) -> None:
        self.reset()
        if "momentum_last" in state:
            self.last = xp.asarray(state["momentum_last"], dtype=dtype)
        if "momentum_velocity" in state:
            self.velocity = xp.asarray(state["momentum_velocity"], dtype=dtype)
