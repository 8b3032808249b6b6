"""The offline GPU check's pieces, on a machine without a GPU: the engine benchmark at tiny
sizes on the CPU, gpu.sh stopping with one clear line where there is no GPU (or no carried
wheels), and the hdf5plugin wheel trim."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))
import wheel_trim  # noqa: E402


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "HYDRA_", "OMPI_", "PTYCHOMPI_DEVICE"))}
    env.update(PTYCHOMPI_WORKERS="1", PYTHON=sys.executable, **extra)
    return env


def test_engine_benchmark_small_on_cpu_writes_rows_and_table(tmp_path: Path) -> None:
    out, md = tmp_path / "e.json", tmp_path / "e.md"
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_engines.py"), "--device", "cpu",
                           "--small", "--iterations", "2", "--warmup", "1", "--json", str(out),
                           "--table", str(md)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=180, env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert [(r["engine"], r["n_frames"], r["frame"]) for r in rows] == [
        (e, n, m) for n, m in ((16, 32), (36, 16)) for e in ("epie", "dm", "lsqml")]
    for r in rows:
        assert r["iterations"] == 2 and r["warmup"] == 1 and r["ranks"] == 1
        assert r["frames_per_second"] == pytest.approx(r["n_frames"] /
                                                       r["seconds_per_iteration"])
        assert r["ratio_to_floor"] == pytest.approx(r["seconds_per_iteration"] /
                                                    r["fft_floor_s"])
        assert 0 < r["error_last"] < r["error_first"]  # the simulated data reconstruct
    table = md.read_text().splitlines()
    assert len(table) == 2 + len(rows) and table[0].startswith("| size |")


class _FakeCupy(types.ModuleType):
    """numpy under the CuPy names gpu_engines.py uses (pool, runtime, plan cache)."""

    def __init__(self) -> None:
        super().__init__("fake_cupy")
        self.__version__ = "0-fake"
        self.total = 0
        pool = types.SimpleNamespace(total_bytes=lambda: self.total, free_all_blocks=lambda: None)
        self.get_default_memory_pool = lambda: pool
        runtime = types.SimpleNamespace(
            getDeviceCount=lambda: 1, memGetInfo=lambda: (60 << 30, 80 << 30),
            getDeviceProperties=lambda i: {"name": b"Fake GPU", "totalGlobalMem": 80 << 30},
            runtimeGetVersion=lambda: 13000, driverGetVersion=lambda: 13000)
        device = types.SimpleNamespace(synchronize=lambda: None, id=0)
        stream = types.SimpleNamespace(synchronize=lambda: None)
        self.cuda = types.SimpleNamespace(runtime=runtime, Device=lambda *a: device,
                                          get_current_stream=lambda: stream)
        self.fft = types.SimpleNamespace(
            **{n: getattr(np.fft, n) for n in ("fft2", "ifft2", "fftfreq", "fftshift",
                                               "rfft2", "irfft2")},
            config=types.SimpleNamespace(get_plan_cache=lambda: types.SimpleNamespace(
                clear=lambda: None)))

    def __getattr__(self, name: str):
        return getattr(np, name)

    @staticmethod
    def asnumpy(a):
        return np.asarray(a)


def test_engine_benchmark_gpu_branches_with_a_numpy_cupy(monkeypatch, tmp_path: Path) -> None:
    """The script's own GPU-only code (device simulation, cuFFT floor, memory probes, table)
    with numpy playing CuPy and the engines' GPU branches on it, as in test_gpu_paths."""
    import gpu_engines  # noqa: PLC0415

    import ptychompi.app.api as api  # noqa: PLC0415
    from ptychompi.backends import Backend  # noqa: PLC0415

    fake = _FakeCupy()  # the array operations then take numpy's expressions for the kernels
    monkeypatch.setattr(api, "select_backend", lambda *a, **k: Backend(fake, "gpu", 0, 1))
    monkeypatch.setattr(gpu_engines, "open_device", lambda name: gpu_engines.Device(fake, True))
    out, md = tmp_path / "g.json", tmp_path / "g.md"
    assert gpu_engines.main(["--device", "gpu", "--small", "--iterations", "2", "--warmup",
                             "1", "--json", str(out), "--table", str(md)]) == 0
    data = json.loads(out.read_text())
    assert data["info"]["gpu"] == "Fake GPU" and data["info"]["cupy"] == "0-fake"
    assert len(data["rows"]) == 6
    for r in data["rows"]:
        assert r["device_used_peak_bytes"] == 20 << 30 and r["pool_peak_bytes_per_rank"] == [0]
        assert 0 < r["error_last"] < r["error_first"]
    assert "| 20.00 |" in md.read_text()


def _gpu_sh(tmp_path: Path, **extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "out"
    env = _env(OUT=str(out), CUDA_VISIBLE_DEVICES="", PTYCHOMPI_GPU_SKIP_MPI="1", **extra)
    proc = subprocess.run(["bash", str(BENCH / "gpu.sh")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=180, env=env)
    return proc, out


def test_gpu_sh_without_a_gpu_says_so_in_one_line_and_exits_3(tmp_path: Path) -> None:
    proc, out = _gpu_sh(tmp_path, PTYCHOMPI_GPU_SKIP_INSTALL="1")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("gpu.sh:")]
    assert len(lines) == 1 and lines[0].startswith("gpu.sh: no GPU present ("), proc.stdout
    stages = [ln.split("\t") for ln in (out / "gpu_stages.tsv").read_text().splitlines()[1:]]
    assert [s[0] for s in stages] == ["install", "import", "mpi", "gpu"]
    assert stages[1][1] == "0" and stages[3][1] == "3"
    assert "ptychompi" in (out / "gpu_env.txt").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.log", "gpu_env.txt",
                                                     "gpu_stages.tsv"]


def test_gpu_sh_without_carried_wheels_exits_4_before_pip(tmp_path: Path) -> None:
    proc, out = _gpu_sh(tmp_path, PTYCHOMPI_WHEELS=str(tmp_path / "none"))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "gpu_install: no wheels in" in proc.stdout
    assert "gpu.sh: the offline install failed" in proc.stdout


def test_gpu_sh_dry_run_runs_every_stage_and_writes_eight_files(tmp_path: Path) -> None:
    proc, out = _gpu_sh(tmp_path, PTYCHOMPI_GPU_SKIP_INSTALL="1", PTYCHOMPI_GPU_DRY="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stages = [ln.split("\t") for ln in (out / "gpu_stages.tsv").read_text().splitlines()[1:]]
    assert [s[0] for s in stages] == ["install", "import", "mpi", "gpu", "kernels", "engines",
                                      "engines2", "unit"]
    assert [s[1] for s in stages[4:]] == ["0", "0", "skipped", "0"]  # no MPI asked for
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu_check.log", "gpu_engines.json", "gpu_engines.md", "gpu_env.txt",
        "gpu_kernels.log", "gpu_stages.tsv", "gpu_tests.log"]
    rows = json.loads((out / "gpu_engines.json").read_text())["rows"]
    assert len(rows) == 6 and all(r["frames_per_second"] > 0 for r in rows)
    assert "passed" in (out / "gpu_tests.log").read_text()


def test_gpu_sh_skips_stages_once_its_budget_is_spent(tmp_path: Path) -> None:
    proc, out = _gpu_sh(tmp_path, PTYCHOMPI_GPU_SKIP_INSTALL="1", PTYCHOMPI_GPU_DRY="1",
                        PTYCHOMPI_GPU_BUDGET="1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    stages = {ln.split("\t")[0]: ln.split("\t")[1:]
              for ln in (out / "gpu_stages.tsv").read_text().splitlines()[1:]}
    assert stages["import"][0] == "0"  # the gate runs whatever the budget
    for name in ("kernels", "engines", "unit"):
        assert stages[name][0] == "skipped" and stages[name][2] == "budget spent"


def _fake_hdf5plugin_wheel(path: Path) -> None:
    files = {
        "hdf5plugin/__init__.py": b"",
        "hdf5plugin/_config.py": (b"build_config = dict(**{'native': False, 'embedded_filters'"
                                  b": ('blosc', 'blosc2', 'bshuf', 'lz4', 'sz', 'sz3', 'zstd')})"
                                  b"\n"),
        **{f"hdf5plugin/plugins/libh5{n}.so": n.encode() * 100
           for n in ("blosc", "blosc2", "bshuf", "lz4", "sz", "sz3", "zstd")},
    }
    record = "".join(f"{n},sha256=x,{len(d)}\n" for n, d in files.items())
    record += "hdf5plugin-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("hdf5plugin-1.0.dist-info/RECORD", record)


def test_wheel_trim_keeps_the_named_filters_with_a_valid_record(tmp_path: Path) -> None:
    whl = tmp_path / "hdf5plugin-1.0-py3-none-any.whl"
    _fake_hdf5plugin_wheel(whl)
    dropped = wheel_trim.trim(whl, whl, ("lz4", "bshuf", "zstd", "blosc"))
    assert dropped == ["blosc2", "sz", "sz3"]
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        plugins = sorted(wheel_trim.plugin_name(n) for n in names if wheel_trim.plugin_name(n))
        assert plugins == ["blosc", "bshuf", "lz4", "zstd"]
        config = z.read("hdf5plugin/_config.py").decode()
        assert "'embedded_filters': ('blosc', 'bshuf', 'lz4', 'zstd', )" in config
        for line in z.read("hdf5plugin-1.0.dist-info/RECORD").decode().splitlines():
            name, digest, size = line.split(",")
            if name.endswith("RECORD"):
                continue
            data = z.read(name)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert digest == "sha256=" + expected.decode() and int(size) == len(data)
        assert {ln.split(",")[0] for ln in z.read("hdf5plugin-1.0.dist-info/RECORD")
                .decode().splitlines()} == names
    with pytest.raises(ValueError, match="has no zfp filter"):
        wheel_trim.trim(whl, tmp_path / "x.whl", ("zfp",))
