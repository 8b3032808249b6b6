"""Live snapshots: downsampling, atomic files, the runner's hook."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ptychompi.app.cli import main
from ptychompi.app.live import LiveWriter, downsample, read_snapshot, read_status


def test_downsample_block_mean_and_limit() -> None:
    a = np.arange(2050 * 10, dtype=np.float64).reshape(2050, 10)
    small, f = downsample(a, 1024)
    assert f == 3 and small.shape == (683, 3)
    assert small[0, 0] == pytest.approx(a[:3, :3].mean())
    same, f1 = downsample(a[:100], 1024)
    assert f1 == 1 and np.array_equal(same, a[:100])


def _fake_recon(obj: np.ndarray, iteration: int) -> SimpleNamespace:
    return SimpleNamespace(object=obj, probe=np.ones((2, 4, 4), np.complex64) * 2j,
                           layout=SimpleNamespace(pixel_size_m=1e-8), iteration=iteration,
                           history=[{"error": 1.0 / (i + 1), "seconds": 0.5}
                                    for i in range(iteration)])


def test_writer_files_and_states(tmp_path: Path) -> None:
    obj = np.exp(1j * (0.3 + np.linspace(-1, 1, 2000 * 50))).reshape(2000, 50) * 3
    w = LiveWriter(tmp_path, 5, 20, rank=0)
    assert [i for i in range(1, 21) if w.due(i)] == [5, 10, 15, 20]
    w.update(_fake_recon(obj, 5))
    st = read_status(tmp_path)
    assert st["iteration"] == 5 and st["iterations"] == 20 and st["state"] == "running"
    assert st["error"] == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    assert st["eta_s"] == pytest.approx(15 * 0.5)
    snap = read_snapshot(tmp_path)
    assert snap["amplitude"].shape == (1000, 25) and snap["amplitude"].dtype == np.float32
    assert np.allclose(snap["amplitude"], 3, atol=1e-3)
    assert abs(float(np.mean(snap["phase"]))) < 1e-3  # global phase removed
    assert np.allclose(snap["probe"], 2) and snap["pixel_size"] == pytest.approx(2e-8)
    w.finish(_fake_recon(obj, 7), "failed")
    assert read_status(tmp_path)["state"] == "failed"
    assert not [p for p in (tmp_path / "live").iterdir() if "tmp" in p.name]


def test_off_and_other_ranks_write_nothing(tmp_path: Path) -> None:
    LiveWriter(tmp_path / "a", 0, 10, rank=0).update(_fake_recon(np.ones((4, 4)), 1))
    w = LiveWriter(tmp_path / "b", 2, 10, rank=1)
    w.update(_fake_recon(np.ones((4, 4)), 2))
    w.finish(_fake_recon(np.ones((4, 4)), 2), "done")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_runner_writes_live_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "--out", "scan.cxi", "--frame", "64", "--grid", "6", "--step-px",
                 "8", "--probe-diameter-px", "20"]) == 0
    Path("c.yaml").write_text("data: {path: scan.cxi}\nalgorithm: {name: epie, iterations: 5}\n"
                              "output: {directory: out, live_every: 2}\n")
    assert main(["run", "c.yaml", "--quiet"]) == 0
    st = json.loads(Path("out/live/status.json").read_text())
    assert st["state"] == "done" and st["iteration"] == 5 and len(st["error"]) == 5
    snap = read_snapshot("out")
    assert int(snap["iteration"]) == 5  # the last iteration always gets a snapshot
