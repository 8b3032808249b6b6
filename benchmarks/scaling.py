"""Strong and weak scaling of one engine over MPI ranks (one mpiexec launch per rank count).

Worker (under mpiexec): builds the simulated scan on every rank, reconstructs with
``Reconstruction(cfg, MPI.COMM_WORLD)`` and prints one JSON line (prefixed ``RESULT``) on
rank 0: ranks, median seconds per iteration (slowest rank), compute / comm / io seconds per
rank, bytes exchanged per rank per iteration, the object size.

    mpiexec -n 2 python benchmarks/scaling.py --worker --mode strong --grid 30 --frame 128

Driver: launches the worker for each rank count and adds speed-up and efficiency.

    python benchmarks/scaling.py --drive 1,2 --mode strong --engine dm --grid 30 --frame 128

Model: measures 1..4 ranks here, fits nothing, predicts them from the one-rank time per
position, the exchange counts and the local network, then projects a 100k-frame scan to
1,024 GPUs (see ``scaling_model.py``).

    python benchmarks/scaling.py --model --check 1,2,4 --engine dm --grid 30 --frame 128

Strong scaling keeps the ``GRID x GRID`` scan; weak scaling grows it with the ranks
(``round(GRID·sqrt(k))`` squared positions, so positions ∝ ranks). Speed-up is t1/tk
(strong) or the positions per second relative to the first rank count (weak); efficiency
is speed-up / k.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import common
import numpy as np
import scaling_model

import ptychompi

HERE = os.path.dirname(os.path.abspath(__file__))
TAG = "RESULT "


def grid_for(mode: str, grid: int, ranks: int) -> int:
    return grid if mode == "strong" else int(round(grid * math.sqrt(ranks)))


def worker(args: argparse.Namespace) -> int:
    from mpi4py import MPI  # noqa: PLC0415 - importing mpi4py starts MPI: workers only

    comm = MPI.COMM_WORLD
    size, rank = comm.Get_size(), comm.Get_rank()
    grid = grid_for(args.mode, args.grid, size)
    scan, probe_m, info = common.make_scan(grid, args.frame)
    cfg = common.make_config(args.engine, args.iterations + args.warmup, probe_m,
                             args.subpixel == "on", "cpu", args.workers,
                             batch_size=args.batch_size)
    cfg["parallel"]["halo"] = "touched" if args.halo == "touched-sent" else args.halo
    comm.Barrier()
    t0 = time.perf_counter()
    recon = ptychompi.Reconstruction(cfg, comm, scan=scan)
    setup = time.perf_counter() - t0
    if args.halo == "touched-sent" and hasattr(recon.engine, "_halo_powers"):
        recon.engine._halo_powers = False  # LSQML: the halos' illumination sent, not recomputed
    for _ in range(args.warmup):
        recon.step()
    m0 = recon.metrics
    keys = ("halo_bytes", "halo_sums", "halo_messages", "reductions", "collectives")
    s0 = {k: getattr(recon.exchange.stats, k) for k in keys}
    seconds = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(args.iterations):
        seconds.append(recon.step()["seconds"])
    cpu_share = (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9)
    m1 = recon.metrics
    counted = {k: (s0[k], getattr(recon.exchange.stats, k)) for k in keys}
    it = args.iterations
    local = {
        "rank": rank, "positions": len(recon.tile.indices),
        "tile_pixels": int(np.prod(recon.tile.box.shape)),
        "seconds": seconds,
        "compute_s_per_iter": (m1["compute_s"] - m0["compute_s"]) / it,
        "comm_s_per_iter": (m1["comm_s"] - m0["comm_s"]) / it,
        "bytes_per_iter": (m1["bytes_sent"] - m0["bytes_sent"]) / it,
        "io_s": m1["io_s"], "workers": recon.backend.workers,
        # exchange counts per iteration (for --model), counted by the exchange itself
        **{f"{k}_per_iter": (c1 - c0) / it for k, (c0, c1) in counted.items()},
        "cpu_share": cpu_share,  # CPU time / wall time of this rank over the timed iterations
        "neighbours": len(recon.tile.neighbours),
        "halo_area": int(sum(np.prod(h.shape) for h in recon.tile.halos.values())),
    }
    rows = comm.gather(local, root=0)
    network = common_network(comm) if args.pingpong else None
    if rank == 0:
        slowest = [max(r["seconds"][i] for r in rows) for i in range(it)]
        obj_shape = list(recon.layout.object_shape)
        out = {
            "mode": args.mode, "engine": args.engine, "ranks": size,
            "grid": grid, "frame": args.frame, "n_frames": scan.n_frames,
            "subpixel": args.subpixel == "on",
            "seconds_per_iteration": common.median(slowest),
            "setup_s": setup, "error_last": recon.history[-1]["error"],
            "object_shape": obj_shape, "object_bytes": int(np.prod(obj_shape)) * 8,
            "per_rank": [{k: v for k, v in r.items() if k != "seconds"} for r in rows],
            "network": network,
            "machine": common.machine(),
        }
        print(TAG + json.dumps(out), flush=True)
    recon.close()
    return 0


def common_network(comm: object) -> dict | None:
    """Latency and bandwidth between ranks 0 and 1 by ping-pong (``None`` on one rank)."""
    if comm.Get_size() < 2:
        return None
    out = {}
    for label, nbytes, reps in (("latency_s", 8, 200), ("bandwidth_Bps", 1 << 22, 10)):
        buf = np.zeros(nbytes, np.uint8)
        comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(reps):
            if comm.Get_rank() == 0:
                comm.Send(buf, dest=1)
                comm.Recv(buf, source=1)
            elif comm.Get_rank() == 1:
                comm.Recv(buf, source=0)
                comm.Send(buf, dest=0)
        one_way = (time.perf_counter() - t0) / (2 * reps)
        out[label] = one_way if label == "latency_s" else nbytes / one_way
    return comm.bcast(out, root=0)


def launch(args: argparse.Namespace, k: int) -> dict:
    """Run the worker under ``mpiexec -n k``; its RESULT dict."""
    cmd = [args.mpiexec, "-n", str(k), sys.executable, os.path.join(HERE, "scaling.py"),
           "--worker", "--mode", args.mode, "--engine", args.engine,
           "--grid", str(args.grid), "--frame", str(args.frame),
           "--iterations", str(args.iterations), "--warmup", str(args.warmup),
           "--subpixel", args.subpixel, "--halo", args.halo]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    if args.pingpong:
        cmd += ["--pingpong"]
    return common.run_mpi_worker(cmd, k, args.timeout, TAG)


def drive(args: argparse.Namespace) -> int:
    counts = [int(k) for k in args.drive.split(",")]
    results = [launch(args, k) for k in counts]
    base = results[0]
    for r in results:
        ratio = base["seconds_per_iteration"] / r["seconds_per_iteration"]
        scale = r["ranks"] / base["ranks"]
        if args.mode == "strong":
            r["speedup"] = ratio
        else:  # throughput (positions per second) relative to the first count
            r["speedup"] = ratio * r["n_frames"] / base["n_frames"]
        r["efficiency"] = r["speedup"] / scale
        print(json.dumps(r), flush=True)
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


def table(results: list[dict]) -> str:
    head = (f"{'mode':>6} {'ranks':>5} {'frames':>6} {'s/iter':>8} {'speedup':>7} {'eff':>5} "
            f"{'comp s':>7} {'comm s':>7} {'KiB/it/rank':>11} {'obj KiB':>8}")
    lines = [head, "-" * len(head)]
    for r in results:
        pr = r["per_rank"]
        comp = max(p["compute_s_per_iter"] for p in pr)
        comm = max(p["comm_s_per_iter"] for p in pr)
        sent = max(p["bytes_per_iter"] for p in pr) / 1024
        lines.append(f"{r['mode']:>6} {r['ranks']:5d} {r['n_frames']:6d} "
                     f"{r['seconds_per_iteration']:8.3f} {r['speedup']:7.2f} "
                     f"{r['efficiency']:5.2f} {comp:7.3f} {comm:7.3f} {sent:11.1f} "
                     f"{r['object_bytes'] / 1024:8.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", default="strong", choices=("strong", "weak"))
    ap.add_argument("--worker", action="store_true", help="run one measurement (under mpiexec)")
    ap.add_argument("--drive", default=None, help="rank counts to launch, e.g. 1,2")
    ap.add_argument("--engine", default="dm", choices=("epie", "dm", "lsqml"))
    ap.add_argument("--grid", type=int, default=30)
    ap.add_argument("--frame", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--subpixel", default="on", choices=("on", "off"))
    ap.add_argument("--workers", type=int, default=None, help="FFT threads per rank")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="LSQML's positions per batch (default: a tenth of the scan)")
    ap.add_argument("--halo", default="auto",
                    choices=("auto", "full", "touched", "compact", "touched-sent"),
                    help="LSQML's per-batch halo sums (parallel.halo): auto, full, touched "
                         "(float32, the illumination recomputed), compact (touched, the "
                         "numerator to the object's precision), touched-sent (touched, the "
                         "illumination sent too)")
    ap.add_argument("--mpiexec", default=os.path.join(os.path.dirname(sys.executable),
                                                      "mpiexec"))
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", default=None)
    ap.add_argument("--pingpong", action="store_true",
                    help="worker: also time a ranks 0<->1 ping-pong (the local network)")
    scaling_model.add_arguments(ap)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.model:
        return scaling_model.run(args, launch)
    if args.drive:
        return drive(args)
    ap.error("give --worker (under mpiexec), --drive 1,2 or --model")
    return 2


if __name__ == "__main__":
    sys.exit(main())
