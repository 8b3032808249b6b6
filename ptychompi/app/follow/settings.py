"""The engine's settings while a scan is followed (``run --follow``): what the config asks,
adjusted to positions that arrive over the run (:func:`follow_settings`)."""

from __future__ import annotations

import dataclasses

from ...config.sections import AlgorithmConfig

# DM's share of the iterations after the last row before its refinement when the scan ended
# before algorithm.dm.refine_from (8x8 test scan, rows in by iteration 9 of 30, refine_from
# 20: handing over at 20 1.25x offline's registered error, at 4/5 of the rest (25) 1.04x)
DM_AFTER_SCAN = 0.8


def planned_settings(a: AlgorithmConfig, n_planned: int) -> AlgorithmConfig:
    """``a`` with LSQML's default batch size that of the planned scan of ``n_planned``
    positions (a tenth of the few positions in at the start makes batches of one or two,
    whose probe steps are noise)."""
    if a.name == "lsqml" and a.batch_size is None:
        a = dataclasses.replace(a, batch_size=max(1, -(-n_planned // a.lsqml.batches)))
    return a


def _without_dm_timing(a: AlgorithmConfig, **changes: object) -> AlgorithmConfig:
    """``a`` with DM's stall and fast-fall hand-over rules off (the error history jumps as
    positions come in) and ``changes`` to its DM section."""
    return dataclasses.replace(a, dm=dataclasses.replace(a.dm, refine_patience=None,
                                                         refine_noise_ratio=None, **changes))


def final_settings(a: AlgorithmConfig, iteration: int) -> AlgorithmConfig:
    """The settings once the scan has ended at ``iteration`` (``a``: the planned ones). DM
    that has handed over to its refinement (at ``algorithm.dm.refine_from`` while rows
    arrived) goes on; one that has not runs ``DM_AFTER_SCAN`` of the remaining iterations on
    the whole scan first, or up to ``refine_from`` if that is later (the late rows' positions
    had few DM iterations)."""
    opts = getattr(a, "dm", None)
    if a.name != "dm" or not iteration or opts is None:
        return a
    if opts.refine_from is None and opts.refine_patience is None:
        return a  # no refinement asked for
    if opts.refine_from is not None and iteration >= opts.refine_from:
        return _without_dm_timing(a)
    start = iteration + int((a.iterations - iteration) * DM_AFTER_SCAN)
    return _without_dm_timing(a, refine_from=max(start, opts.refine_from or 0))


def follow_settings(a: AlgorithmConfig, n_planned: int, iteration: int,
                    ended: bool) -> AlgorithmConfig:
    """The engine's settings at ``iteration``: while rows still arrive DM hands over to its
    refinement only at ``algorithm.dm.refine_from`` (as offline; the refinement's LSQML then
    takes in the rows still to come), not on a stall nor later for a fast fall; once the
    scan has ``ended``, :func:`final_settings`."""
    planned = planned_settings(a, n_planned)
    if ended:
        return final_settings(planned, iteration)
    return _without_dm_timing(planned)
