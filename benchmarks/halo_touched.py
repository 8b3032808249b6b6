"""What LSQML's sparse batches touch of each halo, and how unevenly they split over ranks.

For the simulated ``GRID x GRID`` scan of ``FRAME``² frames and each rank count, without MPI:
the tiles of :func:`decompose`, the batches LSQML draws (its own ``_batches`` on one rank, a
few iterations), and per batch and halo the pixels this rank's windows cover (what the
touched exchange sends), the neighbour's (what it receives) and both (where each side needs
the other's sum within the batch). Prints, per rank count and per rank per iteration, the
bytes of the full and the touched exchange (complex64 numerator + float32 denominator, 12 B
per pixel; and the numerator alone, 8 B, as LSQML sends it now: every rank computes the
denominator of its halos itself; and "deferred": the numerator only where both sides touched
plus, for a pixel one side alone changed, its object value once when the other side next
touches it — a scheme not built, counted here), a floor for any exact per-batch scheme (8 B
per pixel both sides touched: each side must learn the other's complex contribution there
before the batch's step), the object size, and the mean over batches of (most members on a
rank) / (mean members per rank): the per-batch load imbalance every synchronisation point waits for.

Two equivalent schemes are counted as well (not built): "routed", the numerator summed along
the grid's rows first and then its columns, so a rank sends to its row and column neighbours
only and the diagonal halos' pixels travel inside the column message; and "redundant", every
rank computing all of a batch's windows that reach its own pixels (a pixel belongs to the rank
of the nearest window centre) and receiving, per batch, the new object value of each pixel
outside its own that such a window reads and a window it did not compute changed (the step
terms travel as per-position partial sums in the gather LSQML makes anyway).

    python benchmarks/halo_touched.py --grid 30 --frame 128 --ranks 2,4

These counts are float32 values (8 B a pixel). LSQML now sends its numerator to the object's
precision (``parallel/halo_codec.py``), whose length depends on the values: count it in a
real run (``scaling.py --drive 2,4 --engine lsqml``; ``--halo touched`` matches the
"routed" counts here).

``--projection``: the same imbalance for the scaling model's 100k-frame raster of 256² frames
(``scaling_model.py``) on 2 to 1,024 ranks, with ten uniformly random batches per iteration
(the model's compute term counts the most positions per rank per iteration; with per-batch
synchronisation it is the sum over batches of the most members per rank).
"""

from __future__ import annotations

import argparse
import json
import sys

import common
import numpy as np

import ptychompi
from ptychompi.parallel.sparse_halo import cover
from ptychompi.parallel.tiling import Box, decompose


def analyse(engine: object, ranks: int, iterations: int, frame: int) -> dict:
    pos = np.stack([engine.rows, engine.cols], 1).astype(np.float64)  # one rank: global
    tops = np.stack([engine.rows, engine.cols], 1).astype(np.int64)
    tiles = decompose(pos, (frame, frame), ranks)
    owner = np.empty(len(pos), np.int64)
    for t in tiles:
        owner[t.indices] = t.rank
    own = both = area = deferred = routed = refresh = computed = 0
    imbalance = []
    behind: dict[tuple[int, int], np.ndarray] = {}  # n's copy behind t's (t alone changed it)
    whole = Box(0, 0, int(tops[:, 0].max()) + frame, int(tops[:, 1].max()) + frame)
    pixel_owner = _pixel_owner(tops, owner, whole.shape, frame)
    ghosts = [_cover(tops[_reaching(tops, pixel_owner == t.rank, frame)], whole, frame)
              & (pixel_owner != t.rank) for t in tiles]
    for _ in range(iterations):
        engine._batches()  # the global batches of one iteration, as LSQML draws them
        for part in engine._parts:
            counts = np.bincount(owner[part], minlength=ranks)
            imbalance.append(counts.max() / counts.mean())
            lit = [_cover(tops[part[owner[part] == t.rank]], whole, frame) for t in tiles]
            routed += _routed(tiles, lit)
            for t, ghost in zip(tiles, ghosts, strict=True):  # redundant windows
                mine = part[_reaching(tops[part], pixel_owner == t.rank, frame)]
                computed += len(mine)
                others = np.setdiff1d(part, mine)
                refresh += int((ghost & _cover(tops[others], whole, frame)).sum())
            for t in tiles:
                mine = tops[part[owner[part] == t.rank]]
                for n, halo in t.halos.items():
                    a = cover(mine, halo, (frame, frame))
                    b = cover(tops[part[owner[part] == n]], halo, (frame, frame))
                    own += int(a.sum())
                    both += int((a & b).sum())
                    # deferred: t sends its numerator where both touched, and its object
                    # value where n touches a pixel only t changed since n last had it
                    late = behind.get((t.rank, n), np.zeros_like(a))
                    deferred += int((a & b).sum() + (b & late).sum())
                    behind[(t.rank, n)] = (late & ~b) | (a & ~b)
                    area += int(np.prod(halo.shape))
    per = ranks * iterations  # per rank per iteration
    return {"ranks": ranks, "grid": list(tiles[0].grid),
            "full_MB": 12 * area / per / 1e6, "touched_MB": 12 * own / per / 1e6,
            "numerator_MB": 8 * own / per / 1e6, "deferred_MB": 8 * deferred / per / 1e6,
            "routed_MB": 8 * routed / per / 1e6, "redundant_MB": 8 * refresh / per / 1e6,
            "redundant_work": computed / (iterations * len(owner)),
            "floor_MB": 8 * both / per / 1e6, "touched_fraction": own / max(area, 1),
            "both_fraction": both / max(area, 1),
            "batch_imbalance": float(np.mean(imbalance))}


def _cover(tops: np.ndarray, box: Box, frame: int) -> np.ndarray:
    return cover(tops.reshape(-1, 2), box, (frame, frame))


def _pixel_owner(tops: np.ndarray, owner: np.ndarray, shape: tuple[int, int],
                 frame: int) -> np.ndarray:
    """Each pixel's rank: the owner of the window whose centre is nearest."""
    from scipy.spatial import cKDTree  # noqa: PLC0415

    grid = np.indices(shape).reshape(2, -1).T
    return owner[cKDTree(tops + frame / 2).query(grid)[1]].reshape(shape)


def _reaching(tops: np.ndarray, mask: np.ndarray, frame: int) -> np.ndarray:
    """Which windows at ``tops`` cover a pixel of ``mask`` (an integral image)."""
    s = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    s[1:, 1:] = mask.cumsum(0).cumsum(1)
    r0, c0 = np.clip(tops[:, 0], 0, mask.shape[0]), np.clip(tops[:, 1], 0, mask.shape[1])
    r1 = np.clip(tops[:, 0] + frame, 0, mask.shape[0])
    c1 = np.clip(tops[:, 1] + frame, 0, mask.shape[1])
    return (s[r1, c1] - s[r0, c1] - s[r1, c0] + s[r0, c0]) > 0


def _routed(tiles: list, lit: list[np.ndarray]) -> int:
    """Pixels sent in one batch's numerator sum along rows, then columns (``sparse_halo``'s
    routed sum): to a row neighbour what this rank's windows lit in their halo; to a column
    neighbour what is not zero after the row step (its own or a row neighbour's windows lit);
    to a diagonal one what its windows lit outside the box of the row neighbour beside it."""
    at = {t.coords: t for t in tiles}
    sent = 0
    for t in tiles:
        rows = [n for n in t.halos if tiles[n].coords[0] == t.coords[0]]
        partial = lit[t.rank].copy()
        for n in rows:
            r = t.halos[n].slices()
            sent += int(lit[t.rank][r].sum())
            partial[r] |= lit[n][r]
        for n, halo in t.halos.items():
            dy, dx = (tiles[n].coords[k] - t.coords[k] for k in (0, 1))
            if dy == 0:
                continue
            if dx == 0:
                sent += int(partial[halo.slices()].sum())
                continue
            direct = lit[t.rank][halo.slices()].copy()  # but where the row neighbour carries it
            h = at.get((t.coords[0], t.coords[1] + dx))
            inner = None if h is None else h.box.intersect(halo)
            if inner is not None:
                direct[inner.r0 - halo.r0:inner.r1 - halo.r0,
                       inner.c0 - halo.c0:inner.c1 - halo.c0] = False
            sent += int(direct.sum())
    return sent


def projection(iterations: int, batches: int = 10) -> None:
    """Per-batch member imbalance of the model's 100k-frame scan, 2 to 1,024 ranks."""
    import scaling_model  # noqa: PLC0415

    side = int(round(np.sqrt(scaling_model.TARGET_FRAMES)))
    frame = scaling_model.TARGET_FRAME
    pos = scaling_model.raster_px(side, common.scan_params(frame)["step_px"])
    rng = np.random.default_rng(0)
    print(f"{len(pos)} positions of {frame}², {batches} random batches per iteration")
    print("| ranks | positions/rank | batch members, most / mean |")
    print("|---|---|---|")
    for k in scaling_model.RANKS[1:]:
        owner = np.empty(len(pos), np.int64)
        for t in decompose(pos, (frame, frame), k):
            owner[t.indices] = t.rank
        ratios = []
        for _ in range(iterations):
            for part in np.array_split(rng.permutation(len(pos)), batches):
                counts = np.bincount(owner[part], minlength=k)
                ratios.append(counts.max() / counts.mean())
        print(f"| {k} | {len(pos) / k:.0f} | {np.mean(ratios):.3f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, default=30)
    ap.add_argument("--frame", type=int, default=128)
    ap.add_argument("--ranks", default="2,4")
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--projection", action="store_true",
                    help="the per-batch imbalance of the model's 100k-frame scan instead")
    args = ap.parse_args(argv)
    if args.projection:
        projection(args.iterations)
        return 0
    scan, probe_m, info = common.make_scan(args.grid, args.frame)
    cfg = common.make_config("lsqml", 1, probe_m, True, "cpu", 1, batch_size=args.batch_size)
    recon = ptychompi.Reconstruction(cfg, None, scan=scan)
    obj_mb = int(np.prod(recon.layout.object_shape)) * 8 / 1e6
    print(f"{args.grid}x{args.grid} scan of {args.frame}², object {obj_mb:.2f} MB (complex64), "
          f"{recon.engine.n_batches} batches per iteration")
    print("| ranks | grid | full halo MB/rank/it | touched MB | touched, numerator only MB | "
          "deferred MB | routed MB | redundant MB (windows computed) | exact floor MB | "
          "touched | both touched | batch max/mean members |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for k in (int(v) for v in args.ranks.split(",")):
        r = analyse(recon.engine, k, args.iterations, args.frame)
        print(f"| {k} | {r['grid'][0]}x{r['grid'][1]} | {r['full_MB']:.2f} | "
              f"{r['touched_MB']:.2f} | {r['numerator_MB']:.2f} | {r['deferred_MB']:.2f} | "
              f"{r['routed_MB']:.2f} | {r['redundant_MB']:.2f} ({r['redundant_work']:.2f}x) | "
              f"{r['floor_MB']:.2f} | "
              f"{r['touched_fraction']:.2f} | "
              f"{r['both_fraction']:.2f} | {r['batch_imbalance']:.3f} |")
        print(json.dumps(r), file=sys.stderr)
    recon.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
