"""MPI: rank-count invariance of the reconstructions and per-rank memory (DESIGN.md 6 and 9).

Run with ``mpiexec -n N python -m pytest --with-mpi tests/mpi/test_invariance.py`` for
N = 1, 2, 3, 4. Every test compares the run on ``COMM_WORLD`` with the same config run by
rank 0 alone (``comm=None``); with N = 1 the two are the same computation.

The one-rank references are computed once per process (rank 0 only) while the other ranks
wait in a sleeping poll, so oversubscribed CI machines (4 ranks on 2 cores) are not slowed by
MPI's busy wait.
"""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

import ptychompi
from ptychompi.data.scan import ArrayScan, ScanGeometry
from ptychompi.model.metrics import object_error
from ptychompi.sim.simulate import simulate

from .common import rel, sleeping_barrier

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()

FRAME, GRID, STEP_PX, PROBE_PX = 64, 10, 8, 20
ITERATIONS = 30
EXACT_SINGLE = 1e-4  # complex64: n ranks vs one rank (DM and LSQML; measured ~5e-8)
EXACT_DOUBLE = 1e-7  # complex128: exact up to rounding
# error at most this far above one rank's: DM sharing every 5 iterations; ePIE, whose ranks
# update their tiles sequentially on their own: rPIE's object step with a falling alpha gains
# more on one rank than on tiles (errors on 1 / 2 / 3 / 4 ranks 0.055 / 0.062 / 0.083 / 0.077
# with the object momentum, ratios up to 1.51; without it 0.072 / 0.085 / 0.107 / 0.103; with
# classic ePIE 0.140 / 0.115 / 0.129 / 0.141)
ERROR_RATIO = {"dm": 1.10, "epie": 1.6}

# The object the tiles issue's bars were set on: weaker and not band-limited. On the default
# (stronger, band-limited) object tiled ePIE converges more slowly per iteration: truth error
# after 30 iterations 1.12x / 1.16x / 1.36x one rank's on 2 / 3 / 4 ranks (README, MPI).
WEAK_OBJECT = {"smooth_rad": 1.0, "contrast": 1.0, "bandwidth": None}
SIM = simulate(frame=FRAME, grid=GRID, step_px=STEP_PX, probe_diameter_px=PROBE_PX,
               photons=1e6, seed=0, object_options=WEAK_OBJECT)
_REFERENCE: dict[tuple, tuple[np.ndarray, np.ndarray, float]] = {}


def make_scan() -> ArrayScan:
    return ArrayScan(path="sim", n_frames=len(SIM.frames), frame_shape=(FRAME, FRAME),
                     dtype=np.dtype(np.float32), positions_m=SIM.positions_m,
                     geometry=ScanGeometry(SIM.wavelength_m, SIM.distance_m,
                                           SIM.detector_pixel_m),
                     frames=SIM.frames)


def make_config(engine: str, share_frequency: int = 1, precision: str = "single") -> dict:
    return {"algorithm": {"name": engine, "iterations": ITERATIONS,
                          "probe_diameter_m": PROBE_PX * SIM.pixel_size_m, "seed": 0,
                          "precision": precision},
            "parallel": {"device": "cpu", "share_frequency": share_frequency}}


def truth_error(obj: np.ndarray, positions: np.ndarray) -> float:
    return object_error(obj, positions, SIM.object, SIM.positions_px, SIM.probe)


def reference(engine: str, share_frequency: int = 1, precision: str = "single"
              ) -> tuple[np.ndarray, np.ndarray, float] | None:
    """One rank's (object, probe, truth error) on rank 0 (``None`` elsewhere); cached."""
    key = (engine, share_frequency, precision)
    if rank == 0 and key not in _REFERENCE:
        r = ptychompi.Reconstruction(make_config(engine, share_frequency, precision), None,
                                     scan=make_scan())
        r.step(ITERATIONS)
        obj = r.object
        _REFERENCE[key] = (obj, r.probe, truth_error(obj, r.positions))
        r.close()
    sleeping_barrier()
    return _REFERENCE.get(key)


def run_here(engine: str, share_frequency: int = 1, precision: str = "single"
             ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """The same config on COMM_WORLD: (assembled object on rank 0, probe, positions)."""
    r = ptychompi.Reconstruction(make_config(engine, share_frequency, precision), comm,
                                 scan=make_scan())
    r.step(ITERATIONS)
    out = (r.object, r.probe, r.positions)
    r.close()
    return out


def report(name: str, figures: dict) -> dict:
    """Broadcast rank 0's figures so every rank passes or fails together; print them."""
    figures = comm.bcast(figures if rank == 0 else None, root=0)
    if rank == 0:
        text = " ".join(f"{k}={v:.3e}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in figures.items())
        print(f"\n[invariance] ranks={size} {name}: {text}", flush=True)
    return figures


@pytest.mark.mpi
@pytest.mark.parametrize(("engine", "precision"), [
    ("lsqml", "single"), ("lsqml", "double"), ("dm", "single"), ("dm", "double")])
def test_share_frequency_1_equals_one_rank(engine: str, precision: str) -> None:
    """Halo-summed numerator and denominator: n ranks follow the one-rank trajectory."""
    ref = reference(engine, 1, precision)
    obj, probe, _ = run_here(engine, 1, precision)
    figures = {}
    if rank == 0:
        ref_obj, ref_probe, _ = ref
        assert obj.shape == ref_obj.shape and probe.shape == ref_probe.shape
        expected = np.complex64 if precision == "single" else np.complex128
        assert obj.dtype == expected and probe.dtype == expected
        figures = {"object": rel(obj, ref_obj), "probe": rel(probe, ref_probe)}
    figures = report(f"{engine}/{precision} sf=1", figures)
    tol = EXACT_SINGLE if precision == "single" else EXACT_DOUBLE
    assert figures["object"] <= tol, figures
    assert figures["probe"] <= tol, figures


@pytest.mark.mpi
@pytest.mark.parametrize(("engine", "share_frequency"), [("epie", 1), ("dm", 5)])
def test_error_within_tolerance_of_one_rank(engine: str, share_frequency: int) -> None:
    """ePIE (per-rank sequential updates) and DM sharing every 5 iterations: the truth error
    on n ranks is at most ERROR_RATIO above one rank's (being better is allowed)."""
    ref = reference(engine, share_frequency)
    obj, _, positions = run_here(engine, share_frequency)
    figures = {}
    if rank == 0:
        err_n, err_1 = truth_error(obj, positions), ref[2]
        figures = {"error_n": err_n, "error_1": err_1, "ratio": err_n / err_1}
    figures = report(f"{engine} sf={share_frequency}", figures)
    assert np.isfinite(figures["error_n"]), figures
    assert figures["ratio"] <= ERROR_RATIO[engine], figures


@pytest.mark.mpi
def test_memory_per_rank_is_the_tile() -> None:
    """Each rank holds its box of the object, its frames only, and every frame exactly once."""
    r = ptychompi.Reconstruction(make_config("lsqml"), comm, scan=make_scan())
    r.step(1)
    tile = r.tile
    assert r.local_object.shape == tile.box.shape
    global_area = int(np.prod(r.layout.object_shape))
    box_area = int(np.prod(tile.box.shape))
    halo_area = sum(int(np.prod(h.shape)) for h in tile.halos.values())
    assert box_area <= global_area / size + halo_area, (box_area, global_area, halo_area)
    assert r.engine.data.amplitudes.shape[0] == len(tile.indices)
    assert r.engine.data.amplitudes.shape[1:] == (FRAME, FRAME)
    held = comm.allgather(np.asarray(tile.indices))
    every = np.sort(np.concatenate(held))
    np.testing.assert_array_equal(every, np.arange(len(SIM.frames)))
    counts = comm.allgather(len(tile.indices))
    assert max(counts) - min(counts) <= 1, counts
    r.close()
