"""``mpiexec -n N ptychompi queue run``: groups of k ranks, failure isolation, FIFO order,
bit-identical results, restart after kill -9, add/cancel while running, bad input."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from ptychompi.app.outlock import lock_output
from ptychompi.app.queue.store import QueueStore
from ptychompi.errors import PtychompiError
from ptychompi.io.cxi import write_cxi
from ptychompi.io.results import read_result
from ptychompi.sim.simulate import simulate

BIN = Path(sys.executable).parent
MPIEXEC = BIN / "mpiexec"
PTYCHOMPI = BIN / "ptychompi"
PROBE_PX = 20

pytestmark = pytest.mark.skipif(not (MPIEXEC.exists() and PTYCHOMPI.exists()),
                                reason="no mpiexec or ptychompi beside the interpreter")


def _env() -> dict[str, str]:
    """Without an enclosing MPI job's variables; one FFT thread per rank (2 shared cores)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "HYDRA_"))}
    env["PTYCHOMPI_WORKERS"] = "1"
    return env


def _run(args: list[str], cwd: Path, timeout: float, n: int | None = None
         ) -> subprocess.CompletedProcess:
    cmd = ([str(MPIEXEC), "-n", str(n)] if n else []) + [str(PTYCHOMPI), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=_env())


def _errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("ptychompi: error")]


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny simulated scan, the same with NaN frames, and its object pixel size."""
    root = tmp_path_factory.mktemp("scans")
    sim = simulate(frame=64, grid=8, step_px=8, probe_diameter_px=PROBE_PX, photons=1e6,
                   seed=0)
    frames = sim.frames.astype(np.float32)
    kw = {"distance_m": sim.distance_m, "pixel_size_m": sim.detector_pixel_m,
          "wavelength_m": sim.wavelength_m, "compression": None}
    write_cxi(root / "scan.cxi", frames, sim.positions_m, **kw)
    bad = frames.copy()
    bad[5:9] = np.nan
    write_cxi(root / "nan.cxi", bad, sim.positions_m, **kw)
    return {"good": root / "scan.cxi", "nan": root / "nan.cxi",
            "probe_m": PROBE_PX * float(sim.pixel_size_m)}


def _config(scans: dict, out: Path | None = None, path: Path | None = None,
            **algorithm: object) -> dict:
    cfg = {"data": {"path": str(path or scans["good"])},
           "algorithm": {"name": "lsqml", "iterations": 4, "probe_diameter_m": scans["probe_m"],
                         **algorithm},
           "parallel": {"device": "cpu", "workers": 1},
           "output": {"live_every": 0}}
    if out is not None:
        cfg["output"]["directory"] = str(out)
    return cfg


SIX = [("lsqml", {"name": "lsqml", "seed": 0}, "good"),
       ("missing", {"name": "lsqml"}, "missing"),
       ("dm", {"name": "dm"}, "good"),
       ("nan", {"name": "epie"}, "nan"),
       ("epie", {"name": "epie"}, "good"),
       ("lsqml2", {"name": "lsqml", "seed": 1}, "good")]


def _six_jobs(tmp: Path, scans: dict) -> Path:
    folder = tmp / "queue"
    with QueueStore(folder, create=True) as store:
        for name, algo, which in SIX:
            path = {"good": scans["good"], "nan": scans["nan"],
                    "missing": tmp / "no-such-scan.cxi"}[which]
            store.add(_config(scans, path=path, **algo), name=name)
    return folder


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in ("object", "probe", "error")}


def _reference(tmp: Path, scans: dict, name: str, algo: dict, ranks: int) -> dict:
    """The same job run alone by ``ptychompi run`` on ``ranks`` ranks."""
    out = tmp / f"alone-{name}-{ranks}"
    cfg = tmp / f"alone-{name}-{ranks}.yaml"
    cfg.write_text(yaml.safe_dump(_config(scans, out=out, **algo)))
    proc = _run(["run", str(cfg), "--quiet"], tmp, 120, n=ranks)
    assert proc.returncode == 0, proc.stderr
    return _arrays(out / "result.h5")


@pytest.mark.parametrize("ranks_per_job", [2, 1])
def test_four_ranks_six_jobs(tmp_path: Path, scans: dict, ranks_per_job: int) -> None:
    folder = _six_jobs(tmp_path, scans)
    proc = _run(["queue", "run", str(folder), "--ranks-per-job", str(ranks_per_job)],
                tmp_path, 150, n=4)
    assert proc.returncode == 0, proc.stderr
    with QueueStore(folder) as store:
        jobs = {j.name: j for j in store.jobs()}
        groups = store.groups()
    states = {name: j.state for name, j in jobs.items()}
    assert states == {"lsqml": "done", "missing": "failed", "dm": "done", "nan": "failed",
                      "epie": "done", "lsqml2": "done"}, states
    assert "no-such-scan.cxi" in jobs["missing"].error and "\n" not in jobs["missing"].error
    assert "NaN" in jobs["nan"].error, jobs["nan"].error
    n_groups = 4 // ranks_per_job
    assert len(groups) == n_groups
    assert sum(g["jobs_done"] for g in groups) == 4
    assert sum(g["jobs_failed"] for g in groups) == 2
    for g in range(n_groups):  # FIFO within each group: started in submission order
        mine = sorted((j for j in jobs.values() if j.group == g), key=lambda j: j.started)
        assert [j.id for j in mine] == sorted(j.id for j in mine)
        assert all(j.ranks == ranks_per_job for j in mine)
    assert {j.group for j in jobs.values()} <= set(range(n_groups))
    for name, algo, _ in SIX:
        job = jobs[name]
        if job.state != "done":
            continue
        assert job.iteration == 4 and job.final_error is not None and job.wall_s > 0
        assert job.device == ",".join(["cpu"] * ranks_per_job)
        assert (job.bytes_exchanged > 0) == (ranks_per_job > 1)
        got = _arrays(Path(job.result_path))
        want = _reference(tmp_path, scans, name, algo, ranks_per_job)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{name} {key}")


def test_ranks_per_job_equal_to_world_runs_jobs_one_after_another(tmp_path: Path,
                                                                   scans: dict) -> None:
    folder = tmp_path / "queue"
    with QueueStore(folder, create=True) as store:
        for seed in range(3):
            store.add(_config(scans, seed=seed), name=f"s{seed}")
    proc = _run(["queue", "run", str(folder), "--ranks-per-job", "2", "--coordinator",
                 "inline"], tmp_path, 120, n=2)
    assert proc.returncode == 0, proc.stderr
    with QueueStore(folder) as store:
        jobs = sorted(store.jobs(), key=lambda j: j.id)
    assert [j.state for j in jobs] == ["done"] * 3
    assert all(j.group == 0 and j.ranks == 2 and j.device == "cpu,cpu" for j in jobs)
    for a, b in zip(jobs, jobs[1:], strict=False):  # one after another
        assert a.ended <= b.started


def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the queue ended early: {proc.stderr.read()}")
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for the queue")
        time.sleep(0.2)


def _checkpoint_iteration(out: Path) -> int:
    if not (out / "checkpoint.h5").is_file():
        return 0
    try:
        return int(read_result(str(out / "checkpoint.h5")).provenance["checkpoint_iteration"])
    except (PtychompiError, OSError, KeyError):
        return 0


def test_kill_9_then_restart_resumes_and_loses_nothing(tmp_path: Path, scans: dict,
                                                      kill_tree) -> None:
    folder = tmp_path / "queue"
    with QueueStore(folder, create=True) as store:
        first = store.add(_config(scans, iterations=3), name="first")
        long = store.add(_config(scans, iterations=60), name="long")
        last = store.add(_config(scans, iterations=3), name="last")
    args = [str(MPIEXEC), "-n", "1", str(PTYCHOMPI), "queue", "run", str(folder),
            "--checkpoint-every", "4", "--quiet"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out = Path(long.output_dir)
        _wait_for(lambda: _checkpoint_iteration(out) >= 8, 90, proc)
    finally:
        kill_tree(proc)  # the rank too: it must not write another checkpoint after this
    with QueueStore(folder) as store:
        before = {j.name: j for j in store.jobs()}
    assert before["first"].state == "done" and before["long"].state == "running"
    assert before["last"].state == "queued"
    killed_at = _checkpoint_iteration(out)
    assert 8 <= killed_at < 60
    proc2 = _run(["queue", "run", str(folder)], tmp_path, 120, n=1)
    assert proc2.returncode == 0, proc2.stderr
    assert "queued again" in proc2.stderr
    with QueueStore(folder) as store:
        after = {j.name: j for j in store.jobs()}
    assert {n: j.state for n, j in after.items()} == {"first": "done", "long": "done",
                                                      "last": "done"}
    assert after["first"].attempts == 1 and after["first"].ended == before["first"].ended
    assert after["last"].attempts == 1
    assert after["long"].attempts == 2 and after["long"].resumed_from == killed_at
    assert after["long"].iteration == 60
    # resumed on the same rank count: bit for bit the run that was never interrupted
    cfg = _config(scans, out=tmp_path / "straight", iterations=60)
    cfg["output"]["checkpoint_every"] = 4
    (tmp_path / "straight.yaml").write_text(yaml.safe_dump(cfg))
    ref = _run(["run", str(tmp_path / "straight.yaml"), "--quiet"], tmp_path, 120)
    assert ref.returncode == 0, ref.stderr
    got, want = _arrays(out / "result.h5"), _arrays(tmp_path / "straight" / "result.h5")
    for key in ("object", "probe", "error"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert first.id < long.id < last.id


def test_add_and_cancel_while_running(tmp_path: Path, scans: dict, kill_tree) -> None:
    folder = tmp_path / "queue"
    with QueueStore(folder, create=True) as store:
        long = store.add(_config(scans, iterations=100000), name="long")
        waiting = store.add(_config(scans), name="waiting")
    (folder / "inbox").mkdir()  # watched by default
    proc = subprocess.Popen([str(MPIEXEC), "-n", "1", str(PTYCHOMPI), "queue", "run",
                             str(folder), "--wait", "2", "--poll", "0.3"], cwd=tmp_path,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        with QueueStore(folder) as store:
            _wait_for(lambda: store.get(long.id).iteration >= 1, 60, proc)
            yaml_path = tmp_path / "late.yaml"
            yaml_path.write_text(yaml.safe_dump(_config(scans)))
            add = _run(["queue", "add", str(folder), str(yaml_path), "--priority", "3"],
                       tmp_path, 30)
            assert add.returncode == 0, add.stderr
            (tmp_path / "dropped.yaml").write_text(yaml.safe_dump(_config(scans)))
            (tmp_path / "dropped.yaml").rename(folder / "inbox" / "dropped.yaml")
            _wait_for(lambda: (folder / "inbox" / "added" / "dropped.yaml").is_file(), 30, proc)
            for job_id in (waiting.id, long.id):
                cancel = _run(["queue", "cancel", str(folder), str(job_id)], tmp_path, 30)
                assert cancel.returncode == 0, cancel.stderr
        _, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    assert proc.returncode == 0, stderr
    with QueueStore(folder) as store:
        jobs = {j.name: j for j in store.jobs()}
    assert jobs["long"].state == "cancelled" and 1 <= jobs["long"].iteration < 100000
    assert jobs["waiting"].state == "cancelled" and jobs["waiting"].started is None
    assert jobs["late"].state == "done" and jobs["late"].iteration == 4
    assert jobs["dropped"].state == "done" and jobs["dropped"].source == "yaml"
    listing = _run(["queue", "list", str(folder), "--json"], tmp_path, 30)
    data = json.loads(listing.stdout)
    assert [j["name"] for j in data["jobs"]] == ["late", "long", "waiting", "dropped"]
    group = data["groups"][0]
    assert group["jobs_done"] == 2 and group["jobs_cancelled"] == 1
    assert group["iterations"] == 8 + jobs["long"].iteration


def test_bad_input_is_one_line_and_loses_nothing(tmp_path: Path, scans: dict) -> None:
    folder = tmp_path / "queue"
    with QueueStore(folder, create=True) as store:
        store.add(_config(scans), name="keep")
    cases = [
        (3, ["--ranks-per-job", "2"], "does not divide the 3 rank(s)"),
        (2, ["--ranks-per-job", "3"], "larger than the 2 rank(s)"),
    ]
    for n, extra, text in cases:
        proc = _run(["queue", "run", str(folder), *extra], tmp_path, 60, n=n)
        lines = _errors(proc.stderr)
        assert proc.returncode == 2 and len(lines) == 1 and text in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
    held = lock_output(folder)  # another queue run holds the folder
    try:
        proc = _run(["queue", "run", str(folder)], tmp_path, 60, n=2)
    finally:
        held.release()
    lines = _errors(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1 and "in use by another" in lines[0], \
        proc.stderr
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "queue.sqlite").write_bytes(b"not a database " * 100)
    for path, text in ((not_a_folder, "is a file, not a folder"),
                       (corrupt, "not a usable queue database"),
                       (tmp_path / "absent", "does not exist")):
        proc = _run(["queue", "run", str(path)], tmp_path, 60, n=2)
        lines = _errors(proc.stderr)
        assert proc.returncode == 2 and len(lines) == 1 and text in lines[0], proc.stderr
    assert (corrupt / "queue.sqlite").read_bytes() == b"not a database " * 100
    assert not (tmp_path / "absent").exists()
    with QueueStore(folder) as store:
        jobs = store.jobs()
    assert [(j.name, j.state, j.attempts) for j in jobs] == [("keep", "queued", 0)]


def test_coordinator_on_its_own_rank(tmp_path: Path, scans: dict) -> None:
    folder = tmp_path / "queue"
    with QueueStore(folder, create=True) as store:
        for seed in range(3):
            store.add(_config(scans, seed=seed), name=f"s{seed}")
    proc = _run(["queue", "run", str(folder), "--coordinator", "rank"], tmp_path, 120, n=3)
    assert proc.returncode == 0, proc.stderr
    with QueueStore(folder) as store:
        jobs, groups = store.jobs(), store.groups()
    assert [j.state for j in jobs] == ["done"] * 3
    assert {g["grp"]: json.loads(g["ranks"]) for g in groups} == {0: [1], 1: [2]}


def test_email_per_job_and_summary(tmp_path: Path, scans: dict) -> None:
    aiosmtpd = pytest.importorskip("aiosmtpd.controller")

    class Collector:
        def __init__(self) -> None:
            self.messages: list[tuple[list[str], str]] = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook
            subject = [ln for ln in envelope.content.decode().splitlines()
                       if ln.startswith("Subject:")]
            self.messages.append((list(envelope.rcpt_tos), subject[0] if subject else ""))
            return "250 OK"

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    handler = Collector()
    ctl = aiosmtpd.Controller(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        notify = tmp_path / "notify.yaml"
        notify.write_text(yaml.safe_dump({"output": {"notify": {"email": {
            "to": ["beamline@example.org"], "smtp_host": "127.0.0.1", "smtp_port": port}}}}))
        folder = tmp_path / "queue"
        with QueueStore(folder, create=True) as store:
            store.add(_config(scans), name="good", email="user@example.org")
            store.add(_config(scans, path=tmp_path / "gone.cxi"), name="gone")
        proc = _run(["queue", "run", str(folder), "--notify", str(notify)], tmp_path, 120, n=1)
        assert proc.returncode == 0, proc.stderr
    finally:
        ctl.stop()
    got = sorted((to, "FAILED" in subj, "queue ended" in subj) for to, subj in handler.messages)
    assert got == [(["beamline@example.org"], False, True),  # the summary
                   (["beamline@example.org"], True, False),  # job "gone": the queue's settings
                   (["user@example.org"], False, False)], handler.messages  # job "good"
    assert "1 done, 1 failed" in (folder / "summary.txt").read_text()


def test_each_rank_binds_its_own_gpu_whatever_the_group(tmp_path: Path) -> None:
    """Node-local world rank mod the visible GPUs (the group's own ranks restart at 0)."""
    code = ("import os; from mpi4py import MPI; from ptychompi.app.queue.dispatch import "
            "bind_devices; w = MPI.COMM_WORLD; bind_devices(w); "
            "open(f'rank{w.Get_rank()}.txt', 'w').write(' '.join([str(w.Get_rank()), "
            "os.environ['CUDA_VISIBLE_DEVICES'], os.environ['PTYCHOMPI_WORKERS']]))")
    env = _env()
    env.pop("PTYCHOMPI_WORKERS")
    env["CUDA_VISIBLE_DEVICES"] = "3,5"
    proc = subprocess.run([str(MPIEXEC), "-n", "3", sys.executable, "-c", code], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = sorted((tmp_path / f"rank{r}.txt").read_text().split() for r in range(3))
    cores = len(os.sched_getaffinity(0))
    assert rows == [["0", "3", str(max(1, cores // 3))], ["1", "5", str(max(1, cores // 3))],
                    ["2", "3", str(max(1, cores // 3))]]


DRIVER = """
import sys
from mpi4py import MPI
import ptychompi.app.api as api

RANKS = {ranks}
original = api.Reconstruction.step

def step(self, n=1):
    if ("boom" in str(self.config.data.path) and self.iteration == 2
            and MPI.COMM_WORLD.Get_rank() in RANKS):
        raise RuntimeError("injected failure")
    return original(self, n)

api.Reconstruction.step = step
from ptychompi.app.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _boom_queue(tmp: Path, scans: dict) -> Path:
    boom = tmp / "boom.cxi"
    boom.symlink_to(scans["good"])
    folder = tmp / "queue"
    with QueueStore(folder, create=True) as store:
        store.add(_config(scans, path=boom), name="boom")
        store.add(_config(scans), name="good")
    return folder


def test_fault_inside_a_collective_ends_the_queue_and_a_restart_goes_on(
        tmp_path: Path, scans: dict) -> None:
    folder = _boom_queue(tmp_path, scans)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(ranks="{1}"))  # one member of the group of two fails
    cmd = [str(MPIEXEC), "-n", "2", sys.executable, str(driver), "queue", "run", str(folder),
           "--ranks-per-job", "2", "--max-attempts", "1", "--quiet"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=90,
                          env=_env())
    assert proc.returncode != 0
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("ptychompi: error")] == [
        "ptychompi: error on rank 1: RuntimeError: injected failure"], proc.stderr
    with QueueStore(folder) as store:
        assert [(j.name, j.state) for j in store.jobs()] == [("boom", "running"),
                                                             ("good", "queued")]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=90,
                          env=_env())
    assert proc.returncode == 0, proc.stderr
    with QueueStore(folder) as store:
        jobs = {j.name: j for j in store.jobs()}
    assert jobs["boom"].state == "failed" and "ended 1 times" in jobs["boom"].error
    assert jobs["good"].state == "done" and jobs["good"].attempts == 1


def test_exception_in_a_group_of_one_fails_only_its_job(tmp_path: Path, scans: dict) -> None:
    folder = _boom_queue(tmp_path, scans)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(ranks="{0, 1}"))
    proc = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, str(driver), "queue", "run",
                           str(folder), "--quiet"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=90, env=_env())
    assert proc.returncode == 0, proc.stderr
    with QueueStore(folder) as store:
        jobs = {j.name: j for j in store.jobs()}
    assert jobs["boom"].state == "failed" and jobs["boom"].iteration == 2
    assert jobs["boom"].error == "RuntimeError: injected failure"
    assert jobs["good"].state == "done"
