"""The benchmark scripts run end to end at a tiny size and report sane numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _env() -> dict:
    env = dict(os.environ)
    env.pop("PTYCHOMPI_DEVICE", None)  # the scripts are asked for the CPU explicitly
    env.setdefault("PTYCHOMPI_WORKERS", "1")
    return env


def test_engines_benchmark_reports_a_ratio_per_engine(tmp_path: Path) -> None:
    out = tmp_path / "tmp.json"
    proc = _run([str(BENCH / "engines.py"), "--sizes", "4x32", "--iterations", "2",
                 "--warmup", "1", "--engines", "epie,dm,lsqml", "--json", str(out)], tmp_path)
    data = json.loads(out.read_text())
    rows = {r["engine"]: r for r in data["rows"]}
    assert set(rows) == {"epie", "dm", "lsqml"}
    for row in rows.values():
        assert row["ratio_to_floor"] > 0
        assert row["seconds_per_iteration"] > 0 and row["fft_floor_s"] > 0
        assert row["iterations"] == 2 and row["n_frames"] == 16
    assert "x floor" in proc.stdout


def test_io_benchmark_reads_every_compression(tmp_path: Path) -> None:
    out = tmp_path / "io.json"
    _run([str(BENCH / "io_read.py"), "--grid", "3", "--frame", "16", "--reps", "1",
          "--dir", str(tmp_path / "files"), "--json", str(out)], tmp_path)
    rows = json.loads(out.read_text())["rows"]
    assert [r["compression"] for r in rows] == ["none", "lz4", "bitshuffle", "zlib"]
    assert all(r["frames_per_second"] > 0 and r["bytes_on_disk"] > 0 for r in rows)


def test_engines_benchmark_rounds_give_a_median_summary(tmp_path: Path) -> None:
    out = tmp_path / "rounds.json"
    proc = _run([str(BENCH / "engines.py"), "--sizes", "4x32", "--iterations", "1",
                 "--warmup", "0", "--engines", "dm", "--rounds", "2", "--subpixel-bins", "4",
                 "--json", str(out)], tmp_path)
    rows = json.loads(out.read_text())["rows"]
    assert [r["round"] for r in rows] == [0, 1]
    assert all(r["subpixel_bins"] == 4 for r in rows)
    assert "x floor median (range)" in proc.stdout
