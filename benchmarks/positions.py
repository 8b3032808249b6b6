"""Position refinement (issue 18): quality on scans with wrong positions, and its cost.

Quality: a simulated scan (:mod:`ptychompi.sim.matrix`) is reconstructed from its true
positions, from wrong ones (random errors, a 2 % scale error with a 1° rotation, or both)
without refinement, and from the wrong ones with refinement. Prints the RMS position error
(mean offset removed) and the registered object error of each run.

Cost: seconds per iteration of each engine with refinement (defaults, and updates after every
iteration) against the same engine without it, paired per round (the ratio is the issue's
target, at most 1.3).

    python benchmarks/positions.py --grid 8 --iterations 100 --runs 3 --skip-cost [--bins 0]
    python benchmarks/positions.py --grid 12 --object photo --overlap 0.62 --photons 1e6 \
        --beam 0.3125 --rms 1 --skip-cost   (a scan it was not tuned on)
    python benchmarks/positions.py --skip-quality --cost-grid 20 --cost-frame 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import numpy as np

from ptychompi.app.api import Reconstruction
from ptychompi.sim.matrix import Case, make_scan
from ptychompi.sim.position_errors import KINDS, perturb, with_positions
from ptychompi.sim.position_runs import run_from


def reconstruct(scan: Any, positions: np.ndarray, engine: str, iterations: int,
                correction: dict, seed: int = 0) -> dict:
    """One run from ``positions`` (``seed``: the engine's random order); the position and
    object errors against the truth."""
    run = run_from(scan, positions, engine, iterations, correction, seed)
    return {"position_rms_px": run.position_rms_px, "object_error": run.object_error,
            "seconds": run.seconds}


def quality(args: argparse.Namespace) -> list[dict]:
    """The table of the first run (errors drawn with ``seed + 1``, engine seed 0) and, with
    ``--runs R``, each case's ratio refined / true positions over R runs (errors drawn with
    ``seed + 1 + i``, engine seed ``i``: a run's final error depends on the basin it ends in)."""
    case = Case(grid=args.grid, frame=args.frame, diameter_px=args.frame * args.beam,
                overlap=args.overlap, photons=args.photons, object=args.object,
                probe=args.probe, pattern=args.pattern, seed=args.seed)
    scan = make_scan(case)
    rows = []
    print(f"quality: {case.name}, {args.iterations} iterations (position RMS px / object "
          f"error; ratio: refined / true positions, {args.runs} run(s))")
    print("| engine | errors | true positions | not refined | refined | ratio (median) |")
    print("|---|---|---|---|---|---|")
    every: list[float] = []
    for engine in args.engines.split(","):
        truths = [reconstruct(scan, scan.positions_px, engine, args.iterations, {}, i)
                  for i in range(args.runs)]
        for kind in args.kinds.split(","):
            runs = []
            for i in range(args.runs):
                given = perturb(scan.positions_px, kind,
                                np.random.default_rng(args.seed + 1 + i), rms_px=args.rms)
                runs.append(reconstruct(scan, given, engine, args.iterations,
                                        {"enabled": True, "affine": kind != "random",
                                         "subpixel_bins": args.bins, **args.correction}, i))
                runs[-1]["ratio"] = runs[-1]["object_error"] / truths[i]["object_error"]
            given = perturb(scan.positions_px, kind, np.random.default_rng(args.seed + 1),
                            rms_px=args.rms)
            plain = (runs[0] if args.skip_plain
                     else reconstruct(scan, given, engine, args.iterations, {}))
            ratios = [r["ratio"] for r in runs]
            every.extend(ratios)
            row = {"engine": engine, "kind": kind, "true": truths[0], "not_refined": plain,
                   "refined": runs[0], "runs": runs, "median_ratio": statistics.median(ratios)}
            rows.append(row)
            cells = [f"{r['position_rms_px']:.3f} / {r['object_error']:.4f}"
                     for r in (truths[0], plain, runs[0])]
            listed = ", ".join(f"{r:.2f}" for r in ratios)
            print(f"| {engine} | {kind} | {' | '.join(cells)} | {listed} "
                  f"({row['median_ratio']:.2f}×) |", flush=True)
    print(f"within 1.3×: {sum(r <= 1.3 for r in every)} of {len(every)} runs, median ratio "
          f"{statistics.median(every):.2f}", flush=True)
    return rows


def seconds_per_iteration(scan: Any, engine: str, iterations: int, warmup: int,
                          correction: dict, clock: str = "wall") -> float:
    """Mean seconds per iteration after ``warmup``: wall clock, or (``clock="cpu"``) the
    process's CPU time over all its threads, which other jobs on a shared machine disturb
    far less."""
    cfg = {"algorithm": {"name": engine, "iterations": warmup + iterations,
                         "position_correction": correction},
           "parallel": {"device": "cpu"}}
    with Reconstruction(cfg, scan=scan) as recon:
        recon.step(warmup)
        if clock == "cpu":
            t0 = time.process_time()
            recon.step(iterations)
            return (time.process_time() - t0) / iterations
        times = [recon.step()["seconds"] for _ in range(iterations)]
    return statistics.fmean(times)  # the mean: with a pass every 4th most iterations skip it


def cost(args: argparse.Namespace) -> list[dict]:
    """Seconds per iteration without refinement, with the defaults (an update after every
    iteration from the engine's own residuals: LSQML, ePIE, DM as LSQML) and with
    ``update_every: 1`` (ePIE: a pass of the refiner's own); the three run alternately in
    each round and each ratio is the median over the rounds of that round's ratio (a shared
    CPU)."""
    case = Case(grid=args.cost_grid, frame=args.cost_frame,
                diameter_px=args.cost_frame * 0.375, overlap=0.7, photons=1e7, seed=args.seed)
    sim = make_scan(case)
    given = perturb(sim.positions_px, "random", np.random.default_rng(args.seed + 1))
    scan = with_positions(sim.as_scan(), given, sim.pixel_size_m)
    rows = []
    its = 4 * args.cost_iterations  # a multiple of the pass's 4
    print(f"cost: {case.name} ({len(given)} frames of {args.cost_frame}²), {its} iterations "
          f"(mean, {args.clock} clock), subpixel_bins {args.bins}, median of {args.rounds} "
          "paired rounds")
    print("| engine | without (s/it) | default (s/it) | ratio | update_every 1 | ratio |")
    print("|---|---|---|---|---|---|")
    # moving from the first timed iteration (settle null: the gate would hold them), and
    # --correction's options
    refine = {"enabled": True, "start": 0, "settle": None, "subpixel_bins": args.bins,
              **args.correction}
    for engine in args.engines.split(","):
        runs: dict[str, list[float]] = {"plain": [], "default": [], "every": []}
        for _ in range(args.rounds):
            for key, corr in (("plain", {}), ("default", refine),
                              ("every", {**refine, "update_every": 1})):
                runs[key].append(seconds_per_iteration(scan, engine, its, args.warmup, corr,
                                                       args.clock))
        plain = statistics.median(runs["plain"])
        ratio = {k: statistics.median(a / b for a, b in zip(runs[k], runs["plain"], strict=True))
                 for k in ("default", "every")}
        row = {"engine": engine, "without_s": plain, "runs": runs,
               "default_s": statistics.median(runs["default"]), "ratio": ratio["default"],
               "every_s": statistics.median(runs["every"]), "ratio_every": ratio["every"]}
        rows.append(row)
        print(f"| {engine} | {plain:.4f} | {row['default_s']:.4f} | {ratio['default']:.2f} | "
              f"{row['every_s']:.4f} | {ratio['every']:.2f} |", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, default=10)
    ap.add_argument("--frame", type=int, default=64)
    # quality's scan (the defaults: the scan the refinement was tuned on; the robustness
    # matrix's own settings are --object photo --overlap 0.62 --photons 1e6 --beam 0.3125)
    ap.add_argument("--object", default="texture", help="quality: the matrix's object kind")
    ap.add_argument("--probe", default="pinhole", help="quality: the matrix's probe kind")
    ap.add_argument("--pattern", default="raster", help="quality: raster or spiral")
    ap.add_argument("--overlap", type=float, default=0.7, help="quality: linear overlap")
    ap.add_argument("--photons", type=float, default=1e7, help="quality: photons per frame")
    ap.add_argument("--beam", type=float, default=0.375,
                    help="quality: the beam's diameter as a fraction of the frame")
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--rms", type=float, default=1.5, help="random errors' RMS, px")
    ap.add_argument("--engines", default="epie,dm,lsqml")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bins", type=int, default=None,
                    help="position_correction.subpixel_bins of the refined runs (0 = exact)")
    ap.add_argument("--correction", type=json.loads, default={},
                    help="more position_correction options of the refined runs (JSON)")
    ap.add_argument("--skip-plain", action="store_true",
                    help="quality: no run from the wrong positions without refinement")
    ap.add_argument("--runs", type=int, default=1,
                    help="quality: runs per case (error draws and engine seeds)")
    ap.add_argument("--cost-grid", type=int, default=20)
    ap.add_argument("--cost-frame", type=int, default=128)
    ap.add_argument("--cost-iterations", type=int, default=2,
                    help="cost: timed iterations / 4")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="cost: interleaved repeats")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cost: wall clock, or the process's CPU time (all threads)")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--json", help="write the rows to this file")
    args = ap.parse_args(argv)
    out: dict = {}
    if not args.skip_quality:
        out["quality"] = quality(args)
    if not args.skip_cost:
        out["cost"] = cost(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
