"""Frames per second read from APS-layout HDF5 files, per compression, by 1 and 2 ranks.

Frames of a simulated ``GRID x GRID`` scan (int32 photon counts, like a detector) are written
with ``ptychompi.io.aps.write_aps`` (one scan row per file) uncompressed, LZ4, bitshuffle-LZ4
and zlib, and read back through ``open_aps(DataConfig(...)).read(indices)``; with k ranks each
rank reads a disjoint contiguous share and the rate is all frames / the slowest rank's time.
The files are freshly written, so they are read from the page cache: this measures HDF5 and
decompression, not the disk.

    python benchmarks/io_read.py --grid 30 --frame 128                 # one rank, in-process
    python benchmarks/io_read.py --grid 30 --frame 128 --drive 1,2     # mpiexec -n 1, -n 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import common
import numpy as np

from ptychompi.config import DataConfig
from ptychompi.io.aps import open_aps, write_aps

COMPRESSIONS = ("none", "lz4", "bitshuffle", "zlib")
PATTERN = "scan_data_%06d.h5"
TAG = "RESULT "


def write_all(directory: str, grid: int, frame: int, compressions: list[str]) -> dict:
    scan, _, _ = common.make_scan(grid, frame)
    frames = np.rint(scan.frames).astype(np.int32)
    info = {}
    for comp in compressions:
        sub = os.path.join(directory, comp)
        t0 = time.perf_counter()
        paths = write_aps(sub, PATTERN, frames, frames_per_file=grid, compression=comp)
        seconds = time.perf_counter() - t0
        size = sum(os.path.getsize(p) for p in paths)
        info[comp] = {"write_s": seconds, "bytes_on_disk": size,
                      "ratio": frames.nbytes / size, "files": len(paths)}
    return info


def read_rate(directory: str, comp: str, grid: int, reps: int, rank: int = 0, size: int = 1,
              comm=None) -> tuple[float, int]:
    """Median seconds (slowest rank) to read this rank's share; and the frames read by all."""
    cfg = DataConfig(path=os.path.join(directory, comp, PATTERN), scan_dims=[grid, grid],
                     step_m=[1e-6, 1e-6])
    n = grid * grid
    share = np.array_split(np.arange(n), size)[rank]
    times = []
    for _ in range(reps + 1):  # the first read warms h5py and the filter plugins
        if comm is not None:
            comm.Barrier()
        t0 = time.perf_counter()
        scan = open_aps(cfg)
        out = scan.read(share)
        scan.close()
        dt = time.perf_counter() - t0
        if comm is not None:
            dt = comm.allreduce(dt, op=max_op())
        times.append(dt)
        assert out.shape == (len(share), *scan.frame_shape)
    return common.median(times[1:]), n


def max_op():
    from mpi4py import MPI  # noqa: PLC0415 - MPI starts at import: workers only

    return MPI.MAX


def worker(args: argparse.Namespace) -> int:
    from mpi4py import MPI  # noqa: PLC0415 - MPI starts at import: workers only

    comm = MPI.COMM_WORLD
    rows = []
    for comp in args.compressions.split(","):
        sec, n = read_rate(args.dir, comp, args.grid, args.reps, comm.Get_rank(),
                           comm.Get_size(), comm)
        rows.append({"compression": comp, "ranks": comm.Get_size(), "seconds": sec,
                     "frames_per_second": n / sec})
    if comm.Get_rank() == 0:
        print(TAG + json.dumps(rows), flush=True)
    return 0


def table(rows: list[dict], info: dict, frame: int) -> str:
    frame_mb = frame * frame * 4 / 1e6
    head = (f"{'compression':>11} {'ranks':>5} {'frames/s':>9} {'MB/s raw':>9} "
            f"{'ratio':>6} {'write s':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        i = info[r["compression"]]
        lines.append(f"{r['compression']:>11} {r['ranks']:5d} {r['frames_per_second']:9.0f} "
                     f"{r['frames_per_second'] * frame_mb:9.0f} {i['ratio']:6.2f} "
                     f"{i['write_s']:7.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, default=30)
    ap.add_argument("--frame", type=int, default=128)
    ap.add_argument("--compressions", default=",".join(COMPRESSIONS))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--drive", default=None, help="rank counts to launch with mpiexec, e.g. 1,2")
    ap.add_argument("--worker", action="store_true", help="read only (under mpiexec)")
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    ap.add_argument("--mpiexec", default=os.path.join(os.path.dirname(sys.executable),
                                                      "mpiexec"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    comps = [c.strip() for c in args.compressions.split(",") if c.strip()]
    directory = args.dir or tempfile.mkdtemp(prefix="ptychompi-io-")
    try:
        info = write_all(directory, args.grid, args.frame, comps)
        rows = []
        if not args.drive:
            for comp in comps:
                sec, n = read_rate(directory, comp, args.grid, args.reps)
                rows.append({"compression": comp, "ranks": 1, "seconds": sec,
                             "frames_per_second": n / sec})
        else:
            for k in [int(x) for x in args.drive.split(",")]:
                cmd = [args.mpiexec, "-n", str(k), sys.executable, os.path.abspath(__file__),
                       "--worker", "--dir", directory, "--grid", str(args.grid),
                       "--compressions", ",".join(comps), "--reps", str(args.reps)]
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(TAG)]
                if proc.returncode != 0 or not lines:
                    sys.stderr.write(proc.stdout + proc.stderr)
                    raise SystemExit(f"mpiexec -n {k} failed (exit {proc.returncode})")
                rows += json.loads(lines[-1][len(TAG):])
        for r in rows:
            r.update(info[r["compression"]])
        print(table(rows, info, args.frame))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": common.machine(), "grid": args.grid,
                           "frame": args.frame, "rows": rows}, f, indent=1)
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
