"""The GUI's HTTP API through Starlette's TestClient: token, confinement, form, imports,
submission, live view and results."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from starlette.testclient import TestClient

from ptychompi.app.cli import main
from ptychompi.app.gui import routes_results
from ptychompi.app.gui.app import GuiSettings, make_app
from ptychompi.app.gui.devices import devices, parse_nvidia_smi
from ptychompi.app.gui.schema import fields
from ptychompi.app.queue.store import QueueStore
from ptychompi.compat.ptychopy import parse
from ptychompi.config import Config, EmailConfig
from ptychompi.io.aps import mda_positions
from ptychompi.io.results import read_result

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TOKEN = "t0k-" + "x" * 20
MDA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mda"
MDA_FILE = "xrfmaps_2ide_2xfm_0011.mda"


def _shared_mda() -> Path:
    for base in (MDA, Path("/work/shared/data/mda")):
        if (base / MDA_FILE).is_file():
            return base / MDA_FILE
    raise FileNotFoundError(f"{MDA_FILE} not found in ../shared/data/mda")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with a tiny simulated scan, one finished run (live files included) and an MDA
    file."""
    root = tmp_path_factory.mktemp("gui-root")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["simulate", "--out", "scan.cxi", "--frame", "64", "--grid", "6",
                     "--step-px", "8", "--probe-diameter-px", "20", "--probe-modes", "2"]) == 0
        Path("run.yaml").write_text(
            "data: {path: scan.cxi}\nalgorithm: {name: epie, iterations: 4, probe_modes: 2}\n"
            "output: {directory: runs/first, live_every: 2}\n")
        assert main(["run", "run.yaml", "--quiet"]) == 0
    finally:
        os.chdir(cwd)
    shutil.copy(_shared_mda(), root / MDA_FILE)
    return root


@pytest.fixture()
def client(root: Path) -> TestClient:
    c = TestClient(make_app(root, token=TOKEN, poll_s=0.05))
    c.headers["x-ptychompi-token"] = TOKEN
    return c


# ----------------------------------------------------------------------------- security
@pytest.mark.parametrize("url", ["/", "/api/config/schema", "/static/app.js", "/api/queue",
                                 "/api/live/events?dir=runs/first",
                                 "/api/results/download?path=runs/first&fmt=hdf5"])
def test_every_route_needs_the_token(root: Path, url: str) -> None:
    bare = TestClient(make_app(root, token=TOKEN))
    assert bare.get(url).status_code == 403
    assert bare.get(url, headers={"x-ptychompi-token": "wrong"}).status_code == 403
    assert bare.get(url, cookies={"ptychompi_token": TOKEN[:-1]}).status_code == 403
    assert bare.get(url, headers={"x-ptychompi-token": TOKEN}).status_code == 200


def test_posts_must_be_json(client: TestClient, root: Path) -> None:
    """A form posted by another site (even with a token) is refused: the API takes JSON."""
    values = json.dumps({"path": "x.yaml", "values": _values({})})
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        r = client.post("/api/config/save", content=values, headers={"content-type": ctype})
        assert r.status_code == 415
    assert not (root / "x.yaml").exists()


def test_token_in_the_url_sets_a_cookie(root: Path) -> None:
    c = TestClient(make_app(root, token=TOKEN))
    r = c.get(f"/?token={TOKEN}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "httponly" in r.headers["set-cookie"].lower()
    assert c.get("/api/config/schema").status_code == 200  # the cookie now carries it
    assert c.get("/api/info").json()["root"] == str(root.resolve())


@pytest.mark.parametrize("url", [
    "/api/config/load?path=/etc/passwd", "/api/config/load?path=../../etc/passwd",
    "/api/config/load?path=%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/api/files?dir=..",
    "/api/files?dir=/", "/api/results/info?path=/etc", "/api/results/info?path=outside",
    "/api/results/download?path=outside/result.h5&fmt=hdf5", "/api/live/status?dir=..",
    "/api/live/image?dir=outside&kind=phase", "/static/../app.py",
    "/api/config/load?path=link-out/secret.yaml"])
def test_paths_outside_the_root_are_404(client: TestClient, root: Path, tmp_path: Path,
                                        url: str) -> None:
    outside = tmp_path / "elsewhere"
    (outside / "live").mkdir(parents=True)
    (outside / "secret.yaml").write_text("algorithm: {iterations: 1}\n")
    shutil.copy(root / "runs" / "first" / "result.h5", outside / "result.h5")
    shutil.copytree(root / "runs" / "first" / "live", outside / "live", dirs_exist_ok=True)
    for name in ("outside", "link-out"):
        link = root / name
        if link.is_symlink():
            link.unlink()
        link.symlink_to(outside)
    try:
        assert client.get(url).status_code == 404
        r = client.post("/api/config/from_mda", json={"path": str(_shared_mda())})
        assert r.status_code == 404  # the real file exists, but outside the root
    finally:
        for name in ("outside", "link-out"):
            (root / name).unlink()


def test_no_shell_for_names_and_paths(client: TestClient, root: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A job name and an output folder full of shell syntax: the queue stores a clean name and
    `sbatch` gets the path as one argument, no shell ever runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    argv_log = tmp_path / "sbatch-argv.json"
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f"#!{sys.executable}\nimport json, sys\n"
                      f"json.dump(sys.argv[1:], open({str(argv_log)!r}, 'w'))\n"
                      "print('Submitted batch job 42')\n")
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    calls: list[dict] = []
    real_run, real_popen = subprocess.run, subprocess.Popen

    def spy_run(*a, **kw):
        calls.append(kw)
        return real_run(*a, **kw)

    class SpyPopen(real_popen):  # type: ignore[misc, valid-type]
        def __init__(self, *a, **kw):
            calls.append(kw)
            super().__init__(*a, **kw)

    monkeypatch.setattr(subprocess, "run", spy_run)
    monkeypatch.setattr(subprocess, "Popen", SpyPopen)
    evil = "x; touch PWNED1 && $(touch PWNED2) `touch PWNED3` | rm -rf ~ #"
    values = _values({"data.path": "scan.cxi", "algorithm.iterations": "2"})
    r = client.post("/api/submit", json={"values": values, "target": "queue", "name": evil})
    assert r.status_code == 200, r.text
    job = r.json()["job"]
    assert all(c.isalnum() or c in "-_." for c in job["name"])
    assert Path(job["output_dir"]).parent == root.resolve() / "queue" / "jobs"
    out_dir = root / "batch" / "o;$(touch${IFS}PWNED4)`touch${IFS}PWNED5`"
    values["output.directory"] = str(out_dir)
    r = client.post("/api/submit", json={"values": values, "target": "slurm", "name": evil,
                                         "nodes": 1, "gpus_per_node": 1, "time": "00:10:00"})
    assert r.status_code == 200, r.text
    assert "Submitted batch job 42" in r.json()["output"]
    argv = json.loads(argv_log.read_text())
    assert len(argv) == 1 and Path(argv[0]).parent == out_dir.resolve()
    assert calls and all(not kw.get("shell") for kw in calls)
    for here in (root, Path.cwd(), out_dir, tmp_path):
        assert not list(here.glob("PWNED*"))
    r = client.post("/api/submit", json={"values": values, "target": "slurm",
                                         "account": "a;rm -rf /"})
    assert r.status_code == 400 and r.json()["error"].startswith("ptychompi: error: --account")


# ----------------------------------------------------------------------------- form
def _leaf_keys(obj: object, prefix: str) -> list[str]:
    keys = []
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if f.name == "email" and value is None:
            value = EmailConfig()
        if dataclasses.is_dataclass(value):
            keys += _leaf_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _values(changes: dict[str, str]) -> dict[str, str]:
    values = {f["key"]: f["default"] for f in fields()}
    values.update(changes)
    return values


def test_schema_has_every_key_with_help_choices_and_ranges(client: TestClient) -> None:
    data = client.get("/api/config/schema").json()
    keys = [f["key"] for f in data["fields"]]
    assert keys == _leaf_keys(Config(), "")
    by_key = {f["key"]: f for f in data["fields"]}
    assert by_key["algorithm.name"]["choices"] == ["epie", "dm", "lsqml"]
    assert by_key["preprocess.rotate90"]["low"] == 0 and by_key["preprocess.rotate90"]["high"] == 3
    assert by_key["output.live_every"]["default"] == "10"
    assert all(f["help"] for f in data["fields"])
    assert [s["name"] for s in data["sections"]] == ["data", "geometry", "preprocess",
                                                     "algorithm", "parallel", "output"]


def test_validation_gives_the_cli_error_line(client: TestClient, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    r = client.post("/api/config/validate", json={"values": _values({})}).json()
    assert r["ok"] and yaml.safe_load(r["yaml"]) == Config().to_dict()
    bad = _values({"preprocess.rotate90": "5"})
    r = client.post("/api/config/validate", json={"values": bad}).json()
    (tmp_path / "bad.yaml").write_text("preprocess: {rotate90: 5}\n")
    assert main(["config", "--check", str(tmp_path / "bad.yaml")]) == 2
    cli_line = capsys.readouterr().err.strip()
    assert not r["ok"] and r["error"] == cli_line and r["key"] == "preprocess.rotate90"
    assert "rotate90: 5" in r["yaml"]  # the YAML stays live while invalid
    r = client.post("/api/config/validate",
                    json={"values": _values({"algorithm.name": "epei"})}).json()
    assert "did you mean 'epie'" in r["error"]
    r = client.post("/api/config/validate", json={
        "values": _values({"data.scan_dims": "11, 12", "data.step_m": "5e-8, 5e-8",
                           "output.formats": "hdf5, png", "geometry.energy_kev": "8.8",
                           "output.notify.email.to": "me@lab.org"})}).json()
    assert r["ok"], r["error"]
    cfg = r["config"]
    assert cfg["data"]["scan_dims"] == [11, 12] and cfg["data"]["step_m"] == [5e-8, 5e-8]
    assert cfg["output"]["formats"] == ["hdf5", "png"] and cfg["geometry"]["energy_kev"] == 8.8
    assert cfg["output"]["notify"]["email"]["to"] == ["me@lab.org"]


def test_yaml_save_load_and_upload_round_trip(client: TestClient, root: Path) -> None:
    values = _values({"algorithm.iterations": "33", "data.path": "scan.cxi"})
    r = client.post("/api/config/save", json={"path": "saved.yaml", "values": values})
    assert r.status_code == 200 and (root / "saved.yaml").is_file()
    assert yaml.safe_load((root / "saved.yaml").read_text())["algorithm"]["iterations"] == 33
    back = client.get("/api/config/load?path=saved.yaml").json()["values"]
    assert back == values
    up = client.post("/api/config/from_yaml", json={"yaml": "algorithm: {name: lsqml}\n"})
    assert up.json()["values"]["algorithm.name"] == "lsqml"
    bad = client.post("/api/config/from_yaml", json={"yaml": "algorithm: {itrations: 3}\n"})
    assert bad.status_code == 400 and "did you mean 'iterations'" in bad.json()["error"]
    r = client.post("/api/config/save", json={"path": "x.sh", "values": values})
    assert r.status_code == 400
    r = client.post("/api/config/save", json={"path": "../escape.yaml", "values": values})
    assert r.status_code == 404 and not (root.parent / "escape.yaml").exists()


def test_ptychopy_import_matches_the_parser(client: TestClient) -> None:
    cmd = ("./ptycho -jobID=t -algorithm=ePIE -i=20 -size=64 -lambda=1.24e-10 -fp=x_#04d.h5 "
           "-scanDims=8,8 -step=50e-9,50e-9 -dx_d=75e-6 -z=2 -probeModes=3")
    r = client.post("/api/config/from_ptychopy", json={"command": cmd})
    values = r.json()["values"]
    cfg = parse(cmd)
    assert values["algorithm.iterations"] == "20" and values["algorithm.probe_modes"] == "3"
    assert values["data.scan_dims"] == "8, 8"
    assert float(values["geometry.energy_kev"]) == pytest.approx(cfg.geometry.energy_kev)
    assert client.post("/api/config/validate", json={"values": values}).json()["config"] == \
        cfg.to_dict()
    r = client.post("/api/config/from_ptychopy", json={"command": "./ptycho -itr=3"})
    assert r.status_code == 400 and r.json()["error"].startswith("ptychompi: error: unknown")


def test_mda_import_fills_energy_dims_step(client: TestClient, root: Path) -> None:
    r = client.post("/api/config/from_mda", json={
        "path": MDA_FILE, "values": _values({"data.path": "ptycho/scan{scan:03d}_#04d.h5"})})
    assert r.status_code == 200, r.text
    out = r.json()
    v = out["values"]
    pos, params = mda_positions(root / MDA_FILE)
    assert v["data.positions"] == "mda" and v["data.mda_file"] == MDA_FILE
    assert v["data.scan_dims"] == "11, 11" and v["data.frames_per_file"] == "11"
    assert v["data.path"] == "ptycho/scan011_#04d.h5"  # the scan number filled in
    assert float(v["geometry.energy_kev"]) == pytest.approx(params["energy_kev"], rel=1e-5)
    row, col = (float(x) for x in v["data.step_m"].split(","))
    assert row == pytest.approx(np.median(np.abs(np.diff(np.unique(pos[:, 0])))), rel=1e-4)
    assert col == pytest.approx(np.nanmedian(np.abs(np.diff(pos[:11, 1]))), rel=1e-4)
    assert "2xfm" in out["summary"] and set(out["changed"]) >= {"geometry.energy_kev"}
    r = client.post("/api/config/from_mda", json={"path": "run.yaml"})
    assert r.status_code == 400 and r.json()["error"].startswith("ptychompi: error:")


def test_file_browser_lists_under_root(client: TestClient) -> None:
    data = client.get("/api/files?dir=.&ext=mda").json()
    names = [e["name"] for e in data["entries"]]
    assert MDA_FILE in names and "runs" in names and "scan.cxi" not in names
    assert data["parent"] is None


# ----------------------------------------------------------------------------- run page
def test_devices_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "0, NVIDIA H100 80GB HBM3, 81559\n1, NVIDIA H100 80GB HBM3, 81559\n"
    assert parse_nvidia_smi(text) == [
        {"index": i, "name": "NVIDIA H100 80GB HBM3", "memory_bytes": 81559 * 2**20}
        for i in (0, 1)]
    fake = tmp_path / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\nprintf '{text}'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setitem(sys.modules, "cupy", None)  # no CuPy: nvidia-smi is asked
    d = devices()
    assert [g["name"] for g in d["gpus"]] == ["NVIDIA H100 80GB HBM3"] * 2
    assert d["gpu_source"] == "nvidia-smi" and d["cpu_cores"] >= 1


def test_queue_submit_list_cancel_retry(client: TestClient, root: Path) -> None:
    values = _values({"data.path": "scan.cxi", "algorithm.iterations": "3"})
    r = client.post("/api/submit", json={"values": values, "target": "queue", "name": "scan 7",
                                         "email": "me@lab.org", "priority": 5})
    assert r.status_code == 200, r.text
    job = r.json()["job"]
    store = QueueStore(root / "queue")
    stored = store.get(job["id"])
    store.close()
    assert stored.name == "scan_7" and stored.priority == 5 and stored.email == "me@lab.org"
    assert stored.config["data"]["path"] == str(root / "scan.cxi")  # absolute under the root
    assert stored.config["output"]["notify"]["email"]["to"] == ["me@lab.org"]
    assert stored.output_dir == str(root.resolve() / "queue" / "jobs" / f"{job['id']}-scan_7")
    rows = {j["id"]: j for j in client.get("/api/queue").json()["jobs"]}
    assert rows[job["id"]]["state"] == "queued" and rows[job["id"]]["iterations"] == 3
    assert client.post(f"/api/queue/{job['id']}/cancel", json={}).json()["state"] == "cancelled"
    assert client.post(f"/api/queue/{job['id']}/retry", json={}).json()["state"] == "queued"
    assert client.post(f"/api/queue/{job['id']}/cancel", json={}).json()["state"] == "cancelled"
    r = client.post(f"/api/queue/{job['id']}/cancel", json={})
    assert r.status_code == 400 and "only queued or running" in r.json()["error"]
    bad = client.post("/api/submit", json={"values": values, "email": "not an address"})
    assert bad.status_code == 400
    bad = client.post("/api/submit", json={"values": _values({"algorithm.iterations": "-1"})})
    assert bad.status_code == 400 and bad.json()["key"] == "algorithm.iterations"


def test_slurm_dry_run_renders_the_script(client: TestClient, root: Path) -> None:
    values = _values({"data.path": "scan.cxi", "output.directory": "batch/dry"})
    r = client.post("/api/submit", json={"values": values, "target": "slurm", "name": "dry",
                                         "nodes": 2, "gpus_per_node": 4, "time": "02:00:00",
                                         "dry_run": True})
    assert r.status_code == 200, r.text
    script = r.json()["output"]
    assert "#SBATCH --nodes=2" in script and str(root / "batch" / "dry" / "dry.yaml") in script
    saved = yaml.safe_load((root / "batch" / "dry" / "dry.yaml").read_text())
    assert saved["data"]["path"] == str(root / "scan.cxi")
    r = client.post("/api/submit", json={"values": values, "target": "pbs", "time": "soon"})
    assert r.status_code == 400 and "--time 'soon'" in r.json()["error"]


# ----------------------------------------------------------------------------- live view
def test_live_status_and_images(client: TestClient, root: Path) -> None:
    st = client.get("/api/live/status?dir=runs/first").json()
    assert st["state"] == "done" and st["status"]["iteration"] == 4
    assert st["result"] == "runs/first/result.h5"
    phase = client.get("/api/live/image?dir=runs/first&kind=phase&cmap=viridis")
    img = Image.open(io.BytesIO(phase.content))
    assert phase.headers["content-type"] == "image/png" and img.mode == "RGB"
    assert img.size[0] >= 384
    probe = client.get("/api/live/image?dir=runs/first&kind=probe&mode=1")
    assert probe.status_code == 200
    assert client.get("/api/live/image?dir=runs/first&kind=probe&mode=2").status_code == 404
    assert client.get("/api/live/image?dir=runs&kind=phase").status_code == 404


def test_live_events_follow_the_status(client: TestClient, root: Path) -> None:
    folder = root / "runs" / "sse"
    (folder / "live").mkdir(parents=True, exist_ok=True)
    status = {"iteration": 2, "iterations": 6, "error": [0.3, 0.2], "eta_s": 4.0,
              "state": "running", "updated": time.time()}
    (folder / "live" / "status.json").write_text(json.dumps(status))
    events = []

    def finish_later() -> None:
        time.sleep(0.4)
        (folder / "live" / "status.json").write_text(
            json.dumps({**status, "iteration": 6, "state": "done", "error": [0.3, 0.2, 0.1]}))

    threading.Thread(target=finish_later, daemon=True).start()
    with client.stream("GET", "/api/live/events?dir=runs/sse") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert [e["status"]["iteration"] for e in events] == [2, 6]
    assert [e["state"] for e in events] == ["running", "done"]


# ----------------------------------------------------------------------------- results
def test_results_tree_info_images_downloads(client: TestClient, root: Path) -> None:
    tree = client.get("/api/results/tree").json()["results"]
    assert "runs/first/result.h5" in [r["path"] for r in tree]
    info = client.get("/api/results/info?path=runs/first").json()
    res = read_result(root / "runs" / "first" / "result.h5")
    assert info["object_shape"] == list(res.object.shape) and info["probe_modes"] == 2
    assert info["error"] == pytest.approx(res.error.tolist())
    assert info["provenance"]["iterations_done"] == 4 and "epie" in info["config_yaml"]
    grey = Image.open(io.BytesIO(client.get(
        "/api/results/image?path=runs/first&kind=amplitude&cmap=gray").content))
    colour = Image.open(io.BytesIO(client.get(
        "/api/results/image?path=runs/first&kind=amplitude&cmap=magma&low=5&high=95").content))
    g, c = np.asarray(grey), np.asarray(colour)
    assert g.shape == c.shape and np.all(g[..., 0] == g[..., 1])  # grey is grey
    assert not np.all(c[..., 0] == c[..., 1])
    assert client.get("/api/results/image?path=runs/first&cmap=nope").status_code == 400
    assert client.get("/api/results/image?path=runs/first&low=90&high=10").status_code == 400
    h5 = client.get("/api/results/download?path=runs/first&fmt=hdf5")
    assert h5.content == (root / "runs" / "first" / "result.h5").read_bytes()
    for fmt, suffix in (("tiff", ".tif"), ("png", ".png"), ("csv", ".csv")):
        z = zipfile.ZipFile(io.BytesIO(
            client.get(f"/api/results/download?path=runs/first&fmt={fmt}").content))
        assert z.namelist() and all(n.endswith(suffix) for n in z.namelist())
    csv = client.get("/api/results/download?path=runs/first&fmt=error-csv").text.splitlines()
    assert csv[0] == "iteration,error" and len(csv) == 5
    assert float(csv[-1].split(",")[1]) == pytest.approx(res.error[-1])


def test_gui_command_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["gui", "--root", str(tmp_path / "missing"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ptychompi: error: --root")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["gui", "--root", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ptychompi: error: 127.0.0.1:{port} is in use; choose another --port"]


def test_queue_in_one_allocation(client: TestClient, root: Path) -> None:
    r = client.post("/api/queue/allocate", json={"scheduler": "slurm", "nodes": 1,
                                                 "gpus_per_node": 4, "ranks_per_job": 2,
                                                 "time": "00:30:00", "dry_run": True})
    assert r.status_code == 200, r.text
    script = r.json()["output"]
    assert "queue run" in script and "--ranks-per-job 2" in script
    assert str(root.resolve() / "queue") in script
    r = client.post("/api/queue/allocate", json={"scheduler": "pbs", "nodes": 1,
                                                 "gpus_per_node": 3, "ranks_per_job": 2,
                                                 "dry_run": True})
    assert r.status_code == 400 and r.json()["error"].startswith("ptychompi: error:")
    assert client.post("/api/queue/allocate", json={"scheduler": "lsf"}).status_code == 400


def test_large_objects_are_shown_block_averaged(root: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes_results, "DISPLAY_MAX", 32)
    s = GuiSettings(root=root.resolve(), queue=root.resolve() / "queue", token=TOKEN)
    path = root / "runs" / "first" / "result.h5"
    data, views, factor = routes_results._load(s, path)
    assert factor == -(-max(data.object.shape) // 32) and max(views["phase"].shape) <= 32
    f = factor
    block = data.object[:f, :f].mean()
    assert views["amplitude"][0, 0] == pytest.approx(abs(block), rel=1e-5)
