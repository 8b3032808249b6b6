"""Result / checkpoint files: round trip, atomic writes, output-folder checks."""

from __future__ import annotations

import os
import shutil
from collections import namedtuple

import h5py
import numpy as np
import pytest

from ptychompi.errors import DataError, PtychompiError
from ptychompi.io import results
from ptychompi.io.results import (
    ResultData,
    check_output_dir,
    estimate_result_bytes,
    read_result,
    write_result,
)


def _data(seed: int = 0, state: dict | None = None) -> ResultData:
    rng = np.random.default_rng(seed)
    obj = (rng.random((20, 30)) + 1j * rng.random((20, 30))).astype(np.complex64)
    probe = (rng.random((2, 8, 8)) - 1j * rng.random((2, 8, 8))).astype(np.complex64)
    prov = {"version": "0.1.0", "ranks": 2, "grid": [1, 2], "devices": ["cuda:0", "cuda:1"],
            "algorithm": "dm", "iterations_done": 3, "wall_time_s": 1.25,
            "compute_s": [1.0, 1.1], "comm_s": [0.1, 0.2], "bytes_sent": [1024, 2048],
            "positions_held": [5, 6], "local_object_pixels": [300, 320]}
    return ResultData(object=obj, probe=probe, positions=rng.random((11, 2)) * 10,
                      error=np.array([0.3, 0.2, 0.1]), pixel_size=1.5e-8,
                      config_yaml="algorithm:\n  name: dm\n", provenance=prov, state=state)


def test_round_trip(tmp_path):
    state = {"rng": np.arange(4, dtype=np.uint64),
             "exit_waves": {"rank0": np.ones((3, 8, 8), np.complex64),
                            "rank1": np.zeros((2, 8, 8), np.complex64)},
             "iteration": np.int64(3)}
    d = _data(state=state)
    path = tmp_path / "result.h5"
    write_result(path, d)
    r = read_result(path)
    np.testing.assert_array_equal(r.object, d.object)
    assert r.object.dtype == np.complex64
    np.testing.assert_array_equal(r.probe, d.probe)
    np.testing.assert_array_equal(r.positions, d.positions)
    np.testing.assert_array_equal(r.error, d.error)
    assert r.pixel_size == 1.5e-8
    assert r.config_yaml == d.config_yaml
    assert r.provenance == d.provenance
    assert set(r.state) == {"rng", "exit_waves", "iteration"}
    np.testing.assert_array_equal(r.state["rng"], state["rng"])
    assert r.state["rng"].dtype == np.uint64
    np.testing.assert_array_equal(r.state["exit_waves"]["rank1"], state["exit_waves"]["rank1"])
    assert int(r.state["iteration"]) == 3


def test_layout_on_disk(tmp_path):
    path = tmp_path / "result.h5"
    write_result(path, _data(state={"a": np.zeros(2)}))
    with h5py.File(path, "r") as f:
        for name in ("object", "probe", "positions", "error", "pixel_size", "config"):
            assert isinstance(f[name], h5py.Dataset), name
        assert f["object"].shape == (20, 30)
        assert f["probe"].shape == (2, 8, 8)
        assert f["positions"].shape == (11, 2)
        assert f["provenance"].attrs["ranks"] == 2
        assert f["provenance"].attrs["algorithm"] == "dm"
        assert list(f["provenance/compute_s"][()]) == [1.0, 1.1]
        assert list(f["provenance/devices"].asstr()[()]) == ["cuda:0", "cuda:1"]
        assert "state/a" in f
    assert os.listdir(tmp_path) == ["result.h5"]


def test_no_state_group_without_state(tmp_path):
    write_result(tmp_path / "r.h5", _data())
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert "state" not in f
    assert read_result(tmp_path / "r.h5").state is None


def test_overwrite_replaces(tmp_path):
    path = tmp_path / "result.h5"
    write_result(path, _data(0))
    write_result(path, _data(1))
    np.testing.assert_array_equal(read_result(path).object, _data(1).object)
    assert os.listdir(tmp_path) == ["result.h5"]


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "result.h5"
    write_result(path, _data(0))
    before = path.read_bytes()
    real = h5py.Group.create_dataset
    calls = {"n": 0}

    def failing(self, name, *args, **kwargs):
        calls["n"] += 1
        if name == "positions":  # after the file was opened and object/probe written
            raise OSError("disk full (simulated)")
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(OSError, match="simulated"):
        write_result(path, _data(1))
    assert calls["n"] >= 3
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["result.h5"]
    np.testing.assert_array_equal(read_result(path).object, _data(0).object)


def test_failed_rename_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "result.h5"

    def no_replace(src, dst):
        raise OSError("rename failed (simulated)")

    monkeypatch.setattr(results.os, "replace", no_replace)
    with pytest.raises(OSError, match="simulated"):
        write_result(path, _data())
    assert os.listdir(tmp_path) == []


def test_read_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_result(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(DataError, match="not a readable HDF5"):
        read_result(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["object"] = np.zeros((2, 2))
    with pytest.raises(DataError, match="not a ptychompi result file") as exc:
        read_result(tmp_path / "other.h5")
    assert "\n" not in str(exc.value)


def test_bad_state_is_refused_before_replacing(tmp_path):
    path = tmp_path / "result.h5"
    write_result(path, _data(0))
    with pytest.raises(ValueError, match="names must be"):
        write_result(path, _data(1, state={"a/b": np.zeros(2)}))
    assert os.listdir(tmp_path) == ["result.h5"]
    np.testing.assert_array_equal(read_result(path).object, _data(0).object)


def test_check_output_dir_creates(tmp_path):
    d = tmp_path / "a" / "b"
    check_output_dir(d, 1000)
    assert d.is_dir()
    assert os.listdir(d) == []


def test_check_output_dir_not_creatable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PtychompiError, match="cannot be created") as exc:
        check_output_dir(blocker / "out", 1000)
    msg = str(exc.value)
    assert "\n" not in msg and "output.directory" in msg and str(blocker / "out") in msg
    with pytest.raises(PtychompiError, match="not a folder"):
        check_output_dir(blocker, 1000)


def test_check_output_dir_not_writable(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(results.tempfile, "mkstemp", denied)
    with pytest.raises(PtychompiError, match="not writable.*Permission denied"):
        check_output_dir(tmp_path, 10)


def test_check_output_dir_low_space(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 10**6, 10**6))
    check_output_dir(tmp_path, 400_000)  # 0.8 MB needed, 1 MB free
    with pytest.raises(PtychompiError, match="1.0 MB free.*1.2 MB") as exc:
        check_output_dir(tmp_path, 600_000)
    assert str(tmp_path) in str(exc.value)


def test_estimate_matches_real_file(tmp_path):
    d = _data()
    d.object = np.zeros((400, 500), np.complex64)
    write_result(tmp_path / "r.h5", d)
    est = estimate_result_bytes((400, 500), (2, 8, 8), 11, 3)
    size = (tmp_path / "r.h5").stat().st_size
    assert size <= est <= size + 100_000
    assert estimate_result_bytes((10, 10), (1, 4, 4), 1, 1, checkpoint_state_bytes=10**6) > 10**6


_LIMITED_WRITER = """
import resource, signal, sys
import numpy as np
from ptychompi.io.results import write_result
sys.path.insert(0, {tests!r})
from test_results import _data
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    write_result(sys.argv[1], _data(1))
except OSError as exc:
    print("OSError", exc.errno)
else:
    print("written")
"""


def test_write_failing_anywhere_is_one_oserror(tmp_path):
    """A disk that fails at any byte of the file (here a file-size limit, a real failed
    write): one OSError naming it, no "Exception ignored" tracebacks from HDF5's objects as
    they are freed, no temporary left, the previous file whole."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    path = tmp_path / "r.h5"
    write_result(str(path), _data(0))
    size = path.stat().st_size
    script = _LIMITED_WRITER.format(tests=os.path.dirname(__file__))
    for limit in sorted({0, 512, 2048, 4096, size // 3, size // 2, size - 600, size - 100,
                         size - 1}):
        proc = subprocess.run([sys.executable, "-c", script, str(path), str(limit)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout.split() == ["OSError", "27"], (
            limit, proc.stdout, proc.stderr)
        assert proc.stderr == "", (limit, proc.stderr)
        assert os.listdir(tmp_path) == ["r.h5"], limit
        np.testing.assert_array_equal(read_result(str(path)).object, _data(0).object)
