"""Issue 21 on one rank: bad input and damaged files end ``ptychompi`` with one line, exit 2.

Each test reproduces one reported defect through the real command line (a subprocess, so the
exit code, stderr and the files left behind are what a user sees).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from ptychompi.app.api import Reconstruction
from ptychompi.data.validate import check_object_size, outlying_positions
from ptychompi.errors import DataError, PtychompiError
from ptychompi.io.cxi import write_cxi
from ptychompi.sim.simulate import simulate

BIN = Path(sys.executable).parent
PIXEL = 1.17e-6 / 20  # the simulated scan's object pixel (probe 20 px = 1.17 µm)


def cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ptychompi"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def one_error_line(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    """The run failed with ``code`` and said why in exactly one line, with no traceback."""
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ptychompi: error"), proc.stderr
    return lines[0]


def config(tmp: Path, scan: Path, name: str = "c.yaml", **sections: dict) -> Path:
    cfg = {"data": {"path": str(scan)},
           "algorithm": {"name": "dm", "iterations": 4, "probe_diameter_m": 1.17e-6},
           "parallel": {"device": "cpu"},
           "output": {"directory": str(tmp / "out"), "live_every": 0}}
    for key, values in sections.items():
        cfg.setdefault(key, {}).update(values)
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def edited_scan(scan: Path, dest: Path, edit) -> Path:  # edit(h5py.File)
    dest.write_bytes(scan.read_bytes())
    with h5py.File(dest, "r+") as f:
        edit(f)
    return dest


FRAMES = "entry_1/instrument_1/detector_1/data"


# --------------------------------------------------------------- 5: --resume with fewer
def test_resume_with_fewer_iterations_keeps_the_finished_result(tmp_path, scan):
    cfg = config(tmp_path, scan, algorithm={"iterations": 10},
                 output={"checkpoint_every": 5})
    assert cli("run", str(cfg), "--quiet").returncode == 0
    result = tmp_path / "out" / "result.h5"
    before = result.read_bytes()
    line = one_error_line(cli("run", str(cfg), "--quiet", "--resume",
                              "--set", "algorithm.iterations=3"))
    assert "iteration 5" in line and "algorithm.iterations is 3" in line, line
    line = one_error_line(cli("run", str(cfg), "--quiet", "--resume",
                              "--set", "algorithm.iterations=8"))
    assert "already holds a finished run of 10" in line, line
    assert result.read_bytes() == before


# --------------------------------------------------------------- 7: all-zero frames
@pytest.mark.parametrize("engine", ["epie", "lsqml", "dm"])
def test_all_zero_frames_are_one_line(tmp_path, scan, engine):
    zero = edited_scan(scan, tmp_path / "zero.cxi",
                       lambda f: f[FRAMES].__setitem__(Ellipsis, 0))
    cfg = config(tmp_path, zero, algorithm={"name": engine})
    line = one_error_line(cli("run", str(cfg), "--quiet"))
    assert "zero photons" in line, line
    assert not (tmp_path / "out" / "result.h5").exists()


# --------------------------------------------------------------- 8: one rank, one line
def test_corrupt_gzip_chunk_is_one_line(tmp_path):
    sim = simulate(frame=64, grid=4, step_px=8, probe_diameter_px=20, photons=1e6, seed=0)
    path = tmp_path / "gz.cxi"
    write_cxi(path, sim.frames.astype(np.float32), sim.positions_m, distance_m=sim.distance_m,
              pixel_size_m=sim.detector_pixel_m, wavelength_m=sim.wavelength_m,
              compression="gzip")
    with h5py.File(path, "r") as f:
        ds = f[FRAMES]
        assert ds.compression == "gzip"
        info = ds.id.get_chunk_info(0)
    raw = bytearray(path.read_bytes())
    raw[info.byte_offset + 8: info.byte_offset + 40] = b"\xff" * 32
    path.write_bytes(bytes(raw))
    cfg = config(tmp_path, path)
    line = one_error_line(cli("run", str(cfg), "--quiet"))
    assert "gz.cxi" in line or "OSError" in line or "read" in line, line
    line = one_error_line(cli("inspect", str(path)))
    assert "gz.cxi" in line, line


def test_zero_detector_pixel_is_one_line(tmp_path, scan):
    cfg = config(tmp_path, scan, geometry={"detector_pixel_m": 0})
    line = one_error_line(cli("run", str(cfg), "--quiet"))
    assert "geometry.detector_pixel_m" in line and "positive" in line, line


def test_truncated_state_file_on_resume_is_one_line(tmp_path, scan):
    cfg = config(tmp_path, scan, algorithm={"iterations": 5},
                 output={"checkpoint_every": 2})
    assert cli("run", str(cfg), "--quiet").returncode == 0
    state = tmp_path / "out" / "checkpoint" / "rank0of1.h5"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    line = one_error_line(cli("run", str(cfg), "--quiet", "--resume",
                              "--set", "algorithm.iterations=8"))
    assert "rank0of1.h5" in line and "unreadable" in line, line


# --------------------------------------------------------------- 9: object size vs memory
def test_far_position_names_the_position_before_allocating(tmp_path, scan):
    def move(f: h5py.File) -> None:
        t = f["entry_1/sample_1/geometry_1/translation"]
        a = t[()]
        a[17, 0] += 1e3
        t[...] = a

    far = edited_scan(scan, tmp_path / "far.cxi", move)
    cfg = config(tmp_path, far)
    line = one_error_line(cli("run", str(cfg), "--quiet"))
    assert "memory" in line and "positions 17 (" in line, line


def test_object_size_check_names_outliers():
    pos = np.stack(np.meshgrid(np.arange(8.0), np.arange(8.0)), -1).reshape(-1, 2) * 1e-7
    assert outlying_positions(pos, 64 * 5e-9) == []
    pos[5] = (3.0, 0.0)
    assert outlying_positions(pos, 64 * 5e-9) == [5]
    check_object_size((1000, 1000), pos, 5e-9, 64, memory=10**9)  # fits: no error
    with pytest.raises(DataError, match=r"positions 5 \(3 m, 0 m\)"):
        check_object_size((10**6, 10**6), pos, 5e-9, 64, memory=10**9)


# --------------------------------------------------------------- 10: guesses of bad dtype
@pytest.mark.parametrize("dtype", ["U5", "structured"])
def test_object_guess_of_non_numbers_is_one_line(tmp_path, scan, dtype):
    with Reconstruction(yaml.safe_load(config(tmp_path, scan).read_text())) as recon:
        shape = recon.layout.object_shape
    guess = (np.full(shape, "abc", dtype="U5") if dtype == "U5"
             else np.zeros(shape, dtype=[("re", "f4"), ("im", "f4")]))
    np.save(tmp_path / "guess.npy", guess)
    cfg = config(tmp_path, scan, algorithm={"object_guess": str(tmp_path / "guess.npy")})
    line = one_error_line(cli("run", str(cfg), "--quiet"))
    assert "algorithm.object_guess" in line and "numbers" in line, line


# --------------------------------------------------------------- 11: --set bad YAML
def test_set_with_broken_yaml_is_one_line(tmp_path, scan):
    cfg = config(tmp_path, scan)
    line = one_error_line(cli("run", str(cfg), "--set", "algorithm.iterations=[1"))
    assert "--set 'algorithm.iterations=[1'" in line and "YAML" in line, line


# --------------------------------------------------------------- 12: inspect
def test_inspect_truncated_and_several_files(tmp_path, scan):
    cut = tmp_path / "cut.cxi"
    cut.write_bytes(scan.read_bytes()[: scan.stat().st_size // 3])
    proc = cli("inspect", str(scan), str(cut), str(scan.with_suffix(".truth.h5")))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and "cut.cxi" in errors[0], proc.stderr
    assert proc.stdout.count("CXI scan") == 1 and "truth" in proc.stdout, proc.stdout


def test_inspect_into_head_is_quiet(tmp_path, scan):
    files = " ".join([str(scan)] * 40)
    proc = subprocess.run(f"{BIN / 'ptychompi'} inspect {files} | head -1", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.startswith("CXI scan"), proc.stdout
    assert proc.stderr == "", proc.stderr


# --------------------------------------------------------------- 13: misleading messages
def test_zero_distance_names_the_distance(tmp_path, scan):
    cfg = config(tmp_path, scan, geometry={"distance_m": 0})
    line = one_error_line(cli("run", str(cfg), "--quiet"))
    assert "geometry.distance_m" in line and "NaN" not in line, line


@pytest.mark.parametrize("kind", ["nan", "zero"])
def test_bad_probe_guess_names_the_guess(tmp_path, scan, kind):
    probe = np.full((64, 64), np.nan if kind == "nan" else 0, np.complex64)
    np.save(tmp_path / "probe.npy", probe)
    cfg = config(tmp_path, scan, algorithm={"probe_guess": str(tmp_path / "probe.npy")})
    line = one_error_line(cli("run", str(cfg), "--quiet"))
    assert "algorithm.probe_guess" in line and "diverged" not in line, line
    assert ("NaN" in line) if kind == "nan" else ("all zero" in line), line


# --------------------------------------------------------------- 14: small ones
def test_folder_as_config_and_empty_config(tmp_path):
    line = one_error_line(cli("run", str(tmp_path)))
    assert "is a folder" in line, line
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    for args in (["config", "--check", str(empty)], ["run", str(empty)]):
        line = one_error_line(cli(*args))
        assert "is empty" in line, line


def test_api_after_close_is_a_clear_error(tmp_path, scan):
    recon = Reconstruction(yaml.safe_load(config(tmp_path, scan).read_text()))
    recon.step()
    recon.close()
    assert recon.iteration == 1 and len(recon.metrics["error"]) == 1
    for call in (recon.step, lambda: recon.probe, lambda: recon.object,
                 lambda: recon.save(str(tmp_path / "r.h5"))):
        with pytest.raises(PtychompiError, match="closed"):
            call()


def test_api_save_that_fails_is_one_line(tmp_path, scan):
    with Reconstruction(yaml.safe_load(config(tmp_path, scan).read_text())) as recon:
        recon.step()
        with pytest.raises(PtychompiError, match="r.h5") as info:
            recon.save(str(tmp_path / "missing" / "r.h5"))
    assert "\n" not in str(info.value)
    assert not list(tmp_path.rglob("*.tmp-*"))
