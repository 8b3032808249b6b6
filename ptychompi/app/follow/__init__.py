"""Reconstruct while a scan's APS row files are written (``ptychompi run --follow``).

:mod:`.watch` tells which row files are complete (rank 0; :mod:`.swmr` the rows of a CXI
file written under HDF5 SWMR), :mod:`.arrivals` turns that into
decisions every rank shares, :mod:`.recon` grows the engines as rows come in and
:mod:`.active` keeps the exchange among the ranks whose tiles have positions.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ...config import Config
from ...errors import ConfigError
from ..api import collective
from .arrivals import Arrivals, Decision
from .recon import FollowReconstruction, is_cxi, planned_config
from .swmr import SwmrWatcher
from .watch import RowWatcher

log = logging.getLogger("ptychompi")

__all__ = ["Arrivals", "Decision", "FollowReconstruction", "RowWatcher", "SwmrWatcher",
           "build_follow", "follow_config"]


def follow_config(cfg: Config, resume: bool = False) -> Config:
    """``cfg`` with follow mode on and the planned scan size; refuses what cannot follow."""
    if resume:
        raise ConfigError("--resume does not combine with --follow; run the finished scan "
                          "without --follow")
    if not cfg.data.path:
        raise ConfigError("data.follow needs data.path: the first APS row file or its printf "
                          "pattern (e.g. scan_%06d.h5)")
    correction = getattr(cfg.algorithm, "position_correction", None)
    if correction is not None and getattr(correction, "enabled", False):
        raise ConfigError("position refinement does not combine with data.follow yet; turn "
                          "algorithm.position_correction off or run the finished scan")
    if cfg.output.checkpoint_every:
        raise ConfigError("output.checkpoint_every does not combine with data.follow (the "
                          "positions change as rows arrive); set it to 0")
    follow = dataclasses.replace(cfg.data.follow, enabled=True)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, follow=follow))
    return planned_config(cfg)


def build_follow(cfg: Config, comm: Any | None, resume: bool = False) -> FollowReconstruction:
    """Wait for the first complete row, then build the reconstruction. Collective."""
    cfg = collective(comm, follow_config, cfg, resume)
    rank = 0 if comm is None else comm.Get_rank()
    d = cfg.data
    watcher: RowWatcher | SwmrWatcher | None = None
    if rank == 0 and is_cxi(cfg):
        watcher = SwmrWatcher(path=str(d.path), n_frames=int(d.n_frames or 0),
                              row_frames=int(d.scan_dims[1]), poll_s=d.follow.poll_s)
    elif rank == 0:
        watcher = RowWatcher(path=str(d.path), first_index=d.first_index,
                             n_frames=int(d.n_frames or 0), dataset=d.dataset,
                             poll_s=d.follow.poll_s, frames_per_file=d.frames_per_file)
    arrivals = Arrivals(d.follow, cfg.algorithm.iterations, watcher, comm)
    if rank == 0:
        log.info("following %s: waiting for the first complete row (%d frames planned)",
                 d.path, d.n_frames)
    first = arrivals.decide(0)
    recon = FollowReconstruction(cfg, comm, arrivals, first)
    if rank == 0 and first.ended:
        log.info("%d of %d planned rows in: the scan has ended", first.rows, first.planned)
    elif rank == 0:
        log.info("%d of %d planned rows in; reconstructing while the others arrive "
                 "(%d iterations kept for after the last row)", first.rows, first.planned,
                 arrivals.keep)
    return recon
