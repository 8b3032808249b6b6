"""Where the time of n ranks goes: per-rank timelines of one engine, 1 rank against n.

Worker (under mpiexec): the simulated scan, one FFT thread per rank, a warm-up iteration,
then the timed iterations under cProfile (``--timer``: CPU or wall clock) on every rank.
It prints one JSON line (prefixed ``RESULT``) on rank 0: per rank, milliseconds per
iteration in each phase (the cumulative time of the functions that make it), the accounting
of the exchange (compute and communication seconds, as provenance has them), and the CPU
time of the process.

Driver: alternates launches of 1 rank and of ``--ranks`` ranks for ``--rounds`` rounds (the
machine may be shared: compare ratios within a round, take medians), prints the phase table
and the efficiency of the compute seconds, ``c1 / (n · max_rank c_n)``.

    python benchmarks/rank_timeline.py --ranks 2 --rounds 3 --engine lsqml --grid 30
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import time

import common

import ptychompi

HERE = os.path.dirname(os.path.abspath(__file__))
TAG = "RESULT "

# phase -> functions (file suffix, name) whose cumulative times add up to it; "rest" is what
# an iteration spends outside them (per-batch serial work: probe spectrum, step solve,
# trimmed mean, probe update; per-iteration mode orthogonalisation and amplitude limits)
PHASES = {
    "exit waves + sums": [("lsqml.py", "exit_part")],
    "tile reduction": [("chunking.py", "reduce")],
    "halo illumination": [("lsqml_halo.py", "halo_illumination")],
    "halo sum (pack, codec)": [("sparse_halo.py", "sum")],
    "halo sum (MPI)": [("exchange.py", "neighbour_bytes"), ("exchange.py", "halo_sum"),
                       ("exchange.py", "neighbour_messages")],
    "reductions (MPI)": [("exchange.py", "allreduce"), ("exchange.py", "allgather")],
    "object direction": [("cpu_ops.py", "lsqml_object_direction"),
                         ("array_ops.py", "lsqml_object_direction")],
    "step terms": [("lsqml.py", "step_terms")],
    "object step": [("lsqml.py", "add_step")],
}
NESTED = {"halo sum (pack, codec)": ["halo sum (MPI)"]}  # the pack phase's time less the MPI call


def phase_ms(prof: cProfile.Profile, iterations: int) -> dict[str, float]:
    """Milliseconds per iteration of each phase, and of the whole step and the rest."""
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    cum: dict[tuple[str, str], float] = {}
    for (path, _, name), (_, _, _, ct, _) in stats.items():
        key = (os.path.basename(path), name)
        cum[key] = cum.get(key, 0.0) + ct
    out = {phase: 1e3 * sum(cum.get(f, 0.0) for f in funcs) / iterations
           for phase, funcs in PHASES.items()}
    for phase, inner in NESTED.items():
        out[phase] = max(0.0, out[phase] - sum(out[i] for i in inner)) if out[phase] else 0.0
    total = 1e3 * cum.get(("base.py", "step"), 0.0) / iterations
    out["rest"] = max(0.0, total - sum(out.values()))
    out["iteration"] = total
    return out


def worker(args: argparse.Namespace) -> int:
    from mpi4py import MPI  # noqa: PLC0415 - importing mpi4py starts MPI: workers only

    comm = MPI.COMM_WORLD
    scan, probe_m, _ = common.make_scan(args.grid, args.frame)
    cfg = common.make_config(args.engine, args.iterations + 1, probe_m,
                             args.subpixel == "on", "cpu", 1)
    cfg["parallel"]["halo"] = args.halo
    recon = ptychompi.Reconstruction(cfg, comm if comm.Get_size() > 1 else None, scan=scan)
    recon.step()  # warm-up: FFT plans, compiled kernels
    m0, cpu0 = recon.metrics, time.process_time()
    comm.Barrier()
    prof = cProfile.Profile(time.process_time if args.timer == "cpu" else time.perf_counter)
    prof.enable()
    recon.step(args.iterations)
    prof.disable()
    m1, it = recon.metrics, args.iterations
    local = {"rank": comm.Get_rank(), "positions": len(recon.tile.indices),
             "box": list(recon.tile.box.shape),
             "compute_ms": 1e3 * (m1["compute_s"] - m0["compute_s"]) / it,
             "comm_ms": 1e3 * (m1["comm_s"] - m0["comm_s"]) / it,
             "cpu_ms": 1e3 * (time.process_time() - cpu0) / it,
             "bytes_per_iter": (m1["bytes_sent"] - m0["bytes_sent"]) / it,
             "phases_ms": phase_ms(prof, it)}
    rows = comm.gather(local, root=0)
    if comm.Get_rank() == 0:
        print(TAG + json.dumps({"ranks": comm.Get_size(), "per_rank": rows,
                                "machine": common.machine()}), flush=True)
    recon.close()
    return 0


def launch(args: argparse.Namespace, k: int) -> dict:
    cmd = [args.mpiexec, "-n", str(k), sys.executable, os.path.join(HERE, "rank_timeline.py"),
           "--worker", "--engine", args.engine, "--grid", str(args.grid),
           "--frame", str(args.frame), "--iterations", str(args.iterations),
           "--subpixel", args.subpixel, "--halo", args.halo, "--timer", args.timer]
    return common.run_mpi_worker(cmd, k, args.timeout, TAG)


def drive(args: argparse.Namespace) -> int:
    runs: dict[int, list[dict]] = {1: [], args.ranks: []}
    effs = []
    for _ in range(args.rounds):
        pair = {k: launch(args, k) for k in (1, args.ranks)}
        for k, r in pair.items():
            runs[k].append(r)
        c1 = pair[1]["per_rank"][0]["compute_ms"]
        cn = max(p["compute_ms"] for p in pair[args.ranks]["per_rank"])
        effs.append(c1 / (args.ranks * cn))
        print(json.dumps({"round": len(effs), "c1_ms": c1, "cn_max_ms": cn,
                          "efficiency": effs[-1]}), flush=True)
    print(table(runs, args.ranks))
    print(f"compute-seconds efficiency, {args.ranks} ranks vs 1 (one core each): median "
          f"{statistics.median(effs):.2f}, rounds {', '.join(f'{e:.2f}' for e in effs)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "efficiency": effs}, f, indent=1)
    return 0


def table(runs: dict[int, list[dict]], n: int) -> str:
    """Median ms per iteration per phase: 1 rank, each of the n ranks, and n-rank sum / 1."""
    def med(k: int, rank: int, key: str) -> float:
        vals = []
        for r in runs[k]:
            p = r["per_rank"][rank]
            vals.append(p["phases_ms"][key] if key in p["phases_ms"] else p[key])
        return statistics.median(vals)

    keys = [*PHASES, "rest", "iteration", "compute_ms", "comm_ms", "cpu_ms"]
    head = "| phase | 1 rank | " + " | ".join(f"rank {r} of {n}" for r in range(n)) + \
        f" | Σ{n} / 1 |"
    lines = [head, "|---" * (n + 3) + "|"]
    for key in keys:
        one = med(1, 0, key)
        each = [med(n, r, key) for r in range(n)]
        ratio = f"{sum(each) / one:.2f}" if one > 0.05 else "–"
        lines.append(f"| {key} | {one:.1f} | " + " | ".join(f"{v:.1f}" for v in each) +
                     f" | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--engine", default="lsqml", choices=("epie", "dm", "lsqml"))
    ap.add_argument("--grid", type=int, default=30)
    ap.add_argument("--frame", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--subpixel", default="on", choices=("on", "off"))
    ap.add_argument("--halo", default="auto", choices=("auto", "full", "touched", "compact"),
                    help="LSQML's per-batch halo sums (parallel.halo)")
    ap.add_argument("--timer", default="cpu", choices=("cpu", "wall"),
                    help="the profile's clock: CPU time of the rank (the work, whatever else "
                         "runs on the machine; MPI calls count their busy wait) or wall time")
    ap.add_argument("--mpiexec", default=os.path.join(os.path.dirname(sys.executable),
                                                      "mpiexec"))
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    return worker(args) if args.worker else drive(args)


if __name__ == "__main__":
    sys.exit(main())
