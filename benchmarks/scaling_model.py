"""A per-iteration time model for N ranks, checked against runs here, projected to 1,024 GPUs.

``T(N) = compute + halo + collectives`` for the slowest rank, with nothing overlapped:

- compute: the one-rank time per position (measured here; a stated estimate on a GPU) times
  the most positions any rank holds (with several halo sums per iteration, counted: the sum
  over the batches of the most members any rank holds in a batch, since the ranks wait for
  the fullest one at each), times ``N / cores`` when ranks share fewer cores (the
  check here also gives a second prediction that uses, instead, the CPU share each rank got:
  CPU time over wall time, measured, since other jobs share this machine);
- halo: per halo sum one latency per message plus the rank's halo bytes per iteration over
  the bandwidth; the halo bytes are ``kappa x`` the rank's halo area, with ``kappa`` (bytes
  per halo pixel per iteration, as the code sends them now: LSQML's touched pixels, routed,
  the numerator Rice-coded) and the halo sums per iteration counted by the exchange in a
  real multi-rank run; the messages per halo sum are the neighbours, or on a routed grid
  (``sparse_halo.routable``: rows, then columns) the row and column neighbours only, which
  the check compares with the messages the exchange counted;
- collectives: the other MPI calls per iteration (counted) as ``2 log2 N`` latencies each
  plus twice their counted bytes (probe reductions, scaled by the frame area) over the
  bandwidth, as a recursive-doubling Allreduce.

Halo areas, neighbour counts and positions per rank come from ``decompose`` of the scan at N
ranks, the same function the runs use. Used by ``scaling.py --model``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from ptychompi.parallel.sparse_halo import routable
from ptychompi.parallel.tiling import decompose

#: GPU seconds per position per iteration, 256² frame, single precision (an estimate: about
#: eight FFT-sized passes and a dozen element-wise passes over 0.5 MiB, at ~2 TB/s effective)
GPU_POSITION_S = 20e-6
TARGET_FRAMES, TARGET_FRAME = 100_000, 256
RANKS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


@dataclass
class Counts:
    """Exchange counts per rank per iteration, from a real multi-rank run."""

    ranks: int
    halo_sums: float
    bytes_per_halo_pixel: float
    other_collectives: float
    other_bytes: float
    frame: int
    halo_messages: float = 0.0


@dataclass
class Network:
    latency_s: float
    bandwidth_Bps: float


def counts_from(result: dict) -> Counts:
    """The exchange counts of a scaling.py worker RESULT (the slowest-sending rank)."""
    rows = [r for r in result["per_rank"] if r["halo_area"] > 0]
    worst = max(rows, key=lambda r: r["halo_bytes_per_iter"])
    return Counts(
        ranks=result["ranks"],
        halo_sums=worst["halo_sums_per_iter"],
        bytes_per_halo_pixel=worst["halo_bytes_per_iter"] / worst["halo_area"],
        other_collectives=worst["collectives_per_iter"] - worst["halo_sums_per_iter"],
        other_bytes=worst["bytes_per_iter"] - worst["halo_bytes_per_iter"],
        frame=result["frame"], halo_messages=worst.get("halo_messages_per_iter", 0.0))


def raster_px(grid: int, step: float) -> np.ndarray:
    r, c = np.meshgrid(np.arange(grid) * step, np.arange(grid) * step, indexing="ij")
    return np.stack([r.ravel(), c.ravel()], axis=1)


def tile_figures(positions_px: np.ndarray, frame: int, ranks: int, batches: int = 1) -> dict:
    """Most positions, halo area and neighbours of any rank at ``ranks`` (from decompose),
    and ``batch_positions``: the positions the slowest rank waits for per iteration when the
    ranks synchronise after each of ``batches`` random batches (:func:`batch_positions`)."""
    tiles = decompose(positions_px, (frame, frame), ranks)
    areas = [sum(int(np.prod(h.shape)) for h in t.halos.values()) for t in tiles]
    owner = np.empty(len(positions_px), np.int64)
    for t in tiles:
        owner[t.indices] = t.rank
    most = max(len(t.indices) for t in tiles)
    return {"positions": most, "halo_area": max(areas),
            "neighbours": max(len(t.neighbours) for t in tiles), "grid": list(tiles[0].grid),
            "messages_per_sum": messages_per_sum(tiles, batches > 1),
            "batch_positions": batch_positions(owner, ranks, batches) if batches > 1 else most}


def messages_per_sum(tiles: list, touched: bool) -> int:
    """Most messages a rank sends per halo sum: one per neighbour, or, for LSQML's touched
    sums on a routed grid, one per row and column neighbour (a diagonal neighbour's part
    rides in them; pixels outside the corner boxes, which travel directly, are left out)."""
    if not (touched and routable(tiles)):
        return max(len(t.neighbours) for t in tiles)
    return max(sum(1 for n in t.neighbours
                   if tiles[n].coords[0] == t.coords[0] or tiles[n].coords[1] == t.coords[1])
               for t in tiles)


def batch_positions(owner: np.ndarray, ranks: int, batches: int, sweeps: int = 3) -> float:
    """Σ over an iteration's ``batches`` (a random order cut into equal parts, as LSQML's
    sparse batches) of the most members any rank holds, mean over ``sweeps`` seeded draws:
    every rank waits for the fullest one at each batch's halo sum."""
    rng = np.random.default_rng(0)
    total = 0.0
    for _ in range(sweeps):
        for part in np.array_split(rng.permutation(len(owner)), batches):
            total += float(np.bincount(owner[part], minlength=ranks).max())
    return total / sweeps


def predict(ranks: int, tiles: dict, position_s: float, counts: Counts, net: Network,
            frame: int, cores: int | None = None, slowdown: float | None = None) -> dict:
    """Predicted seconds per iteration (and its parts) for the slowest rank.

    Compute is slowed by ``N / cores`` when ranks outnumber cores, or by ``slowdown`` when
    given (the one-rank run's CPU share over this run's, on a machine shared with others).
    """
    if slowdown is None:
        slowdown = max(1.0, ranks / cores) if cores else 1.0
    compute = position_s * tiles.get("batch_positions", tiles["positions"]) * slowdown
    if ranks == 1:
        return {"compute": compute, "halo": 0.0, "collectives": 0.0, "total": compute}
    messages = tiles.get("messages_per_sum", tiles["neighbours"])
    halo = (counts.halo_sums * messages * net.latency_s
            + counts.bytes_per_halo_pixel * tiles["halo_area"] / net.bandwidth_Bps)
    steps = math.ceil(math.log2(ranks))
    other_bytes = counts.other_bytes * (frame / counts.frame) ** 2  # probe-sized reductions
    coll = (counts.other_collectives * 2 * steps * net.latency_s
            + 2 * other_bytes / net.bandwidth_Bps)
    return {"compute": compute, "halo": halo, "collectives": coll,
            "total": compute + halo + coll}


def check_here(measured: list[dict], counts: Counts, net: Network, args: argparse.Namespace,
               positions_px: np.ndarray) -> list[dict]:
    """Measured vs predicted seconds per iteration for the runs made here."""
    base = measured[0]
    position_s = base["seconds_per_iteration"] / base["n_frames"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    share_1 = base["per_rank"][0]["cpu_share"]
    rows = []
    for m in measured:
        tiles = tile_figures(positions_px, args.frame, m["ranks"], round(counts.halo_sums))
        p = predict(m["ranks"], tiles, position_s, counts, net, args.frame, cores)
        share = float(np.mean([r["cpu_share"] for r in m["per_rank"]]))
        q = predict(m["ranks"], tiles, position_s, counts, net, args.frame,
                    slowdown=share_1 / share)
        t = m["seconds_per_iteration"]
        rows.append({"ranks": m["ranks"], "measured_s": t, "predicted_s": p["total"],
                     "ratio": t / p["total"], "cpu_share": share,
                     "predicted_share_s": q["total"], "ratio_share": t / q["total"],
                     "parts": p, "tiles": tiles,
                     "measured_comm_s": max(r["comm_s_per_iter"] for r in m["per_rank"]),
                     "measured_bytes": max(r["bytes_per_iter"] for r in m["per_rank"]),
                     "halo_bytes": max(r["halo_bytes_per_iter"] for r in m["per_rank"]),
                     "predicted_halo_bytes": (counts.bytes_per_halo_pixel
                                              * tiles["halo_area"]) if m["ranks"] > 1 else 0,
                     "halo_messages": max(r.get("halo_messages_per_iter", 0)
                                          for r in m["per_rank"]),
                     "predicted_messages": (counts.halo_sums * tiles["messages_per_sum"]
                                            if m["ranks"] > 1 else 0)})
    return rows


def project(counts: Counts, net: Network, position_s: float, step_px: float) -> dict:
    """Strong (one 100k-frame scan) and weak (~98 positions per GPU) scaling to 1,024 GPUs."""
    side = int(round(math.sqrt(TARGET_FRAMES)))
    big = raster_px(side, step_px)
    per_gpu = TARGET_FRAMES / RANKS[-1]
    out: dict[str, list[dict]] = {"strong": [], "weak": []}
    for n in RANKS:
        t = tile_figures(big, TARGET_FRAME, n, round(counts.halo_sums))
        p = predict(n, t, position_s, counts, net, TARGET_FRAME)
        out["strong"].append({"ranks": n, "frames": len(big), **t, **p})
        g = max(2, int(round(math.sqrt(per_gpu * n))))
        w = raster_px(g, step_px)
        t = tile_figures(w, TARGET_FRAME, n, round(counts.halo_sums))
        p = predict(n, t, position_s, counts, net, TARGET_FRAME)
        out["weak"].append({"ranks": n, "frames": len(w), **t, **p})
    s1 = out["strong"][0]["total"]
    for r in out["strong"]:
        r["speedup"] = s1 / r["total"]
        r["efficiency"] = r["speedup"] / r["ranks"]
    w1 = out["weak"][0]
    for r in out["weak"]:  # positions per second relative to one GPU
        r["efficiency"] = (r["frames"] / r["total"]) / (w1["frames"] / w1["total"]) / r["ranks"]
    return out


def check_table(rows: list[dict]) -> str:
    head = (f"{'ranks':>5} {'measured s/it':>13} {'predicted':>9} {'meas/pred':>9} "
            f"{'cpu share':>9} {'pred(share)':>11} {'meas/pred':>9} "
            f"{'compute':>8} {'halo':>8} {'coll':>8} {'meas comm':>9} {'KiB/it':>8} "
            f"{'halo KiB':>8} {'pred':>8} {'msgs':>5} {'pred':>5}")
    lines = [head, "-" * len(head)]
    for r in rows:
        p = r["parts"]
        lines.append(f"{r['ranks']:5d} {r['measured_s']:13.4f} {r['predicted_s']:9.4f} "
                     f"{r['ratio']:9.2f} {r['cpu_share']:9.2f} {r['predicted_share_s']:11.4f} "
                     f"{r['ratio_share']:9.2f} {p['compute']:8.4f} {p['halo']:8.5f} "
                     f"{p['collectives']:8.5f} {r['measured_comm_s']:9.4f} "
                     f"{r['measured_bytes'] / 1024:8.1f} {r['halo_bytes'] / 1024:8.1f} "
                     f"{r['predicted_halo_bytes'] / 1024:8.1f} {r['halo_messages']:5.0f} "
                     f"{r['predicted_messages']:5.0f}")
    return "\n".join(lines)


def projection_table(proj: dict) -> str:
    head = ("| GPUs | strong: grid | positions/GPU | halo px/GPU | nbrs | msgs/sum | s/iter "
            "| comm % | speed-up | eff. | weak: frames | s/iter | eff. |")
    lines = [head, "|" + "---|" * 13]
    for s, w in zip(proj["strong"], proj["weak"], strict=True):
        comm = (s["halo"] + s["collectives"]) / s["total"] * 100
        lines.append(f"| {s['ranks']} | {s['grid'][0]}x{s['grid'][1]} | {s['positions']} | "
                     f"{s['halo_area']} | {s['neighbours']} | {s['messages_per_sum']} | "
                     f"{s['total']:.4g} | {comm:.0f} | "
                     f"{s['speedup']:.0f} | {s['efficiency']:.2f} | {w['frames']} | "
                     f"{w['total']:.3g} | {w['efficiency']:.2f} |")
    return "\n".join(lines)


def plot(proj: dict, path: str, title: str) -> None:
    """Speed-up (strong, log-log, with ideal) and efficiency (strong, weak) as a PNG."""
    from PIL import Image, ImageDraw  # noqa: PLC0415

    w, h, pad = 960, 400, 60
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.text((pad, 10), title, fill="black")
    panel_w = (w - 3 * pad) // 2
    lx = [math.log2(r["ranks"]) for r in proj["strong"]]
    xmax = max(lx)

    def frame(x0: int, label: str, ylabel: str, yticks: list[tuple[float, str]]) -> None:
        d.rectangle([x0, pad, x0 + panel_w, h - pad], outline="black")
        d.text((x0 + panel_w // 2 - 30, h - pad + 22), label, fill="black")
        d.text((x0 + 4, pad - 16), ylabel, fill="black")
        for i, v in enumerate(lx):
            if i % 2 == 0:
                x = x0 + v / xmax * panel_w
                d.line([x, h - pad, x, h - pad + 4], fill="black")
                d.text((x - 8, h - pad + 6), str(proj["strong"][i]["ranks"]), fill="black")
        for frac, text in yticks:
            y = h - pad - frac * (h - 2 * pad)
            d.line([x0 - 4, y, x0, y], fill="black")
            d.text((x0 - 34, y - 6), text, fill="black")

    def line(x0: int, ys: list[float], colour: str, dash: bool = False) -> None:
        pts = [(x0 + v / xmax * panel_w, h - pad - y * (h - 2 * pad)) for v, y in zip(lx, ys,
                                                                                   strict=True)]
        for i, (a, b) in enumerate(zip(pts, pts[1:], strict=False)):
            if not dash or i % 2 == 0:
                d.line([a, b], fill=colour, width=2)
        for x, y in pts:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)

    top = math.log2(RANKS[-1])
    frame(pad, "GPUs (log2)", "strong speed-up (log2)",
          [(k / top, str(2 ** k)) for k in range(0, int(top) + 1, 2)])
    line(pad, [v / top for v in lx], "gray", dash=True)
    line(pad, [max(0.0, math.log2(r["speedup"])) / top for r in proj["strong"]], "blue")
    x1 = 2 * pad + panel_w
    frame(x1, "GPUs (log2)", "parallel efficiency",
          [(k / 4, f"{k / 4:.2f}") for k in range(5)])
    line(x1, [min(1.0, r["efficiency"]) for r in proj["strong"]], "blue")
    line(x1, [min(1.0, r["efficiency"]) for r in proj["weak"]], "red")
    d.text((x1 + 10, pad + 6), "blue: strong (100k frames)   red: weak (~98 frames/GPU)",
           fill="black")
    d.text((pad + 10, pad + 6), "blue: model   gray dashed: ideal", fill="black")
    img.save(path, optimize=True)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("model (--model)")
    g.add_argument("--model", action="store_true",
                   help="measure --check rank counts here, predict them, project to 1,024 GPUs")
    g.add_argument("--check", default="1,2,4", help="rank counts to measure here (first: 1)")
    g.add_argument("--bandwidth", type=float, default=25e9,
                   help="projection network bandwidth, bytes/s per rank (default 25e9)")
    g.add_argument("--latency", type=float, default=2e-6,
                   help="projection network latency, s per message (default 2e-6)")
    g.add_argument("--gpu-position-s", type=float, default=GPU_POSITION_S,
                   help="GPU seconds per position per iteration at 256² (an estimate)")
    g.add_argument("--plot", default=None, help="write the projection plot (PNG) here")
    g.add_argument("--markdown", default=None, help="write the projection table here")


def run(args: argparse.Namespace, launch: Callable[[argparse.Namespace, int], dict]) -> int:
    """``scaling.py --model``: measure, check, project; print and optionally save."""
    counts_list = [int(k) for k in args.check.split(",")]
    if counts_list[0] != 1 or len(counts_list) < 2:
        raise SystemExit("--check must start with 1 and name a multi-rank count, e.g. 1,2,4")
    args.mode, args.pingpong = "strong", True
    measured = [launch(args, k) for k in counts_list]
    multi = [m for m in measured if m["ranks"] > 1]
    counts = counts_from(multi[-1])
    local = multi[0]["network"]
    net_here = Network(local["latency_s"], local["bandwidth_Bps"])
    import common  # noqa: PLC0415

    step = common.scan_params(args.frame)["step_px"]
    rows = check_here(measured, counts, net_here, args, raster_px(args.grid, step))
    print(f"counted per rank per iteration ({counts.ranks} ranks): {counts.halo_sums:g} halo "
          f"sums in {counts.halo_messages:g} messages, {counts.bytes_per_halo_pixel:.1f} B per "
          f"halo pixel, "
          f"{counts.other_collectives:g} other collectives, {counts.other_bytes:.0f} B in them")
    print(f"local network (ping-pong): {net_here.latency_s * 1e6:.2f} us, "
          f"{net_here.bandwidth_Bps / 1e9:.2f} GB/s")
    print(check_table(rows))
    net = Network(args.latency, args.bandwidth)
    proj = project(counts, net, args.gpu_position_s, common.scan_params(TARGET_FRAME)["step_px"])
    text = projection_table(proj)
    print(f"\nprojection: {args.engine}, {TARGET_FRAME}² frames, GPU "
          f"{args.gpu_position_s * 1e6:g} us/position (estimate), "
          f"{net.bandwidth_Bps / 1e9:g} GB/s, {net.latency_s * 1e6:g} us")
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    if args.plot:
        plot(proj, args.plot, f"{args.engine.upper()} model: {TARGET_FRAME}x{TARGET_FRAME} "
             f"frames, step {common.scan_params(TARGET_FRAME)['step_px']:g} px, "
             f"{args.gpu_position_s * 1e6:g} us/position/GPU (estimate), "
             f"{net.bandwidth_Bps / 1e9:g} GB/s, {net.latency_s * 1e6:g} us")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"counts": asdict(counts), "network_here": asdict(net_here),
                       "network": asdict(net), "check": rows, "projection": proj,
                       "measured": measured}, f, indent=1)
    return 0
