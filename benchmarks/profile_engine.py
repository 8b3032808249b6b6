"""A few iterations of one engine on the simulated scan, for a sampling profiler.

    py-spy record --format raw -o dm.txt -- python benchmarks/profile_engine.py --engine dm
    python benchmarks/profile_engine.py --engine lsqml --cprofile   # no py-spy: cProfile

``--cprofile`` prints the top functions by own time and by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time

import common

import ptychompi


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="dm", choices=("epie", "dm", "lsqml"))
    ap.add_argument("--grid", type=int, default=30)
    ap.add_argument("--frame", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--subpixel", default="on", choices=("on", "off"))
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--cprofile", action="store_true")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    scan, probe_m, _ = common.make_scan(args.grid, args.frame)
    cfg = common.make_config(args.engine, args.iterations + 1, probe_m, args.subpixel == "on",
                             "cpu", args.workers)
    recon = ptychompi.Reconstruction(cfg, None, scan=scan)
    recon.step()  # warm-up (FFT plans)
    prof = cProfile.Profile() if args.cprofile else None
    t0 = time.perf_counter()
    if prof is not None:
        prof.enable()
    recon.step(args.iterations)
    if prof is not None:
        prof.disable()
    print(f"# {args.engine}: {(time.perf_counter() - t0) / args.iterations:.3f} s/iteration",
          file=sys.stderr)
    if prof is not None:
        stats = pstats.Stats(prof, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
