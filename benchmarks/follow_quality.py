"""``run --follow`` quality against offline at equal iterations, on a replayed schedule.

A simulated ``grid x grid`` scan of ``frame``² patterns is written as APS row files at once;
the follow run replays the arrival schedule of rows paced as a live run paces them (row ``k``
of ``R`` comes in at iteration ``(iterations - kept) * (k - 1) // R``, so the last row arrives
``kept`` iterations or so before the end), in process, with no timing involved; the offline
run reconstructs the same files with the same settings. Errors are registered
(``registered_object_error``: a sub-pixel shift of the whole object removed).

    python benchmarks/follow_quality.py --grid 30 --frame 128 --iterations 60 --engines dm
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from ptychompi import Reconstruction
from ptychompi.config import config_from_dict
from ptychompi.model.metrics import registered_object_error
from ptychompi.sim.simulate import simulate


def paced_schedule(rows: int, iterations: int, kept: int) -> list[list[int]]:
    """``[[iteration, rows in], ...]`` of rows arriving as fast as a live run uses them."""
    due: dict[int, int] = {}
    for k in range(1, rows + 1):
        due[(iterations - kept) * (k - 1) // rows] = k
    return [[i, k] for i, k in sorted(due.items())]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", type=int, default=30)
    p.add_argument("--frame", type=int, default=128)
    p.add_argument("--iterations", type=int, default=60)
    p.add_argument("--kept", type=int, default=None, help="default: iterations // 3")
    p.add_argument("--engines", default="epie,lsqml,dm")
    p.add_argument("--step", type=float, default=None, help="scan step, px (frame * 15/128)")
    p.add_argument("--probe", type=float, default=None, help="probe diameter, px (frame / 3.2)")
    p.add_argument("--schedule", default="", help="JSON [[iteration, rows], ...] to replay "
                   "instead of the paced one")
    p.add_argument("--seeds", type=int, default=1, help="seeds of the position order")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--skip-offline", default="", help="JSON {engine: [errors]} known")
    p.add_argument("--bands", type=int, default=0,
                   help="also the error over each of this many bands of scan rows")
    p.add_argument("--save", default="", help="folder for the objects (ENGINE_SEED_MODE.npz)")
    a = p.parse_args()
    kept = a.kept if a.kept is not None else max(1, a.iterations // 3)
    step = a.step if a.step is not None else a.frame * 15 / 128
    probe = a.probe if a.probe is not None else a.frame * 40 / 128
    sim = simulate(frame=a.frame, grid=a.grid, step_px=step, probe_diameter_px=probe, seed=0)
    tmp = Path(tempfile.mkdtemp(prefix="follow_quality_"))
    (tmp / "rows").mkdir()
    for i in range(a.grid):
        with h5py.File(tmp / "rows" / f"scan_{i + 1:03d}.h5", "w") as f:
            f.create_dataset("/entry/data/data", data=sim.frames[i * a.grid:(i + 1) * a.grid])
    np.savetxt(tmp / "pos.csv", sim.positions_m, delimiter=",")
    schedule = (json.loads(a.schedule) if a.schedule
                else paced_schedule(a.grid, a.iterations, kept))
    known = json.loads(a.skip_offline) if a.skip_offline else {}

    def config(engine: str, seed: int, follow: bool) -> dict:
        data = {"path": str(tmp / "rows" / "scan_%03d.h5"), "position_file": str(tmp / "pos.csv"),
                "scan_dims": [a.grid, a.grid]}
        if follow:
            data["follow"] = {"enabled": True, "poll_s": 0.01, "timeout_s": 10,
                              "final_iterations": kept, "schedule": schedule}
        return {"data": data,
                "geometry": {"energy_kev": float(sim.energy_kev),
                             "distance_m": float(sim.distance_m),
                             "detector_pixel_m": float(sim.detector_pixel_m)},
                "algorithm": {"name": engine, "iterations": a.iterations, "seed": seed,
                              "probe_diameter_m": float(probe * sim.pixel_size_m)},
                "parallel": {"device": "cpu", "workers": 1},
                "output": {"directory": str(tmp / "out")}}

    def error(r: Reconstruction) -> float:
        return registered_object_error(r.object, r.positions, sim.object, sim.positions_px,
                                       sim.probe)

    def save(r: Reconstruction, engine: str, seed: int, mode: str) -> None:
        if a.save:
            Path(a.save).mkdir(parents=True, exist_ok=True)
            np.savez(Path(a.save) / f"{engine}_{seed}_{mode}.npz", object=r.object,
                     probe=r.probe, positions=r.positions)

    def band_errors(r: Reconstruction) -> list[float]:
        """The error over the frames of each band of scan rows (first rows first)."""
        out = []
        for rows in np.array_split(np.arange(a.grid), a.bands):
            sel = np.arange(rows[0] * a.grid, (rows[-1] + 1) * a.grid)
            out.append(round(registered_object_error(r.object, r.positions[sel], sim.object,
                                                     sim.positions_px[sel], sim.probe), 4))
        return out

    from ptychompi.app.follow import build_follow  # noqa: PLC0415

    out: dict = {"grid": a.grid, "frame": a.frame, "iterations": a.iterations, "kept": kept,
                 "all_rows_at_iteration": schedule[-1][0], "engines": {}}
    for engine in a.engines.split(","):
        fol, off = [], []
        t0 = time.perf_counter()
        for seed in range(a.first_seed, a.first_seed + a.seeds):
            with build_follow(config_from_dict(config(engine, seed, True)), None) as r:
                r.run()
                fol.append(round(error(r), 5))
                save(r, engine, seed, "follow")
                if a.bands:
                    print(json.dumps({engine: {"follow_bands": band_errors(r)}}), flush=True)
            if engine in known:
                continue
            with Reconstruction(config(engine, seed, False)) as r:
                r.run()
                off.append(round(error(r), 5))
                save(r, engine, seed, "offline")
                if a.bands:
                    print(json.dumps({engine: {"offline_bands": band_errors(r)}}), flush=True)
        off = known.get(engine, off)
        out["engines"][engine] = {"follow": fol, "offline": off,
                                  "ratio": round(float(np.mean(fol) / np.mean(off)), 3),
                                  "seconds": round(time.perf_counter() - t0, 1)}
        print(json.dumps({engine: out["engines"][engine]}), flush=True)
    print(json.dumps(out))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
