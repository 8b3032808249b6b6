"""Every engine on the scan matrix (:mod:`ptychompi.sim.matrix`) with default settings.

Prints a table of object errors (registered, global factor and phase ramp removed, over the
region lit at >= 10 %) and final Fourier errors; NaN or a stopped run shows as ``diverged``.

    python benchmarks/robustness.py --grid 20 --frame 128 --iterations 100
    python benchmarks/robustness.py --cases pinhole-1e6 --engines dm --set 'dm={refine_from: 30}'
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import yaml

from ptychompi.sim.evaluate import evaluate
from ptychompi.sim.matrix import make_scan, matrix


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, default=20)
    ap.add_argument("--frame", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--engines", default="epie,dm,lsqml")
    ap.add_argument("--cases", default="", help="comma-separated substrings of case names")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="algorithm option for every run (YAML value)")
    ap.add_argument("--json", help="write the rows to this file")
    args = ap.parse_args(argv)
    algorithm = {}
    for pair in args.set:
        key, value = pair.split("=", 1)
        algorithm[key] = yaml.safe_load(value)
    wanted = [w for w in args.cases.split(",") if w]
    cases = [c for c in matrix(args.grid, args.frame)
             if not wanted or any(w in c.name for w in wanted)]
    engines = args.engines.split(",")
    rows = []
    print(f"| case | {' | '.join(engines)} |")
    print(f"|---|{'---|' * len(engines)}")
    for case in cases:
        scan = make_scan(case)
        cells = []
        for engine in engines:
            t0 = time.perf_counter()
            row = evaluate(scan, engine, args.iterations, **algorithm)
            row["wall_s"] = time.perf_counter() - t0
            rows.append(row)
            cells.append("diverged" if not row["finite"] else
                         f"{row['object_error']:.3f} ({row['fourier_error']:.2e})")
        print(f"| {case.name} | {' | '.join(cells)} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all(r["finite"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
