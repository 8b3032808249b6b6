"""The node's devices: GPUs by name and memory (CuPy, else nvidia-smi), CPU cores."""

from __future__ import annotations

import os
import shutil
import subprocess

__all__ = ["devices", "parse_nvidia_smi"]


def parse_nvidia_smi(text: str) -> list[dict]:
    """Rows of ``nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits``."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        try:
            mem = int(float(parts[-1]) * 2**20)  # MiB
        except ValueError:
            mem = None
        gpus.append({"index": int(parts[0]), "name": ",".join(parts[1:-1]), "memory_bytes": mem})
    return gpus


def _cupy_gpus() -> list[dict] | None:
    try:
        import cupy  # noqa: PLC0415
        n = cupy.cuda.runtime.getDeviceCount()
        out = []
        for i in range(n):
            props = cupy.cuda.runtime.getDeviceProperties(i)
            name = props["name"]
            out.append({"index": i, "name": name.decode() if isinstance(name, bytes) else name,
                        "memory_bytes": int(props["totalGlobalMem"])})
        return out
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device
        return None


def _smi_gpus() -> list[dict]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        proc = subprocess.run([exe, "--query-gpu=index,name,memory.total",
                               "--format=csv,noheader,nounits"], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi(proc.stdout) if proc.returncode == 0 else []


def devices() -> dict:
    """``{"gpus": [{"index", "name", "memory_bytes"}], "gpu_source", "cpu_cores"}``."""
    gpus = _cupy_gpus()
    source = "cupy"
    if gpus is None:
        gpus, source = _smi_gpus(), "nvidia-smi"
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return {"gpus": gpus, "gpu_source": source if gpus else None, "cpu_cores": cores,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
