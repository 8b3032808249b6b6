"""``benchmarks/scaling.py --model``: the model's arithmetic, and its prediction of a real
2-rank run here within a stated factor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))
import scaling_model as sm  # noqa: E402

MPIEXEC = Path(sys.executable).parent / "mpiexec"
#: measured / predicted at 2 ranks on a small scan must lie within this factor, the compute
#: term scaled by the CPU share the ranks got (this machine's cores are shared with other jobs;
#: the runs' own noise is tens of percent)
FACTOR = 2.0


def test_predict_adds_compute_halo_and_collectives() -> None:
    counts = sm.Counts(ranks=2, halo_sums=2, bytes_per_halo_pixel=12.0, other_collectives=3,
                       other_bytes=1000.0, frame=64)
    net = sm.Network(latency_s=1e-6, bandwidth_Bps=1e9)
    tiles = {"positions": 50, "halo_area": 10_000, "neighbours": 3}
    p = sm.predict(4, tiles, 1e-3, counts, net, frame=128)
    slow = sm.predict(4, tiles, 1e-3, counts, net, frame=128, slowdown=3.0)
    assert slow["compute"] == pytest.approx(0.15) and slow["halo"] == pytest.approx(p["halo"])
    assert p["compute"] == pytest.approx(0.05)
    assert p["halo"] == pytest.approx(2 * 3 * 1e-6 + 12.0 * 10_000 / 1e9)
    # 2 log2(4) latencies per collective; probe-sized bytes scale with the frame area
    assert p["collectives"] == pytest.approx(3 * 4 * 1e-6 + 2 * 4000.0 / 1e9)
    assert p["total"] == pytest.approx(p["compute"] + p["halo"] + p["collectives"])
    shared = sm.predict(4, tiles, 1e-3, counts, net, frame=128, cores=2)
    assert shared["compute"] == pytest.approx(0.1)  # 4 ranks on 2 cores
    one = sm.predict(1, {**tiles, "positions": 200}, 1e-3, counts, net, frame=128)
    assert one["total"] == pytest.approx(0.2)


def test_tile_figures_follow_decompose() -> None:
    pos = sm.raster_px(12, 8.0)
    t1, t4 = sm.tile_figures(pos, 64, 1), sm.tile_figures(pos, 64, 4)
    assert (t1["positions"], t1["halo_area"], t1["neighbours"]) == (144, 0, 0)
    assert t4["positions"] == 36 and t4["neighbours"] == 3 and t4["grid"] == [2, 2]
    assert t4["halo_area"] > 0
    assert t4["batch_positions"] == t4["positions"]  # one synchronisation per iteration


def test_batch_synchronisation_waits_for_the_fullest_rank() -> None:
    """Ten random batches: the slowest rank's positions per iteration exceed its share, and
    the compute term uses them."""
    pos = sm.raster_px(12, 8.0)
    t4 = sm.tile_figures(pos, 64, 4, batches=10)
    assert t4["positions"] < t4["batch_positions"] <= 144
    t1 = sm.tile_figures(pos, 64, 1, batches=10)
    assert t1["batch_positions"] == 144
    counts = sm.Counts(ranks=4, halo_sums=10, bytes_per_halo_pixel=12.0, other_collectives=3,
                       other_bytes=0.0, frame=64)
    p = sm.predict(4, t4, 1e-3, counts, sm.Network(1e-6, 1e9), frame=64)
    assert p["compute"] == pytest.approx(1e-3 * t4["batch_positions"])


def test_routed_sums_send_to_row_and_column_neighbours_only() -> None:
    """A 2x2 grid: DM's one halo sum a message to each of 3 neighbours, LSQML's routed
    touched sums 2 (row, then column: what the exchange counts), and the halo term follows."""
    pos = sm.raster_px(12, 8.0)
    dm, lsqml = sm.tile_figures(pos, 64, 4), sm.tile_figures(pos, 64, 4, batches=10)
    assert (dm["messages_per_sum"], lsqml["messages_per_sum"]) == (3, 2)
    two = sm.tile_figures(pos, 64, 2, batches=10)
    assert two["messages_per_sum"] == two["neighbours"] == 1  # one row: not routed
    counts = sm.Counts(ranks=4, halo_sums=10, bytes_per_halo_pixel=0.0, other_collectives=0,
                       other_bytes=0.0, frame=64)
    p = sm.predict(4, lsqml, 0.0, counts, sm.Network(1e-6, 1e9), frame=64)
    assert p["halo"] == pytest.approx(10 * 2 * 1e-6)


@pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec beside the interpreter")
def test_model_predicts_two_ranks_here(tmp_path: Path) -> None:
    out, png = tmp_path / "model.json", tmp_path / "model.png"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "HYDRA_"))}
    env.pop("PTYCHOMPI_DEVICE", None)
    proc = subprocess.run([sys.executable, str(BENCH / "scaling.py"), "--model", "--check", "1,2",
                           "--engine", "dm", "--grid", "12", "--frame", "128", "--iterations", "5",
                           "--warmup", "1", "--workers", "1", "--json", str(out),
                           "--plot", str(png)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    two = next(r for r in data["check"] if r["ranks"] == 2)
    print(f"[model] 2 ranks: measured {two['measured_s']:.4f} s/it, predicted "
          f"{two['predicted_share_s']:.4f} (CPU share {two['cpu_share']:.2f}), "
          f"{two['predicted_s']:.4f} (N / cores)")
    assert 1 / FACTOR <= two["ratio_share"] <= FACTOR, two
    assert two["predicted_s"] > 0 and two["parts"]["halo"] > 0
    # counted, not assumed: the halo bytes are whole pixels of the exchanged arrays
    counts = data["counts"]
    assert counts["halo_sums"] >= 1 and counts["bytes_per_halo_pixel"] >= 4
    strong = data["projection"]["strong"]
    assert [r["ranks"] for r in strong][-1] == 1024
    eff = np.array([r["efficiency"] for r in strong])
    assert eff[0] == pytest.approx(1.0) and np.all((eff > 0) & (eff <= 1.0 + 1e-9))
    assert strong[-1]["frames"] >= 99_000
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    assert "meas/pred" in proc.stdout
