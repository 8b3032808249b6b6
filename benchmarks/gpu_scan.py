"""The device of ``gpu_engines.py`` (CuPy or numpy, memory probes) and its in-memory
simulated far-field scan (the script's own forward model, independent of the package's)."""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ptychompi.data.scan import ArrayScan, ScanGeometry
from ptychompi.model.geometry import HC_KEV_M

ENERGY_KEV = 8.8
DISTANCE_M = 2.0
DETECTOR_PIXEL_M = 75e-6
PHOTONS = 1e6


# --------------------------------------------------------------------------- devices
@dataclass
class Device:
    """The array module and its FFTs, synchronisation and memory probes."""

    xp: Any
    is_gpu: bool

    def fft2(self, a: Any) -> Any:
        if self.is_gpu:
            return self.xp.fft.fft2(a, norm="ortho")
        import scipy.fft  # noqa: PLC0415

        return scipy.fft.fft2(a, norm="ortho", workers=-1)

    def ifft2(self, a: Any) -> Any:
        if self.is_gpu:
            return self.xp.fft.ifft2(a, norm="ortho")
        import scipy.fft  # noqa: PLC0415

        return scipy.fft.ifft2(a, norm="ortho", workers=-1, overwrite_x=True)

    def sync(self) -> None:
        if self.is_gpu:
            self.xp.cuda.Device().synchronize()

    def to_host(self, a: Any) -> np.ndarray:
        return self.xp.asnumpy(a) if self.is_gpu else np.asarray(a)

    def release(self) -> None:
        gc.collect()
        if self.is_gpu:
            self.xp.get_default_memory_pool().free_all_blocks()
            self.xp.fft.config.get_plan_cache().clear()


def open_device(name: str) -> Device:
    """numpy for ``cpu``; CuPy on the current device for ``gpu`` (an error without one)."""
    if name == "cpu":
        return Device(np, False)
    try:
        import cupy  # noqa: PLC0415

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - no cupy, no driver: one line below
        raise SystemExit(f"gpu_engines: error: no usable GPU ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())})") from None
    if count < 1:
        raise SystemExit("gpu_engines: error: no usable GPU (CuPy sees no device)")
    return Device(cupy, True)


class Memory:
    """High-water marks over a section: CuPy's pool and the device's used memory (GPU)."""

    def __init__(self, dev: Device) -> None:
        self.dev = dev
        self.pool_peak = self.used_peak = 0
        if dev.is_gpu:
            self.pool = dev.xp.get_default_memory_pool()
            self.pool_start = self.pool.total_bytes()
            self.used_start = self._used()
        self.sample()

    def _used(self) -> int:
        free, total = self.dev.xp.cuda.runtime.memGetInfo()
        return int(total - free)

    def sample(self) -> None:
        if self.dev.is_gpu:
            self.pool_peak = max(self.pool_peak, self.pool.total_bytes() - self.pool_start)
            self.used_peak = max(self.used_peak, self._used())


# --------------------------------------------------------------------------- simulation
def pixel_size_m(frame: int) -> float:
    """Object pixel of the far-field geometry: lambda z / (M p)."""
    return HC_KEV_M / ENERGY_KEV * DISTANCE_M / (frame * DETECTOR_PIXEL_M)


def _probe(dev: Device, frame: int, diameter_px: float) -> Any:
    """Defocused annular pupil; sum |P|² = PHOTONS; complex64 (M, M) centred."""
    xp = dev.xp
    q = xp.fft.fftfreq(frame)
    qabs = xp.hypot(q[:, None], q[None, :])
    qa = 0.15
    pupil = ((qabs < qa) & (qabs > 0.25 * qa)).astype(np.float64)
    c = math.pi * diameter_px / (2 * qa)
    field = pupil * xp.exp(1j * c * qabs**2)
    p = xp.fft.fftshift(xp.fft.ifft2(field, norm="ortho"))
    p *= math.sqrt(PHOTONS / float(xp.sum(xp.abs(p) ** 2)))
    return p.astype(np.complex64)


def _object(dev: Device, shape: tuple[int, int], rng: Any) -> Any:
    """Smooth random transmission: amplitude 0.5..1, phase +/-1 rad, band-limited."""
    xp = dev.xp
    q = xp.hypot(xp.fft.fftfreq(shape[0])[:, None], xp.fft.fftfreq(shape[1])[None, :])
    filt = xp.exp(-((q / 0.05) ** 2))

    def field() -> Any:
        f = xp.fft.ifft2(xp.fft.fft2(rng.standard_normal(shape)) * filt).real
        return f / max(float(xp.abs(f).max()), 1e-12)

    return ((0.75 + 0.25 * field()) * xp.exp(1j * field())).astype(np.complex64)


def simulate(dev: Device, grid: int, frame: int, seed: int = 0) -> tuple[ArrayScan, float]:
    """A ``grid x grid`` scan of ``frame``² Poisson frames; returns the scan and the probe
    diameter in metres (for ``algorithm.probe_diameter_m``)."""
    xp = dev.xp
    step, diameter = frame * 15.0 / 128.0, frame * 40.0 / 128.0
    host_rng = np.random.default_rng(seed)
    rng = xp.random.RandomState(seed)  # the same calls in numpy and CuPy
    r, c = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    pos = np.stack([r.ravel(), c.ravel()], axis=1) * step
    pos += host_rng.uniform(-0.1 * step, 0.1 * step, pos.shape)
    pos += 4.0 - pos.min(axis=0)
    corner = np.floor(pos).astype(np.int64)
    frac = pos - corner
    shape = (int(corner[:, 0].max()) + frame + 8, int(corner[:, 1].max()) + frame + 8)
    obj = _object(dev, shape, rng)
    probe_f = xp.fft.fft2(_probe(dev, frame, diameter))
    q = xp.fft.fftfreq(frame).astype(np.float32)
    offs = xp.arange(frame)
    frames = np.empty((len(pos), frame, frame), np.float32)
    batch = max(1, (256 << 20) // (frame * frame * 8))
    for a in range(0, len(pos), batch):
        b = min(a + batch, len(pos))
        fr = xp.asarray(frac[a:b].astype(np.float32))
        ramp_r = xp.exp(-2j * np.pi * fr[:, 0, None] * q[None, :])
        ramp_c = xp.exp(-2j * np.pi * fr[:, 1, None] * q[None, :])
        shifted = xp.fft.ifft2(probe_f[None] * ramp_r[:, :, None] * ramp_c[:, None, :])
        rows = xp.asarray(corner[a:b, 0])[:, None, None] + offs[None, :, None]
        cols = xp.asarray(corner[a:b, 1])[:, None, None] + offs[None, None, :]
        psi = dev.fft2(shifted.astype(np.complex64) * obj[rows, cols])
        inten = xp.fft.fftshift(psi.real**2 + psi.imag**2, axes=(-2, -1))
        frames[a:b] = dev.to_host(rng.poisson(inten.astype(np.float64)).astype(np.float32))
    pixel = pixel_size_m(frame)
    scan = ArrayScan(path=f"sim{grid}x{frame}", n_frames=len(pos), frame_shape=(frame, frame),
                     dtype=np.float32, positions_m=pos * pixel,
                     geometry=ScanGeometry(HC_KEV_M / ENERGY_KEV, DISTANCE_M,
                                           DETECTOR_PIXEL_M),
                     frames=frames)
    return scan, diameter * pixel
