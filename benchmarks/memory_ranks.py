"""Peak resident memory per rank against the rank count: does it fall with the tile?

Driver: writes one simulated CXI scan (``GRID x GRID`` of ``FRAME``²) and an almost-empty one
(2 x 2 positions, same frame: the same imports, numba kernels, FFT plans and MPI start-up),
then for each engine and rank count launches ``mpiexec -n k`` of this script as a worker,
which reads its frames from the file (each rank its own), runs a few iterations and reports
every rank's peak RSS (``VmHWM``) with what its tile holds. The fixed overhead is the
almost-empty run's peak; ``tile MiB`` is the rest.

    python benchmarks/memory_ranks.py --ranks 1,2,4 --engines dm,lsqml --grid 30 --frame 128
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import common
import numpy as np

import ptychompi
from ptychompi.sim.simulate import simulate, simulate_to_files

HERE = os.path.dirname(os.path.abspath(__file__))
TAG = "RESULT "
MIB = 1024 * 1024


def peak_rss_bytes() -> int:
    """This process's peak resident set size (``VmHWM``), in bytes."""
    kib = common._status_kib("VmHWM")
    if kib is None:
        import resource  # noqa: PLC0415

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kib) * 1024


def worker(args: argparse.Namespace) -> int:
    from mpi4py import MPI  # noqa: PLC0415 - MPI starts at import: workers only

    comm = MPI.COMM_WORLD
    cfg = {"data": {"path": args.cxi},
           "algorithm": {"name": args.engine, "iterations": args.iterations,
                         "probe_diameter_m": args.probe_m},
           "parallel": {"device": "cpu", "workers": 1}}
    r = ptychompi.Reconstruction(cfg, comm)
    r.step(args.iterations)
    eng = r.engine
    held = {name: int(getattr(getattr(eng, name, None), "nbytes", 0))
            for name in ("object", "probe", "waves")}
    local = {"rank": comm.Get_rank(), "peak_rss": peak_rss_bytes(),
             "positions": len(r.tile.indices), "box": list(r.tile.box.shape),
             "frames_bytes": int(eng.data.amplitudes.nbytes),
             **{f"{k}_bytes": v for k, v in held.items() if v}}
    rows = comm.gather(local, root=0)
    shape = list(r.layout.object_shape)
    r.close()
    if comm.Get_rank() == 0:
        print(TAG + json.dumps({"ranks": comm.Get_size(), "engine": args.engine,
                                "object_shape": shape, "n_frames": r.layout.n_frames,
                                "per_rank": rows, "object_bytes": int(np.prod(shape)) * 8}),
              flush=True)
    return 0


def launch(args: argparse.Namespace, k: int, engine: str, cxi: str, probe_m: float) -> dict:
    cmd = [args.mpiexec, "-n", str(k), sys.executable, os.path.join(HERE, "memory_ranks.py"),
           "--worker", "--cxi", cxi, "--engine", engine, "--iterations", str(args.iterations),
           "--probe-m", repr(probe_m)]
    return common.run_mpi_worker(cmd, k, args.timeout, TAG)


def table(rows: list[dict]) -> str:
    head = ("| engine | ranks | positions/rank | box px | frames MiB | peak RSS MiB/rank "
            "(max) | fixed MiB | tile MiB (peak - fixed) | tile vs 1 rank |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['ranks']} | {r['positions']} | "
                     f"{r['box'][0]}x{r['box'][1]} | {r['frames_mib']:.1f} | "
                     f"{r['peak_mib']:.0f} | {r['fixed_mib']:.0f} | {r['tile_mib']:.0f} | "
                     f"{r['tile_ratio']:.2f} |")
    return "\n".join(lines)


def drive(args: argparse.Namespace) -> int:
    p = common.scan_params(args.frame)
    ranks = [int(k) for k in args.ranks.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        full, empty = os.path.join(tmp, "full.cxi"), os.path.join(tmp, "empty.cxi")
        simulate_to_files(full, frame=args.frame, grid=args.grid, seed=0, photons=1e6, **p)
        simulate_to_files(empty, frame=args.frame, grid=2, seed=0, photons=1e6, **p)
        pixel_m = simulate(frame=args.frame, grid=2, seed=0, **p).pixel_size_m
        probe_m = float(pixel_m) * p["probe_diameter_px"]
        for engine in args.engines.split(","):
            base_tile = None
            for k in ranks:
                res = launch(args, k, engine, full, probe_m)
                fixed = launch(args, min(k, 4), engine, empty, probe_m)
                worst = max(res["per_rank"], key=lambda r: r["peak_rss"])
                fixed_peak = max(r["peak_rss"] for r in fixed["per_rank"]) / MIB
                tile = worst["peak_rss"] / MIB - fixed_peak
                base_tile = tile if base_tile is None else base_tile
                rows.append({"engine": engine, "ranks": k, "positions": worst["positions"],
                             "box": worst["box"], "frames_mib": worst["frames_bytes"] / MIB,
                             "peak_mib": worst["peak_rss"] / MIB, "fixed_mib": fixed_peak,
                             "tile_mib": tile, "tile_ratio": tile / base_tile,
                             "per_rank": res["per_rank"], "fixed_per_rank": fixed["per_rank"]})
                print(json.dumps({k2: v for k2, v in rows[-1].items()
                                  if not k2.endswith("per_rank")}), flush=True)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"grid": args.grid, "frame": args.frame, "iterations": args.iterations,
                       "machine": common.machine(), "rows": rows}, f, indent=1)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help="one measurement (under mpiexec)")
    ap.add_argument("--cxi", default=None)
    ap.add_argument("--probe-m", type=float, default=None)
    ap.add_argument("--engine", default="dm", choices=("epie", "dm", "lsqml"))
    ap.add_argument("--engines", default="dm,lsqml")
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--grid", type=int, default=30)
    ap.add_argument("--frame", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--mpiexec", default=os.path.join(os.path.dirname(sys.executable),
                                                      "mpiexec"))
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    return worker(args) if args.worker else drive(args)


if __name__ == "__main__":
    sys.exit(main())
