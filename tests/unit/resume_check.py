"""A run checkpointed part way and resumed against the uninterrupted run (shared by tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptychompi.app.api import Reconstruction
from ptychompi.app.checkpoint import resume, write_checkpoint


def assert_resumed_equals_whole(cfg: dict, scan, folder: Path, at: int) -> np.ndarray:
    """Run ``cfg`` on ``scan`` whole, and again checkpointed after ``at`` iterations and
    resumed: object, probe and refined positions equal bit for bit. Returns the whole run's
    refined positions."""
    with Reconstruction(cfg, scan=scan) as whole:
        whole.run()
        expected = (whole.object, whole.probe, whole.refined_positions())
    with Reconstruction(cfg, scan=scan) as first:
        first.step(at)
        write_checkpoint(first, folder)
    with Reconstruction(cfg, scan=scan) as again:
        assert resume(again, folder) == at
        again.run()
        np.testing.assert_array_equal(again.object, expected[0])
        np.testing.assert_array_equal(again.probe, expected[1])
        np.testing.assert_array_equal(again.refined_positions(), expected[2])
    return expected[2]
