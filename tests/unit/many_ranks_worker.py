"""Worker for test_many_ranks.py (run under ``mpiexec -n N``; not a test module itself).

Reconstructs a tiny simulated scan with each engine named on the command line on
``COMM_WORLD`` (share_frequency 1, double precision) and saves, on rank 0, the assembled
object, the probe, the process grid and every rank's halo widths to ``OUT.npz``.
"""

from __future__ import annotations

import sys

import numpy as np
from mpi4py import MPI

import ptychompi
from ptychompi.data.scan import ArrayScan, ScanGeometry
from ptychompi.sim.simulate import simulate

FRAME, STEP_PX, PROBE_PX = 64, 8, 20


def make_scan(grid: str) -> tuple[ArrayScan, float]:
    """The simulated ``ROWSxCOLS`` raster (the first rows of a square one; same seed on every
    rank) and its pixel size."""
    rows, cols = (int(v) for v in grid.lower().split("x"))
    side = max(rows, cols)
    sim = simulate(frame=FRAME, grid=side, step_px=STEP_PX, probe_diameter_px=PROBE_PX,
                   photons=1e6, seed=0)
    keep = np.array([r * side + c for r in range(rows) for c in range(cols)])  # row-major
    scan = ArrayScan(path="sim", n_frames=len(keep), frame_shape=(FRAME, FRAME),
                     dtype=np.dtype(np.float32), positions_m=sim.positions_m[keep],
                     geometry=ScanGeometry(sim.wavelength_m, sim.distance_m,
                                           sim.detector_pixel_m),
                     frames=sim.frames[keep])
    return scan, sim.pixel_size_m


def make_config(engine: str, iterations: int, pixel_m: float) -> dict:
    return {"algorithm": {"name": engine, "iterations": iterations,
                          "probe_diameter_m": PROBE_PX * pixel_m, "seed": 0,
                          "precision": "double"},
            "parallel": {"device": "cpu", "share_frequency": 1, "workers": 1}}


def run(engine: str, grid: str, iterations: int, comm: MPI.Comm | None) -> dict:
    """One reconstruction; on rank 0 (or alone) its object, probe, grid and halo shapes."""
    scan, pixel_m = make_scan(grid)
    r = ptychompi.Reconstruction(make_config(engine, iterations, pixel_m), comm, scan=scan)
    r.step(iterations)
    obj, probe = r.object, r.probe
    halos = [h.shape for h in r.tile.halos.values()]
    halos = halos if comm is None else comm.gather(halos, root=0)
    grid_cells = r.tile.grid
    r.close()
    return {"object": obj, "probe": probe, "grid": np.asarray(grid_cells), "halos": halos}


def main(argv: list[str]) -> int:
    out, grid, iterations, engines = argv[0], argv[1], int(argv[2]), argv[3:]
    comm = MPI.COMM_WORLD
    saved: dict[str, np.ndarray] = {}
    for engine in engines:
        res = run(engine, grid, iterations, comm)
        if comm.Get_rank() == 0:
            saved[f"{engine}_object"] = res["object"]
            saved[f"{engine}_probe"] = res["probe"]
            saved["grid"] = res["grid"]
            widths = [min(s) for rank_halos in res["halos"] for s in rank_halos]
            saved["min_halo_width"] = np.asarray(min(widths) if widths else 0)
    if comm.Get_rank() == 0:
        np.savez(out, **saved)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
