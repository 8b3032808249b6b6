"""Engines on one GPU: frames/s, GPU memory high-water mark and the ratio to a cuFFT-only floor.

For each size ``GRIDxM`` a ``GRID x GRID`` jittered raster of M² far-field frames (step
M·15/128 px, probe M·40/128 px, Poisson noise) is simulated in memory, on the device, by this
script's own forward model (no files, and independent of the package's simulator). Each
engine then runs through the public API (``ptychompi.Reconstruction`` on an ``ArrayScan``):
``--warmup`` untimed iterations, then ``--iterations`` timed ones (wall clock around
``step()``, device synchronised). Per engine and size: median seconds per iteration, frames/s,
the CuPy memory pool's high-water mark and the device memory in use (``cudaMemGetInfo``) at
its highest, and the ratio to the floor: one forward plus one inverse FFT (complex64,
unitary) of all K·N frames in batches of at most 1 GiB, measured in the same process before
and after the engine. On a CPU (``--device cpu``) the same runs use numpy and scipy.fft, so
the script can be tried anywhere (``--small``: tiny sizes).

Under ``mpiexec -n R`` the ranks share the scan (each reads its own tile's frames) and the
floor is rank 0's, over all frames, measured while the other ranks wait. Every row is written
to ``--json`` as soon as it is measured; a failing engine is recorded and the next one runs.

    python benchmarks/gpu_engines.py --device gpu --sizes 30x512,100x128 --json gpu.json
    python benchmarks/gpu_engines.py --device cpu --small --json cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from typing import Any

import numpy as np
from common import parse_sizes
from gpu_scan import Device, Memory, open_device, simulate

import ptychompi
from ptychompi.data.scan import ArrayScan

FLOOR_BATCH_BYTES = 1 << 30
SMALL_SIZES = "4x32,6x16"


# --------------------------------------------------------------------------- floor
def fft_floor(dev: Device, n_frames: int, modes: int, frame: int, reps: int) -> float:
    """Median seconds of one forward + one inverse FFT over K·N complex64 frames of M²."""
    xp = dev.xp
    total = n_frames * modes
    batch = max(1, min(total, FLOOR_BATCH_BYTES // (frame * frame * 8)))
    data = (xp.ones((batch, frame, frame), np.float32)
            + 1j * xp.zeros((batch, frame, frame), np.float32)).astype(np.complex64)
    sizes = [min(batch, total - a) for a in range(0, total, batch)]

    def once() -> float:
        dev.sync()
        t0 = time.perf_counter()
        for s in sizes:
            spec = dev.fft2(data[:s])
            dev.ifft2(spec)
            del spec
        dev.sync()
        return time.perf_counter() - t0

    once()  # plans
    times = [once() for _ in range(reps)]
    data = None  # freed before the engine runs
    dev.release()
    return float(statistics.median(times))


# --------------------------------------------------------------------------- one engine
def run_engine(dev: Device, comm: Any | None, scan: ArrayScan, probe_m: float, engine: str,
               args: argparse.Namespace) -> dict:
    rank = 0 if comm is None else comm.Get_rank()
    size = 1 if comm is None else comm.Get_size()
    cfg = {"algorithm": {"name": engine, "iterations": args.warmup + args.iterations,
                         "probe_diameter_m": probe_m, "subpixel": True},
           "parallel": {"device": args.device, "cuda_aware": args.cuda_aware}}
    dev.release()
    memory = Memory(dev)
    t0 = time.perf_counter()
    recon = ptychompi.Reconstruction(cfg, comm, scan=scan)
    setup = time.perf_counter() - t0
    modes = int(recon.probe.shape[0])
    seconds, errors = [], []
    try:
        for i in range(args.warmup + args.iterations):
            dev.sync()
            if comm is not None:
                comm.Barrier()
            t0 = time.perf_counter()
            metrics = recon.step()
            dev.sync()
            if comm is not None:
                comm.Barrier()
            elapsed = time.perf_counter() - t0
            memory.sample()
            if i >= args.warmup:
                seconds.append(elapsed)
                errors.append(float(metrics["error"]))
    finally:
        recon.close()
        del recon
    memory.sample()
    dev.release()
    peaks = [memory.pool_peak] if comm is None else comm.gather(memory.pool_peak)
    used = memory.used_peak if comm is None else max(comm.gather(memory.used_peak) or [0])
    per_iter = float(statistics.median(seconds))
    row = {"engine": engine, "n_frames": scan.n_frames, "frame": scan.frame_shape[0],
           "modes": modes, "ranks": size, "warmup": args.warmup, "iterations": len(seconds),
           "seconds_per_iteration": per_iter, "seconds_min": min(seconds),
           "seconds_max": max(seconds), "frames_per_second": scan.n_frames / per_iter,
           "setup_s": setup, "error_first": errors[0], "error_last": errors[-1]}
    if rank == 0:
        row["pool_peak_bytes_per_rank"] = [int(p) for p in peaks]
        row["device_used_peak_bytes"] = int(used) if dev.is_gpu else None
    return row


def floor_for(dev: Device, comm: Any | None, n: int, modes: int, frame: int,
              reps: int) -> float | None:
    """Rank 0's floor over all N frames (others wait), broadcast to every rank."""
    value = fft_floor(dev, n, modes, frame, reps) if comm is None or comm.Get_rank() == 0 \
        else None
    return value if comm is None else comm.bcast(value)


# --------------------------------------------------------------------------- report
def table(rows: list[dict]) -> str:
    head = ("| size | ranks | engine | s/iter | frames/s | floor s | x floor | "
            "pool peak GiB | device used GiB |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        size = f"{r.get('n_frames', '?')}x{r.get('frame', '?')}²"
        if "error" in r:
            lines.append(f"| {size} | {r.get('ranks', '?')} | {r['engine']} | failed: "
                         f"{r['error'][:60]} | | | | | |")
            continue
        used = r.get("device_used_peak_bytes")
        gib = (f"{max(r['pool_peak_bytes_per_rank']) / 2**30:.2f} | {used / 2**30:.2f}"
               if used is not None else "- | -")  # CPU: no device memory
        lines.append(
            f"| {size} | {r['ranks']} | {r['engine']} | {r['seconds_per_iteration']:.4f} | "
            f"{r['frames_per_second']:.0f} | {r['fft_floor_s']:.4f} | "
            f"{r['ratio_to_floor']:.1f} | {gib} |")
    return "\n".join(lines)


def write(path: str | None, payload: dict) -> None:
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)


def device_info(dev: Device) -> dict:
    info = {"numpy": np.__version__, "ptychompi": ptychompi.__version__}
    if dev.is_gpu:
        cp = dev.xp
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        name = props["name"]
        info.update(cupy=cp.__version__, gpu=name.decode() if isinstance(name, bytes) else name,
                    gpu_memory_bytes=int(props["totalGlobalMem"]),
                    cuda_runtime=cp.cuda.runtime.runtimeGetVersion(),
                    cuda_driver=cp.cuda.runtime.driverGetVersion())
    else:
        info["cpu_cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count()
    return info


def mpi_comm() -> Any | None:
    """COMM_WORLD when started by an MPI launcher with more than one rank, else None."""
    if not any(k in os.environ for k in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE",
                                         "PMIX_RANK", "HYDRA_CONTROL_FD")):
        return None
    from mpi4py import MPI  # noqa: PLC0415

    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="gpu", choices=("gpu", "cpu"))
    ap.add_argument("--sizes", default="30x512,100x128", help="GRIDxFRAME list")
    ap.add_argument("--small", action="store_true", help=f"tiny sizes ({SMALL_SIZES})")
    ap.add_argument("--engines", default="epie,dm,lsqml")
    ap.add_argument("--iterations", type=int, default=5, help="timed iterations")
    ap.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    ap.add_argument("--floor-reps", type=int, default=5)
    ap.add_argument("--cuda-aware", default="auto", choices=("auto", "yes", "no"),
                    help="parallel.cuda_aware for several ranks (no: halos staged on the host)")
    ap.add_argument("--json", default=None, help="write the rows here (after every row)")
    ap.add_argument("--table", default=None, help="write the Markdown table here at the end")
    args = ap.parse_args(argv)
    if args.iterations < 1 or args.warmup < 0 or args.floor_reps < 1:
        ap.error("--iterations and --floor-reps must be >= 1 and --warmup >= 0")
    sizes = parse_sizes(SMALL_SIZES if args.small else args.sizes)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    comm = mpi_comm()
    rank = 0 if comm is None else comm.Get_rank()
    dev = open_device(args.device)
    payload = {"device": args.device, "args": vars(args), "info": device_info(dev),
               "ranks": 1 if comm is None else comm.Get_size(), "rows": []}
    rows: list[dict] = payload["rows"]
    failed = 0
    for grid, frame in sizes:
        t0 = time.perf_counter()
        try:
            scan, probe_m = simulate(dev, grid, frame)
        except Exception as exc:  # the same scan from the host, slower (re-raised on a CPU)
            if not dev.is_gpu:
                raise
            print(f"# simulation on the device failed ({type(exc).__name__}: {exc}); "
                  "simulating on the host", file=sys.stderr, flush=True)
            scan, probe_m = simulate(Device(np, False), grid, frame)
        dev.release()
        if rank == 0:
            print(f"# {grid}x{grid} scan of {frame}^2 frames simulated in "
                  f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        floors: dict[int, float] = {}
        for engine in engines:
            try:
                row = run_engine(dev, comm, scan, probe_m, engine, args)
                modes = row["modes"]
                if modes not in floors:
                    floors[modes] = floor_for(dev, comm, scan.n_frames, modes, frame,
                                              args.floor_reps)
                row["fft_floor_s"] = floors[modes]
                row["ratio_to_floor"] = row["seconds_per_iteration"] / floors[modes]
            except Exception as exc:  # noqa: BLE001 - recorded; the next engine runs
                failed += 1
                row = {"engine": engine, "n_frames": scan.n_frames, "frame": frame,
                       "ranks": payload["ranks"],
                       "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"}
                if rank == 0:
                    traceback.print_exc()
                dev.release()
            if rank == 0:
                rows.append(row)
                write(args.json, payload)
                msg = row.get("error") or (f"{row['seconds_per_iteration']:.4f} s/it, "
                                           f"{row['frames_per_second']:.0f} frames/s, "
                                           f"{row['ratio_to_floor']:.1f}x floor")
                print(f"# {engine} {scan.n_frames}x{frame}^2: {msg}", file=sys.stderr,
                      flush=True)
        del scan
        dev.release()
    if rank == 0:
        text = table(rows)
        print(text)
        if args.table:
            with open(args.table, "w") as f:
                f.write(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
