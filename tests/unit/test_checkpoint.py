"""Checkpoints and --resume through the real CLI (serial and under mpiexec)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from ptychompi.sim.simulate import simulate_to_files

BIN = Path(sys.executable).parent


def run(args: list[str], ranks: int = 1, timeout: float = 180) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "ptychompi"), "run", *args]
    if ranks > 1:
        cmd = [str(BIN / "mpiexec"), "-n", str(ranks), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def scan(tmp_path) -> Path:
    simulate_to_files(str(tmp_path / "scan.cxi"), frame=64, grid=10, step_px=8,
                      probe_diameter_px=20, photons=1e6, seed=0)
    return tmp_path / "scan.cxi"


def write_config(path: Path, scan: Path, out: Path, **algo) -> Path:
    cfg = {"data": {"path": str(scan)},
           "algorithm": {"name": "dm", "iterations": 20, "probe_diameter_m": 1.17e-6,
                         **algo},
           "parallel": {"device": "cpu"},
           "output": {"directory": str(out), "checkpoint_every": 5}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def final(out: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with h5py.File(out / "result.h5", "r") as f:
        return f["object"][()], f["probe"][()], f["error"][()]


@pytest.mark.parametrize("ranks,algo", [(1, {}), (2, {}), (1, {"dm": {"refine_from": 8}}),
                                         (2, {"dm": {"refine_from": 8}})])
def test_resume_is_bit_for_bit_on_the_same_rank_count(tmp_path, scan, ranks, algo):
    """Also across DM's hand-over to its maximum-likelihood refinement (at iteration 8, the
    checkpoint at 10). The part run stops early by planning 12 iterations; LSQML's object step
    falls over the second half of the plan (lsqml.step_final), so a plan of 12 is another run
    than a plan of 20 from iteration 6 on: the fall is off here (the same plan resumed inside
    the fall is bit for bit: test_engine_options)."""
    algo = {**algo, "lsqml": {"step_final": 1.0}}
    full = write_config(tmp_path / "full.yaml", scan, tmp_path / "full", **algo)
    assert run([str(full)], ranks).returncode == 0
    part = write_config(tmp_path / "part.yaml", scan, tmp_path / "part", **algo)
    first = run([str(part), "--set", "algorithm.iterations=12"], ranks)
    assert first.returncode == 0, first.stderr
    with h5py.File(tmp_path / "part" / "checkpoint.h5", "r") as f:
        assert f["provenance"].attrs["checkpoint_iteration"] == 10
    resumed = run([str(part), "--resume"], ranks)
    assert resumed.returncode == 0, resumed.stderr
    for a, b in zip(final(tmp_path / "full"), final(tmp_path / "part"), strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("algo", [{}, {"dm": {"refine_from": 8}}])
def test_resume_on_another_rank_count_continues(tmp_path, scan, algo):
    full = write_config(tmp_path / "full.yaml", scan, tmp_path / "full", **algo)
    assert run([str(full)]).returncode == 0
    part = write_config(tmp_path / "part.yaml", scan, tmp_path / "part", **algo)
    assert run([str(part), "--set", "algorithm.iterations=12"], ranks=2).returncode == 0
    resumed = run([str(part), "--resume"], ranks=1)
    assert resumed.returncode == 0, resumed.stderr
    e_full, e_part = final(tmp_path / "full")[2][-1], final(tmp_path / "part")[2][-1]
    assert len(final(tmp_path / "part")[2]) == 20
    assert abs(e_part - e_full) <= 0.05 * e_full, (e_part, e_full)


def test_kill_after_second_checkpoint_then_resume(tmp_path, scan, kill_tree):
    cfg = write_config(tmp_path / "c.yaml", scan, tmp_path / "out")
    cfg_values = yaml.safe_load(cfg.read_text())
    cfg_values["algorithm"]["iterations"] = 100_000
    cfg_values["output"]["checkpoint_every"] = 2
    cfg.write_text(yaml.safe_dump(cfg_values))
    cmd = [str(BIN / "mpiexec"), "-n", "2", str(BIN / "ptychompi"), "run", str(cfg), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    ckpt = tmp_path / "out" / "checkpoint.h5"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if ckpt.exists():
                try:
                    with h5py.File(ckpt, "r") as f:
                        if f["provenance"].attrs["checkpoint_iteration"] >= 4:
                            break
                except OSError:
                    pass
            time.sleep(0.2)
        else:
            pytest.fail("no second checkpoint within 120 s")
    finally:
        kill_tree(proc)  # and the ranks, which run in sessions of their own
    with h5py.File(ckpt, "r") as f:  # the checkpoint opens after kill -9
        done = int(f["provenance"].attrs["checkpoint_iteration"])
    cfg_values["algorithm"]["iterations"] = done + 4
    cfg.write_text(yaml.safe_dump(cfg_values))
    resumed = run([str(cfg), "--resume"], ranks=2)
    assert resumed.returncode == 0, resumed.stderr
    _, _, errors = final(tmp_path / "out")
    assert len(errors) == done + 4 and np.all(np.isfinite(errors))


def test_resume_with_incompatible_setting_is_an_error(tmp_path, scan):
    part = write_config(tmp_path / "part.yaml", scan, tmp_path / "part")
    assert run([str(part), "--set", "algorithm.iterations=7"]).returncode == 0
    bad = run([str(part), "--resume", "--set", "algorithm.name=epie"])
    assert bad.returncode == 2
    errors = [ln for ln in bad.stderr.splitlines() if ln.startswith("ptychompi: error")]
    assert len(errors) == 1 and "algorithm.name" in errors[0], bad.stderr
    assert "Traceback" not in bad.stderr


def test_unwritable_output_is_reported_before_compute(tmp_path, scan):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = write_config(tmp_path / "c.yaml", scan, blocker / "out")
    res = run([str(cfg)], ranks=2)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptychompi: error:"), res.stderr


def test_run_a_ptychopy_command_string(tmp_path):
    cmd = ("./ptycho -jobID=sim64 -beamSize=110e-9 -scanDims=8,8 -step=50e-9,50e-9 -i=3 "
           "-size=64 -lambda=2.4796837508399954e-10 -dx_d=172e-6 -z=1 -simulate=1 -blind=0")
    res = subprocess.run([str(BIN / "ptychompi"), "run", "--ptychopy", cmd, "--quiet"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    obj = np.genfromtxt(tmp_path / "data" / "sim64_object_0.csv", delimiter=",", dtype=complex)
    probe = np.genfromtxt(tmp_path / "data" / "sim64_probes_0.csv", delimiter=",",
                          dtype=complex)
    assert obj.ndim == 2 and probe.shape == (64, 64)
    _, _, errors = final(tmp_path / "data")
    assert len(errors) == 3


def test_output_formats_are_written_at_the_end(tmp_path, scan):
    cfg = write_config(tmp_path / "c.yaml", scan, tmp_path / "out")
    values = yaml.safe_load(cfg.read_text())
    values["algorithm"]["iterations"] = 3
    values["output"].update({"checkpoint_every": 0, "formats": ["hdf5", "tiff", "png", "csv"]})
    cfg.write_text(yaml.safe_dump(values))
    res = run([str(cfg)], ranks=2)
    assert res.returncode == 0, res.stderr
    names = {p.name for p in (tmp_path / "out").iterdir()}
    for expected in ("result.h5", "ptychompi.log", "result_object_amplitude.tif",
                     "result_object_phase.png", "result_object_0.csv", "result_probes_0.csv"):
        assert expected in names, sorted(names)
    log = (tmp_path / "out" / "ptychompi.log").read_text()
    assert "iteration 3 error" in log
