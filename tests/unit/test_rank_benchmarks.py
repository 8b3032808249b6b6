"""The rank-efficiency benchmarks (issue 20) run end to end at a tiny size with sane numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from ptychompi.parallel.sparse_halo import cover
from ptychompi.parallel.tiling import Box

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_cover_paints_clipped_windows() -> None:
    mask = cover(np.array([[-3, 5], [8, -10]]), Box(0, 0, 10, 12), (6, 4))
    expected = np.zeros((10, 12), bool)
    expected[0:3, 5:9] = True
    np.testing.assert_array_equal(mask, expected)


def test_halo_touched_orders_full_touched_floor(tmp_path: Path) -> None:
    proc = _run([str(BENCH / "halo_touched.py"), "--grid", "8", "--frame", "32",
                 "--ranks", "2,4", "--iterations", "2"], tmp_path)
    rows = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert [r["ranks"] for r in rows] == [2, 4]
    for r in rows:
        assert 0 < r["floor_MB"] <= r["touched_MB"] * 8 / 12 + 1e-12
        assert r["touched_MB"] <= r["full_MB"]
        assert 0 < r["both_fraction"] <= r["touched_fraction"] <= 1
        assert r["batch_imbalance"] >= 1
        assert r["redundant_MB"] >= 0 and r["redundant_work"] > 1  # windows computed twice
    two, four = rows
    # one row of tiles: the routed sum is the direct one; 2x2: diagonals ride the columns
    assert abs(two["routed_MB"] - two["numerator_MB"]) < 1e-12
    assert four["routed_MB"] < four["numerator_MB"]
    assert "| 2 |" in proc.stdout and "| 4 |" in proc.stdout


def test_rank_timeline_reports_phases_and_efficiency(tmp_path: Path) -> None:
    out = tmp_path / "timeline.json"
    proc = _run([str(BENCH / "rank_timeline.py"), "--ranks", "2", "--rounds", "1",
                 "--iterations", "1", "--grid", "6", "--frame", "32", "--json", str(out)],
                tmp_path)
    data = json.loads(out.read_text())
    one, two = data["runs"]["1"][0], data["runs"]["2"][0]
    assert len(one["per_rank"]) == 1 and len(two["per_rank"]) == 2
    assert sum(p["positions"] for p in two["per_rank"]) == one["per_rank"][0]["positions"]
    for p in one["per_rank"] + two["per_rank"]:
        assert p["phases_ms"]["exit waves + sums"] > 0
        assert p["phases_ms"]["iteration"] >= p["phases_ms"]["exit waves + sums"]
    assert all(p["bytes_per_iter"] > 0 for p in two["per_rank"])
    assert len(data["efficiency"]) == 1 and data["efficiency"][0] > 0
    assert "compute-seconds efficiency" in proc.stdout


def test_halo_touched_projection_imbalance_grows_with_ranks(tmp_path: Path) -> None:
    proc = _run([str(BENCH / "halo_touched.py"), "--projection", "--iterations", "1"], tmp_path)
    rows = [line.split("|") for line in proc.stdout.splitlines()
            if line.startswith("| ") and line[2].isdigit()]
    ratios = {int(r[1]): float(r[3]) for r in rows}
    assert sorted(ratios) == [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    assert 1 <= ratios[2] < ratios[64] < ratios[1024]


def test_rank_timeline_phases_name_functions_that_exist() -> None:
    """Every phase names a function defined in a module of that name (a renamed or moved
    function would otherwise read as a phase of zero)."""
    import ast  # noqa: PLC0415

    sys.path.insert(0, str(BENCH))
    try:
        import rank_timeline  # noqa: PLC0415
    finally:
        sys.path.remove(str(BENCH))
    defined: dict[str, set[str]] = {}
    for path in (ROOT / "ptychompi").rglob("*.py"):
        names = {n.name for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        defined.setdefault(path.name, set()).update(names)
    for phase, funcs in rank_timeline.PHASES.items():
        assert any(name in defined.get(module, set()) for module, name in funcs), phase
        for module, name in funcs:
            assert name in defined.get(module, set()), (phase, module, name)
