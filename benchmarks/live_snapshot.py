"""Cost of the GUI's live snapshots (ptychompi.app.live) relative to the iterations.

Builds the 30x30 benchmark scan (128² frames, common.make_scan), runs ``--iterations``
iterations of an engine and, exactly as the runner does, a :class:`LiveWriter` update every
``--every`` iterations (the default ``output.live_every``). Prints the median seconds per
iteration, the median seconds per snapshot, and the cost: snapshot seconds per iteration
(one snapshot per ``every`` iterations) over the iteration seconds.

    python benchmarks/live_snapshot.py --grid 30 --frame 128 --engine dm --iterations 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import common

from ptychompi.app.api import Reconstruction
from ptychompi.app.live import LiveWriter
from ptychompi.config import OutputConfig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", type=int, default=30)
    p.add_argument("--frame", type=int, default=128)
    p.add_argument("--engine", default="dm", choices=("epie", "dm", "lsqml"))
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--every", type=int, default=OutputConfig().live_every)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)

    scan, probe_m, info = common.make_scan(args.grid, args.frame)
    total = args.warmup + args.iterations
    cfg = common.make_config(args.engine, total, probe_m, True, args.device)
    recon = Reconstruction(cfg, scan=scan)
    steps: list[float] = []
    snaps: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ptychompi-live-") as tmp:
        live = LiveWriter(tmp, args.every, total, rank=0)
        for _ in range(total):
            t0 = time.perf_counter()
            recon.step()
            t1 = time.perf_counter()
            if recon.iteration > args.warmup:
                steps.append(t1 - t0)
            if live.due(recon.iteration):
                live.update(recon)
                if recon.iteration > args.warmup:
                    snaps.append(time.perf_counter() - t1)
    recon.close()
    it_s = statistics.median(steps)
    snap_s = statistics.median(snaps)
    cost = snap_s / args.every / it_s
    out = {**info, "engine": args.engine, "every": args.every, "iteration_s": it_s,
           "snapshot_s": snap_s, "snapshots": len(snaps), "cost_fraction": cost,
           "object_shape": list(recon.layout.object_shape)}
    print(f"{args.grid}x{args.grid}, {args.frame}², {args.engine}: {it_s * 1e3:.1f} ms/it, "
          f"snapshot {snap_s * 1e3:.1f} ms (median of {len(snaps)}) every {args.every} "
          f"iterations = {100 * cost:.2f} % of the iteration time")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
