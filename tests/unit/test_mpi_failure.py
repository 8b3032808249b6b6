"""``mpiexec -n N ptychompi run`` end to end: a good run, and failures that end every rank
with one line on stderr instead of hanging (DESIGN.md section 6, Failure)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from ptychompi.io.cxi import write_cxi
from ptychompi.sim.simulate import simulate

BIN = Path(sys.executable).parent
MPIEXEC = BIN / "mpiexec"
PTYCHOMPI = BIN / "ptychompi"
FRAME, PROBE_PX = 64, 20

pytestmark = pytest.mark.skipif(not (MPIEXEC.exists() and PTYCHOMPI.exists()),
                                reason="no mpiexec or ptychompi beside the interpreter")


def _env() -> dict[str, str]:
    """The environment without an enclosing MPI job's variables (tests may run under one)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "HYDRA_"))}


def _mpirun(n: int, args: list[str], cwd: Path, timeout: float) -> tuple[
        subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run([str(MPIEXEC), "-n", str(n), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=_env())
    return proc, time.monotonic() - start


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("ptychompi:")]


def _write_config(tmp: Path, scan: Path, pixel_size_m: float, **algorithm: object) -> Path:
    cfg = {"data": {"path": str(scan)},
           "algorithm": {"name": "lsqml", "iterations": 4,
                         "probe_diameter_m": PROBE_PX * pixel_size_m, **algorithm},
           "parallel": {"device": "cpu"},
           "output": {"directory": str(tmp / "out")}}
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _simulated_cxi(path: Path, grid: int, frames_hook=None, keep: int | None = None) -> float:
    """Write a simulated scan (optionally edited by ``frames_hook(frames, positions_px)``
    and cut to its first ``keep`` positions); return the object pixel size."""
    sim = simulate(frame=FRAME, grid=grid, step_px=8, probe_diameter_px=PROBE_PX,
                   photons=1e6, seed=0)
    frames = sim.frames.astype(np.float32)
    positions_m, positions_px = sim.positions_m, sim.positions_px
    if keep is not None:
        frames, positions_m, positions_px = frames[:keep], positions_m[:keep], \
            positions_px[:keep]
    if frames_hook is not None:
        frames = frames_hook(frames, positions_px)
    write_cxi(path, frames, positions_m, distance_m=sim.distance_m,
              pixel_size_m=sim.detector_pixel_m, wavelength_m=sim.wavelength_m,
              compression=None)
    return float(sim.pixel_size_m)


def test_run_on_two_ranks_writes_result(tmp_path: Path) -> None:
    scan = tmp_path / "scan.cxi"
    sim = subprocess.run([str(PTYCHOMPI), "simulate", "--out", str(scan), "--frame", "64",
                          "--grid", "8", "--step-px", "8", "--probe-diameter-px", "20"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_env())
    assert sim.returncode == 0, sim.stderr
    with h5py.File(tmp_path / "scan.truth.h5", "r") as f:
        pixel = float(f["pixel_size_m"][()])
    cfg = _write_config(tmp_path, scan, pixel)
    proc, _ = _mpirun(2, [str(PTYCHOMPI), "run", str(cfg)], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    result = tmp_path / "out" / "result.h5"
    assert result.exists()
    with h5py.File(result, "r") as f:
        for key in ("object", "probe", "positions", "error", "pixel_size"):
            assert key in f, key
        assert f["positions"].shape == (64, 2)
        assert f["error"].shape == (4,) and np.all(np.isfinite(f["error"][()]))
        assert np.all(np.isfinite(f["object"][()]))
        assert f["pixel_size"][()] == pytest.approx(pixel)
        ranks = f["provenance"].attrs.get("ranks", None)
        if ranks is None:
            ranks = f["provenance"]["ranks"][()]
        assert int(ranks) == 2
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_nan_frames_on_one_rank_end_the_run_with_one_line(tmp_path: Path) -> None:
    def nan_upper_half(frames: np.ndarray, positions_px: np.ndarray) -> np.ndarray:
        upper = positions_px[:, 0] > np.median(positions_px[:, 0])
        assert 0 < upper.sum() < len(frames)
        frames = frames.copy()
        frames[upper] = np.nan
        return frames

    scan = tmp_path / "nan.cxi"
    pixel = _simulated_cxi(scan, grid=8, frames_hook=nan_upper_half)
    cfg = _write_config(tmp_path, scan, pixel)
    proc, elapsed = _mpirun(2, [str(PTYCHOMPI), "run", str(cfg)], tmp_path, timeout=60)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert elapsed < 30, elapsed
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ptychompi: error:"), lines
    assert re.search(r"\brank [01]\b", lines[0]), lines
    assert "NaN" in lines[0], lines
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "result.h5").exists()


DRIVER = textwrap.dedent("""
    import sys
    import numpy as np
    from mpi4py import MPI
    from ptychompi import Reconstruction
    from ptychompi.errors import PtychompiError
    from ptychompi.parallel.exchange import abort_on_error
    from ptychompi.data.scan import ArrayScan, ScanGeometry
    from ptychompi.sim.simulate import simulate

    comm = MPI.COMM_WORLD
    sim = simulate(frame=64, grid=6, step_px=8, probe_diameter_px=20, photons=1e6, seed=0)
    scan = ArrayScan(path="sim", n_frames=len(sim.frames), frame_shape=(64, 64),
                     dtype=np.dtype(np.float32), positions_m=sim.positions_m,
                     geometry=ScanGeometry(sim.wavelength_m, sim.distance_m,
                                           sim.detector_pixel_m),
                     frames=sim.frames)
    cfg = {"algorithm": {"name": "dm", "iterations": 10, "seed": 0,
                         "probe_diameter_m": 20 * sim.pixel_size_m},
           "parallel": {"device": "cpu", "share_frequency": 1}}
    recon = Reconstruction(cfg, comm, scan=scan)
    if comm.Get_rank() == 1:
        engine = recon.engine
        original = engine._iterate

        def failing():
            if engine.iteration == 3:
                raise RuntimeError("injected failure at iteration 3")
            return original()

        engine._iterate = failing
    try:  # the loop of ptychompi.app.runner.run_cli
        while recon.iteration < 10:
            recon.step()
    except PtychompiError:
        raise
    except Exception as exc:
        abort_on_error(comm, exc)
    print("finished", comm.Get_rank(), flush=True)
""")


def test_exception_on_one_rank_mid_iteration_aborts_every_rank(tmp_path: Path) -> None:
    proc, elapsed = _mpirun(2, [sys.executable, "-c", DRIVER], tmp_path, timeout=60)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert elapsed < 30, elapsed
    lines = _error_lines(proc.stderr)
    assert lines == ["ptychompi: error on rank 1: RuntimeError: injected failure at "
                     "iteration 3"], proc.stderr
    assert "finished" not in proc.stdout


def test_more_ranks_than_positions(tmp_path: Path) -> None:
    scan = tmp_path / "two.cxi"
    pixel = _simulated_cxi(scan, grid=2, keep=2)
    cfg = _write_config(tmp_path, scan, pixel)
    proc, elapsed = _mpirun(3, [str(PTYCHOMPI), "run", str(cfg)], tmp_path, timeout=60)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert elapsed < 30, elapsed
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ptychompi: error:"), lines
    assert "cannot be split" in lines[0] and "3 ranks" in lines[0], lines
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "result.h5").exists()


def test_unknown_config_key_names_the_nearest(tmp_path: Path) -> None:
    scan = tmp_path / "scan.cxi"
    pixel = _simulated_cxi(scan, grid=4)
    cfg = _write_config(tmp_path, scan, pixel)
    text = yaml.safe_load(cfg.read_text())
    text["algorithm"]["iteratons"] = text["algorithm"].pop("iterations")
    cfg.write_text(yaml.safe_dump(text))
    proc, elapsed = _mpirun(2, [str(PTYCHOMPI), "run", str(cfg)], tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert elapsed < 30, elapsed
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ptychompi: error:"), lines
    assert "iteratons" in lines[0] and "iterations" in lines[0], lines
    assert "Traceback" not in proc.stderr, proc.stderr
