"""``run --follow``: latency from the last row written to the final result, against offline.

A simulated ``grid x grid`` scan of ``frame``² patterns is written as APS row files (one per
scan row, ``--row-s`` seconds apart) by ``tests/unit/follow_writer.py`` while
``ptychompi run --follow`` reconstructs it; the latency is the time from the last row file's
completion to ``result.h5``'s. The offline figure is ``ptychompi run`` on the finished files
(same config, same iterations), wall time from start to ``result.h5``.

    python benchmarks/follow.py --grid 30 --frame 128 --iterations 60 --row-s 1.0
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from ptychompi.io.results import read_result
from ptychompi.model.metrics import object_error, registered_object_error
from ptychompi.sim.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]
WRITER = ROOT / "tests" / "unit" / "follow_writer.py"
PTYCHOMPI = Path(sys.executable).parent / "ptychompi"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", type=int, default=30)
    p.add_argument("--frame", type=int, default=128)
    p.add_argument("--iterations", type=int, default=60)
    p.add_argument("--engine", default="dm")
    p.add_argument("--row-s", type=float, default=1.0, help="seconds between row files")
    p.add_argument("--final", type=int, default=None, help="data.follow.final_iterations")
    p.add_argument("--ranks", type=int, default=1)
    a = p.parse_args()
    step, probe = a.frame * 15 / 128, a.frame * 40 / 128
    sim = simulate(frame=a.frame, grid=a.grid, step_px=step, probe_diameter_px=probe, seed=0)
    tmp = Path(tempfile.mkdtemp(prefix="follow_bench_"))
    np.savez(tmp / "frames.npz", frames=sim.frames)
    np.savetxt(tmp / "pos.csv", sim.positions_m, delimiter=",")
    base = {"data": {"path": str(tmp / "rows" / "scan_%03d.h5"),
                     "position_file": str(tmp / "pos.csv"), "scan_dims": [a.grid, a.grid],
                     "follow": {"poll_s": 0.2, "timeout_s": 60,
                                "final_iterations": a.final}},
            "geometry": {"energy_kev": float(sim.energy_kev),
                         "distance_m": float(sim.distance_m),
                         "detector_pixel_m": float(sim.detector_pixel_m)},
            "algorithm": {"name": a.engine, "iterations": a.iterations,
                          "probe_diameter_m": float(probe * sim.pixel_size_m)},
            "parallel": {"device": "cpu"}, "output": {"live_every": 10}}
    launch = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(a.ranks)] \
        if a.ranks > 1 else []

    def run(name: str, follow: bool) -> tuple[float, Path]:
        cfg = json.loads(json.dumps(base))
        cfg["output"]["directory"] = str(tmp / name)
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        t0 = time.time()
        cmd = [*launch, str(PTYCHOMPI), "run", str(path), "--quiet"]
        subprocess.run(cmd + (["--follow"] if follow else []), check=True)
        return t0, tmp / name / "result.h5"

    (tmp / "rows").mkdir()
    log = tmp / "writer.log"
    writer = subprocess.Popen([sys.executable, str(WRITER), str(tmp / "frames.npz"),
                               str(tmp / "rows"), "--rows", str(a.grid), "--delay",
                               str(a.row_s), "--log", str(log)])
    t_start, follow_result = run("follow", True)
    writer.wait()
    last_row = float(log.read_text().split()[-1])
    first_row = float(log.read_text().split()[2])
    done = follow_result.stat().st_mtime
    t_off, off_result = run("offline", False)
    off_wall = off_result.stat().st_mtime - t_off

    def error(path: Path, registered: bool = False) -> float:
        r = read_result(path)
        metric = registered_object_error if registered else object_error
        return metric(r.object, r.positions, sim.object, sim.positions_px, sim.probe)

    out = {"grid": a.grid, "frame": a.frame, "engine": a.engine, "iterations": a.iterations,
           "ranks": a.ranks, "row_s": a.row_s,
           "all_rows_at_iteration":
               read_result(follow_result).provenance["follow"]["schedule"][-1][0],
           "scan_s": round(last_row - first_row, 2),
           "latency_s": round(done - last_row, 2), "offline_wall_s": round(off_wall, 2),
           "follow_error": round(error(follow_result), 4),
           "offline_error": round(error(off_result), 4),
           # after sub-pixel registration: a shift of the whole object (the probe/object
           # translation ambiguity) is no reconstruction error
           "follow_registered": round(error(follow_result, True), 4),
           "offline_registered": round(error(off_result, True), 4)}
    print(json.dumps(out))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
