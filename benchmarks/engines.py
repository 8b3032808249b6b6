"""Seconds per iteration of ePIE, DM and LSQML against the FFT floor of the same scan.

For each size ``GRIDxM`` a simulated ``GRID x GRID`` raster of M² frames is built (step
M·15/128 px, probe M·40/128 px). For each engine: median seconds per iteration over
``--iterations`` after ``--warmup``, frames per second, peak memory of the engine (host RSS
on CPU, CuPy pool high-water on GPU) and the ratio to the FFT floor: one forward plus one
inverse FFT of all K·N frames (complex64, the same workers), measured beside every timed
iteration in the same process. On a CPU the floor is scipy.fft's (the issue's definition,
``x floor``); when the engine's FFTs run on FFTW (``parallel.fft``, the default where pyFFTW
is installed) the ratio to the same FFTs on FFTW is printed too (``x own``: how much the
engine adds to its own FFTs).

    python benchmarks/engines.py --sizes 30x128 --engines epie,dm,lsqml --subpixel both \
        --rounds 3 --json engines.json
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time

import common

import ptychompi
from ptychompi.backends import Backend, select_backend


def run_engine(scan, probe_m: float, engine: str, subpixel: bool, args) -> dict:
    iterations = args.iterations + args.warmup
    cfg = common.make_config(engine, iterations, probe_m, subpixel, args.device, args.workers,
                             args.batch_size, args.subpixel_bins, args.fft)
    backend = select_backend(args.device, None, workers=args.workers, fft=args.fft)
    # the floor: scipy.fft on a CPU (the definition), else the engine's own FFTs
    ref = backend if backend.is_gpu else Backend(backend.xp, "cpu", None, backend.workers,
                                                 False, "scipy")
    own = None if backend.is_gpu or backend.fft == "scipy" else backend
    n, frame = scan.n_frames, scan.frame_shape[0]
    timed = [ref] + ([own] if own is not None else [])  # the floors' backends

    def floors(modes: int, reps: int, warm: bool = True) -> list[float]:
        return [common.fft_floor(b, n, modes, frame, reps=reps, warm=warm) for b in timed]

    gc.collect()
    first = floors(1, args.floor_reps)
    host = common.HostMemory()
    dev = common.DeviceMemory(backend.xp) if backend.is_gpu else None
    t0 = time.perf_counter()
    recon = ptychompi.Reconstruction(cfg, None, scan=scan)
    setup = time.perf_counter() - t0
    modes = int(recon.engine.probe.shape[0])
    if modes != 1:  # the floor covers K·N frames
        first = floors(modes, args.floor_reps)
    seconds, errors, samples = [], [], [[f] for f in first]
    for i in range(iterations):
        if i >= args.warmup:  # one floor sample beside each timed iteration (noisy hosts)
            for kept, value in zip(samples, floors(modes, 1, warm=False), strict=True):
                kept.append(value)
        m = recon.step()
        if dev is not None:
            dev.sample()
        if i >= args.warmup:
            seconds.append(m["seconds"])
            errors.append(m["error"])
    per_iter = common.median(seconds)
    floor = common.median(samples[0])
    own_floor = common.median(samples[1]) if own is not None else None
    row = {
        "engine": engine, "subpixel": bool(recon.engine.use_subpixel),
        "subpixel_bins": int(recon.engine.cfg.subpixel_bins),
        "subpixel_requested": subpixel, "n_frames": n, "frame": frame, "modes": modes,
        "ffts_per_pass": int(recon.engine.data.propagator.ffts_per_pass),
        "seconds_per_iteration": per_iter,
        "seconds_min": min(seconds), "seconds_max": max(seconds),
        "frames_per_second": n / per_iter,
        "fft_floor_s": floor, "ratio_to_floor": per_iter / floor,
        "fft": "gpu" if backend.is_gpu else backend.fft,
        "own_fft_floor_s": own_floor,
        "ratio_to_own_floor": per_iter / own_floor if own_floor else None,
        "peak_bytes": dev.peak_bytes() if dev is not None else host.peak_bytes(),
        "peak_kind": "cupy pool" if dev is not None else "host RSS",
        "setup_s": setup, "error_first": errors[0], "error_last": errors[-1],
        "iterations": len(seconds), "warmup": args.warmup,
    }
    recon.close()
    backend.close()
    ref.close()
    del recon
    gc.collect()
    return row


def table(rows: list[dict]) -> str:
    head = (f"{'size':>9} {'engine':>6} {'subpx':>5} {'s/iter':>8} {'frames/s':>9} "
            f"{'floor s':>8} {'x floor':>7} {'x own':>6} {'peak MiB':>9} {'error':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        size = f"{r['n_frames']}x{r['frame']}"
        lines.append(
            f"{size:>9} {r['engine']:>6} {'on' if r['subpixel'] else 'off':>5} "
            f"{r['seconds_per_iteration']:8.3f} {r['frames_per_second']:9.0f} "
            f"{r['fft_floor_s']:8.3f} {r['ratio_to_floor']:7.2f} {_own(r):>6} "
            f"{r['peak_bytes'] / 2**20:9.1f} {r['error_last']:9.2e}")
    return "\n".join(lines)


def _own(row: dict) -> str:
    """The ratio to the engine's own FFT library's floor, or '-' (the same as x floor)."""
    value = row.get("ratio_to_own_floor")
    return f"{value:.2f}" if value else "-"


def summary(rows: list[dict]) -> str:
    """Median (range) of s/iteration and of the ratio to the floor over the rounds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["size"], r["engine"], r["subpixel"]), []).append(r)
    head = f"{'size':>9} {'engine':>6} {'subpx':>5} {'s/iter median (range)':>24} " \
           f"{'x floor median (range)':>24} {'x own median (range)':>22}"
    lines = [head, "-" * len(head)]
    for (size, engine, sub), group in groups.items():
        sec = [r["seconds_per_iteration"] for r in group]
        ratio = [r["ratio_to_floor"] for r in group]
        own = [r["ratio_to_own_floor"] for r in group if r.get("ratio_to_own_floor")]
        own_text = (f"{common.median(own):8.2f} ({min(own):.2f}-{max(own):.2f})" if own
                    else f"{'-':>8}")
        lines.append(f"{size:>9} {engine:>6} {'on' if sub else 'off':>5} "
                     f"{common.median(sec):8.3f} ({min(sec):.3f}-{max(sec):.3f}) "
                     f"{common.median(ratio):8.2f} ({min(ratio):.2f}-{max(ratio):.2f}) "
                     f"{own_text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="30x128", help="GRIDxFRAME list, e.g. 30x128,20x256")
    ap.add_argument("--engines", default="epie,dm,lsqml")
    ap.add_argument("--iterations", type=int, default=10, help="timed iterations")
    ap.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    ap.add_argument("--workers", type=int, default=None, help="CPU FFT threads (null = cores)")
    ap.add_argument("--fft", default="auto", choices=("auto", "fftw", "scipy"),
                    help="the engines' CPU FFT library (parallel.fft)")
    ap.add_argument("--batch-size", type=int, default=None, help="algorithm.batch_size")
    ap.add_argument("--subpixel", default="on", choices=("on", "off", "both"))
    ap.add_argument("--subpixel-bins", type=int, default=None,
                    help="algorithm.subpixel_bins (default: the config's)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat every engine this many times, interleaved (noisy hosts); "
                         "the summary gives the median and range of each")
    ap.add_argument("--floor-reps", type=int, default=5)
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args(argv)
    if args.iterations < 1 or args.warmup < 0 or args.rounds < 1:
        ap.error("--iterations and --rounds must be >= 1 and --warmup >= 0")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.subpixel]
    rows = []
    for grid, frame in common.parse_sizes(args.sizes):
        t0 = time.perf_counter()
        scan, probe_m, info = common.make_scan(grid, frame)
        print(f"# {grid}x{grid} scan of {frame}^2 frames simulated in "
              f"{time.perf_counter() - t0:.1f} s (object {info['object_shape']})",
              file=sys.stderr, flush=True)
        for rnd in range(args.rounds):
            for engine in engines:
                for sub in modes:
                    row = run_engine(scan, probe_m, engine, sub, args)
                    row["size"] = f"{grid}x{frame}"
                    row["object_shape"] = info["object_shape"]
                    row["round"] = rnd
                    rows.append(row)
                    print(f"# {engine} subpixel={sub} fft={row['fft']}: "
                          f"{row['seconds_per_iteration']:.3f} s/it, "
                          f"{row['ratio_to_floor']:.2f}x floor, {_own(row)} x own",
                          file=sys.stderr, flush=True)
    print(table(rows))
    if args.rounds > 1:
        print(summary(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": common.machine(), "device": args.device,
                       "args": vars(args), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
