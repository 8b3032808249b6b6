"""Provenance records what a result depends on; $PTYCHOMPI_* overrides land in the config."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import ptychompi
from ptychompi.app.provenance import library_versions, mpi_library
from ptychompi.app.summary import inspect_file
from ptychompi.config import Config, apply_environment
from ptychompi.data.scan import ArrayScan
from ptychompi.errors import ConfigError
from ptychompi.io.results import read_result
from ptychompi.sim.simulate import simulate

ENV = ("PTYCHOMPI_DEVICE", "PTYCHOMPI_FFT", "PTYCHOMPI_WORKERS")


@pytest.fixture(scope="module")
def scan(as_array_scan) -> ArrayScan:
    return as_array_scan(simulate(frame=64, grid=8, step_px=8, probe_diameter_px=20,
                                  photons=1e5, seed=0))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def config(fft: str, workers: int, precision: str = "single") -> dict:
    return {"algorithm": {"name": "dm", "iterations": 2, "precision": precision},
            "parallel": {"device": "cpu", "fft": fft, "workers": workers}}


@pytest.mark.parametrize(("fft", "workers", "precision"),
                         [("fftw", 2, "single"), ("scipy", 1, "double")])
def test_result_provenance_names_fft_threads_fused_precision_and_versions(
        tmp_path: Path, scan: ArrayScan, fft: str, workers: int, precision: str) -> None:
    with ptychompi.Reconstruction(config(fft, workers, precision), scan=scan) as recon:
        recon.run()
        fused = recon.engine.fused
        recon.save(str(tmp_path / "result.h5"))
    assert fused == (fft == "fftw")  # the fused path needs FFTW's C interface
    prov = read_result(tmp_path / "result.h5").provenance
    assert prov["fft"] == fft and prov["precision"] == precision
    assert list(prov["workers"]) == [workers] and list(prov["fused"]) == [fused]
    versions = prov["versions"]
    assert versions["numpy"] == np.__version__
    for name, dist in (("scipy", "scipy"), ("numba", "numba"), ("pyfftw", "pyFFTW"),
                       ("h5py", "h5py"), ("mpi4py", "mpi4py")):
        assert versions[name] == metadata.version(dist), name
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))
    text = inspect_file(tmp_path / "result.h5")  # `ptychompi inspect` shows them
    assert f"provenance fft = {fft}" in text
    assert f"provenance versions/numpy = {np.__version__}" in text


def test_mpi_library_is_the_first_line_once_mpi_is_loaded() -> None:
    code = ("from ptychompi.app.provenance import mpi_library; assert mpi_library() is None; "
            "from mpi4py import MPI; print(mpi_library()); "
            "print(MPI.Get_library_version().strip().splitlines()[0].strip())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.splitlines()
    assert len(out) == 2 and out[0] == out[1] and out[0]
    assert set(library_versions()) >= {"numpy", "scipy", "numba", "pyfftw", "h5py", "mpi4py",
                                       "mpi_library", "cupy", "python"}
    assert mpi_library() in (None, library_versions()["mpi_library"])


def test_environment_overrides_are_in_the_config_that_ran(
        tmp_path: Path, scan: ArrayScan, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTYCHOMPI_FFT", "scipy")
    monkeypatch.setenv("PTYCHOMPI_WORKERS", "1")
    monkeypatch.setenv("PTYCHOMPI_DEVICE", "CPU")
    with ptychompi.Reconstruction(config("fftw", 2), scan=scan) as recon:
        assert (recon.backend.fft, recon.backend.workers) == ("scipy", 1)
        recon.run()
        recon.save(str(tmp_path / "result.h5"))
    result = read_result(tmp_path / "result.h5")
    assert "fft: scipy" in result.config_yaml and "workers: 1" in result.config_yaml
    assert "device: cpu" in result.config_yaml
    assert result.provenance["fft"] == "scipy" and list(result.provenance["workers"]) == [1]


def test_apply_environment_validates_and_copies() -> None:
    cfg = Config()
    assert apply_environment(cfg, {}) is cfg
    assert apply_environment(cfg, {"PTYCHOMPI_WORKERS": " "}) is cfg  # empty = unset
    new = apply_environment(cfg, {"PTYCHOMPI_WORKERS": "3", "PTYCHOMPI_FFT": " FFTW"})
    assert (new.parallel.workers, new.parallel.fft) == (3, "fftw")
    assert (cfg.parallel.workers, cfg.parallel.fft) == (None, "auto")  # the caller's is kept
    for env, words in (({"PTYCHOMPI_WORKERS": "many"}, "expected an integer"),
                       ({"PTYCHOMPI_WORKERS": "0"}, "below its minimum 1"),
                       ({"PTYCHOMPI_DEVICE": "tpu"}, "not one of auto, cpu, gpu"),
                       ({"PTYCHOMPI_FFT": "fftpack"}, "not one of auto, fftw, scipy")):
        name = next(iter(env))
        with pytest.raises(ConfigError, match=rf"^\${name} = .*{words}") as info:
            apply_environment(cfg, env)
        assert "\n" not in str(info.value)


def test_bad_environment_override_is_one_line_from_the_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {path: missing.cxi}\nparallel: {device: cpu}\n")
    proc = subprocess.run([str(Path(sys.executable).parent / "ptychompi"), "run", str(cfg)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**_env(), "PTYCHOMPI_WORKERS": "many"})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptychompi: error: $PTYCHOMPI_WORKERS")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ENV}


def test_array_operations_are_selectable_and_recorded(tmp_path: Path, scan: ArrayScan) -> None:
    """``parallel.operations: array`` runs numpy's expressions (the GPU's code) on the CPU: the
    result follows the compiled path to rounding, and the provenance says which ran."""
    results = {}
    for operations in ("compiled", "array"):
        cfg = config("scipy", 1, "single")
        cfg["parallel"]["operations"] = operations
        with ptychompi.Reconstruction(cfg, scan=scan) as recon:
            recon.run()
            assert recon.backend.ops.compiled == (operations == "compiled")
            results[operations] = recon.object
            recon.save(str(tmp_path / f"{operations}.h5"))
        saved = read_result(tmp_path / f"{operations}.h5").provenance
        assert saved["operations"] == operations
        assert saved["halo"] == "full"  # parallel.halo: auto, one process
    compiled, array = results["compiled"], results["array"]
    assert not np.array_equal(compiled, array)  # two implementations, rounding apart
    assert np.linalg.norm(array - compiled) <= 1e-4 * np.linalg.norm(compiled)
