"""Shared pieces of the benchmark scripts: simulated scans, configs, timers, memory probes.

The scripts are run as ``python benchmarks/<name>.py``, so this module is imported as
``common`` (``benchmarks/`` is ``sys.path[0]``).
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import time
from typing import Any

import numpy as np

from ptychompi.data.scan import ArrayScan, ScanGeometry
from ptychompi.sim.simulate import simulate


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"30x128,20x256"`` -> [(30, 128), (20, 256)] (grid, frame)."""
    out = []
    for part in text.split(","):
        grid, frame = part.lower().strip().split("x")
        out.append((int(grid), int(frame)))
    return out


def scan_params(frame: int) -> dict:
    """Step and probe diameter scaled from the 128-pixel reference (15 px step, 40 px probe)."""
    return {"step_px": frame * 15.0 / 128.0, "probe_diameter_px": frame * 40.0 / 128.0}


def make_scan(grid: int, frame: int, seed: int = 0,
              photons: float = 1e6) -> tuple[ArrayScan, float, dict]:
    """Simulated ``grid x grid`` raster of ``frame``² patterns (step M·15/128, probe M·40/128).

    Returns the in-memory scan, ``probe_diameter_m`` for the config and a description.
    """
    p = scan_params(frame)
    sim = simulate(frame=frame, grid=grid, step_px=p["step_px"],
                   probe_diameter_px=p["probe_diameter_px"], photons=photons, seed=seed)
    scan = ArrayScan(path="sim", n_frames=len(sim.frames), frame_shape=(frame, frame),
                     dtype=np.float32, positions_m=sim.positions_m,
                     geometry=ScanGeometry(sim.wavelength_m, sim.distance_m,
                                           sim.detector_pixel_m),
                     frames=sim.frames)
    info = {"grid": grid, "frame": frame, "n_frames": len(sim.frames), **p,
            "object_shape": list(sim.object.shape)}
    return scan, float(sim.pixel_size_m) * p["probe_diameter_px"], info


def make_config(engine: str, iterations: int, probe_diameter_m: float, subpixel: bool,
                device: str, workers: int | None = None, batch_size: int | None = None,
                subpixel_bins: int | None = None, fft: str = "auto") -> dict:
    algorithm = {"name": engine, "iterations": iterations,
                 "probe_diameter_m": probe_diameter_m, "subpixel": subpixel,
                 "batch_size": batch_size}
    if subpixel_bins is not None:
        algorithm["subpixel_bins"] = subpixel_bins
    return {"algorithm": algorithm,
            "parallel": {"device": device, "workers": workers, "fft": fft}}


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


# --------------------------------------------------------------------------- memory
def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class HostMemory:
    """Peak resident memory of this process over a section, in bytes.

    Linux: the high-water mark is reset (``/proc/self/clear_refs`` = 5) at the start, so each
    section gets its own peak minus the resident size at its start. Elsewhere: the growth of
    ``ru_maxrss`` (a lower bound when an earlier section peaked higher).
    """

    def __init__(self) -> None:
        gc.collect()
        self.reset = False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        except OSError:
            pass
        self.start_rss = _status_kib("VmRSS")
        self.start_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    def peak_bytes(self) -> int:
        if self.reset and self.start_rss is not None:
            hwm = _status_kib("VmHWM")
            if hwm is not None:
                return max(0, hwm - self.start_rss) * 1024
        now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return max(0, now - self.start_max) * 1024


class DeviceMemory:
    """High-water mark of CuPy's default memory pool over a section (GPU)."""

    def __init__(self, xp: Any) -> None:
        self.xp = xp
        self.pool = xp.get_default_memory_pool()
        self.pool.free_all_blocks()
        self.start = self.pool.total_bytes()
        self.peak = self.start

    def sample(self) -> None:
        self.peak = max(self.peak, self.pool.total_bytes())

    def peak_bytes(self) -> int:
        self.sample()
        return int(self.peak - self.start)


# --------------------------------------------------------------------------- FFT floor
def fft_floor(backend: Any, n_frames: int, modes: int, frame: int, reps: int = 5,
              chunk: int = 128, warm: bool = True) -> float:
    """Median seconds of one forward + one inverse unitary FFT over K·N frames of M².

    On ``backend`` (scipy.fft or FFTW with the rank's workers, or CuPy), complex64, in chunks of
    ``chunk`` positions as the engines process them (only one chunk is resident at a time,
    so the data do not all need to fit in the cache or in memory twice).
    """
    rng = np.random.default_rng(1)
    b = min(chunk, n_frames)
    host = (rng.standard_normal((b, modes, frame, frame))
            + 1j * rng.standard_normal((b, modes, frame, frame))).astype(np.complex64)
    data = backend.asarray(host, backend.complex_dtype)
    sizes = [min(chunk, n_frames - a) for a in range(0, n_frames, chunk)]

    def once() -> float:
        backend.synchronize()
        t0 = time.perf_counter()
        for s in sizes:
            spec = backend.fft2(data[:s])
            backend.ifft2(spec, overwrite=True)
        backend.synchronize()
        return time.perf_counter() - t0

    if warm:
        once()  # plans, caches
    times = [once() for _ in range(reps)]
    return median(times)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine() -> dict:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_model(), "cores": cores}


def run_mpi_worker(cmd: list[str], ranks: int, timeout: float, tag: str = "RESULT ") -> dict:
    """Run a benchmark worker under mpiexec (``cmd``) outside any enclosing MPI job and
    return the JSON its rank 0 printed after ``tag``; exits with one line if it failed."""
    import json  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "HYDRA_"))}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(tag)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"mpiexec -n {ranks} failed (exit {proc.returncode})")
    return json.loads(lines[-1][len(tag):])
