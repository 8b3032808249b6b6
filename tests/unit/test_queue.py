"""The queue without MPI: the store (order, transitions, recovery, concurrent writers), jobs
from YAML / ptychopy strings / MDA files, the inbox, and the command line's add and list."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ptychompi.app.cli import main
from ptychompi.app.queue.inbox import scan_inbox
from ptychompi.app.queue.jobs import fill_pattern, job_from_ptychopy, job_from_yaml
from ptychompi.app.queue.store import QueueError, QueueStore, journal_mode, sanitise_name
from ptychompi.sim.simulate import simulate_to_files

MDA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "mda"
MDA_FILES = sorted(MDA_DIR.glob("*.mda"))


def _cfg(path: str = "/data/scan.cxi", iterations: int = 5) -> dict:
    return {"data": {"path": path}, "algorithm": {"iterations": iterations}}


def test_dispatch_order_is_priority_then_fifo(tmp_path: Path) -> None:
    with QueueStore(tmp_path / "q", create=True) as s:
        ids = [s.add(_cfg(), name=f"j{i}").id for i in range(4)]
        s.set_priority(ids[2], 5)
        assert [j.id for j in s.jobs()] == [ids[2], ids[0], ids[1], ids[3]]
        claimed = [s.claim_next(0, 1).id for _ in range(4)]
        assert claimed == [ids[2], ids[0], ids[1], ids[3]]
        assert s.claim_next(0, 1) is None
        assert all(j.state == "running" and j.attempts == 1 for j in s.jobs())


def test_add_names_outputs_and_validates(tmp_path: Path) -> None:
    with QueueStore(tmp_path / "q", create=True) as s:
        job = s.add(_cfg(iterations=7), name="scan 12/../x")
        assert job.name == sanitise_name("scan 12/../x") == "scan_12_.._x"
        assert job.output_dir == str(tmp_path / "q" / "jobs" / f"{job.id}-{job.name}")
        assert job.config["output"]["directory"] == job.output_dir
        assert job.iterations == 7 and job.state == "queued"
        own = s.add({**_cfg(), "output": {"directory": "/results/mine"}})
        assert own.output_dir == "/results/mine"
        with pytest.raises(QueueError, match=f"already job {own.id}'s"):
            s.add({**_cfg(), "output": {"directory": "/results/mine"}})
        with pytest.raises(QueueError, match="priority"):
            s.add(_cfg(), priority="high")  # type: ignore[arg-type]
        with pytest.raises(Exception, match="did you mean 'iterations'"):
            s.add({"algorithm": {"iteration": 5}})
        assert len(s.jobs()) == 2
        json.dumps([j.to_dict() for j in s.jobs()])  # JSON-safe


def test_cancel_retry_and_recover(tmp_path: Path) -> None:
    with QueueStore(tmp_path / "q", create=True) as s:
        a, b, c, d = (s.add(_cfg(), name=n) for n in "abcd")
        assert s.cancel(a.id).state == "cancelled"
        with pytest.raises(QueueError, match="only queued or running"):
            s.cancel(a.id)
        assert s.retry(a.id).state == "queued"
        with pytest.raises(QueueError, match="only failed or cancelled"):
            s.retry(a.id)
        running = [s.claim_next(0, 1) for _ in range(3)]  # a, b, c
        assert [j.id for j in running] == [a.id, b.id, c.id]
        assert s.cancel(b.id).cancel_requested and s.get(b.id).state == "running"
        assert s.cancel_requests() == [b.id]
        s.finish(c.id, "done", iteration=5, wall_s=1.5, final_error=0.1, bytes_exchanged=10)
        requeued, failed = s.recover(max_attempts=3)  # the queue was killed
        assert requeued == [a.id] and failed == []
        assert s.get(a.id).state == "queued" and s.get(b.id).state == "cancelled"
        assert s.get(c.id).state == "done" and s.get(d.id).state == "queued"
        for _ in range(2):  # killed twice more while a ran
            assert s.claim_next(0, 1).id == a.id
            s.recover(max_attempts=3)
        assert s.get(a.id).state == "failed" and "ended 3 times" in s.get(a.id).error
        with pytest.raises(QueueError, match="no job 99"):
            s.get(99)


def _adder(folder: str, n: int, tag: str) -> None:
    with QueueStore(folder) as s:
        for i in range(n):
            s.add(_cfg(), name=f"{tag}{i}")


def _claimer(folder: str, n: int) -> None:
    with QueueStore(folder) as s:
        got = 0
        end = time.monotonic() + 60
        while got < n and time.monotonic() < end:
            got += s.claim_next(1, 1) is not None


def test_concurrent_adds_and_claims_from_other_processes(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    QueueStore(folder, create=True).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_adder, args=(str(folder), 30, t)) for t in "xyz"]
    procs.append(ctx.Process(target=_claimer, args=(str(folder), 40)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with QueueStore(folder) as s:
        jobs = s.jobs()
    assert len(jobs) == 90 and len({j.id for j in jobs}) == 90
    assert {j.name for j in jobs} == {f"{t}{i}" for t in "xyz" for i in range(30)}
    assert sum(j.state == "running" for j in jobs) == 40  # each claimed once
    assert all(j.attempts == (j.state == "running") for j in jobs)


def test_unusable_folders_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(QueueError, match="does not exist"):
        QueueStore(tmp_path / "none")
    (tmp_path / "file").write_text("x")
    with pytest.raises(QueueError, match="is a file"):
        QueueStore(tmp_path / "file")
    (tmp_path / "plain").mkdir()
    with pytest.raises(QueueError, match="is not a queue"):
        QueueStore(tmp_path / "plain")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "queue.sqlite").write_bytes(b"\x00garbage" * 200)
    with pytest.raises(QueueError, match="not a usable queue database"):
        QueueStore(tmp_path / "bad")


def test_jobs_from_yaml_and_ptychopy(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "scan7.yaml"
    path.write_text(yaml.safe_dump({"data": {"path": "scan7.cxi"},
                                    "output": {"directory": "out7"}}))
    config, name, source = job_from_yaml(path)
    assert (name, source) == ("scan7", "yaml")
    assert config["data"]["path"] == str(tmp_path / "sub" / "scan7.cxi")
    assert config["output"]["directory"] == str(tmp_path / "sub" / "out7")
    config, name, source = job_from_ptychopy("./ptycho -jobID=s12 -fp=a_#06d.h5 -size=64 -i=9")
    assert (name, source) == ("s12", "ptychopy") and config == {
        "ptychopy": "./ptycho -jobID=s12 -fp=a_#06d.h5 -size=64 -i=9"}
    with QueueStore(tmp_path / "q", create=True) as s:
        assert s.add(config, name=name, source=source).iterations == 9


def test_fill_pattern() -> None:
    mda = Path("/beam/mda/2idd_0235.mda")
    assert fill_pattern("/d/scan{scan}/scan{scan:04d}_#06d.h5 {stem} {mda_dir}", 235, mda) == \
        "/d/scan235/scan0235_#06d.h5 2idd_0235 /beam/mda"


def _inspect_values(text: str) -> dict:
    """What ``ptychompi inspect`` prints about an MDA file: dims, energy, positioner ranges."""
    acquired = re.search(r"acquired ([\d x]+?)\s+\(", text).group(1)
    energy = re.search(r"energy\s+([\d.eE+-]+) keV", text)
    axes = re.findall(r"P1 \S+(?: \"[^\"]*\")? \[([^\]]*)\] \S+\s+(\S+) \.\. (\S+)", text)
    return {"dims": [int(v) for v in acquired.split(" x ")],
            "scan": int(re.search(r"scan number (\d+)", text).group(1)),
            "energy": float(energy.group(1)) if energy else None, "axes": axes}


@pytest.mark.skipif(len(MDA_FILES) != 5, reason="the five real MDA files are not here")
def test_mda_list_becomes_jobs_matching_inspect(tmp_path: Path, capsys) -> None:
    template = tmp_path / "beamline.yaml"
    template.write_text(yaml.safe_dump({
        "data": {"path": "/data/ptycho/scan{scan}/scan{scan:03d}_data_%06d.h5"},
        "algorithm": {"name": "lsqml", "iterations": 20}}))
    folder = tmp_path / "q"
    assert main(["queue", "add", "--template", str(template), str(folder),
                 *map(str, MDA_FILES)]) == 0
    capsys.readouterr()
    with QueueStore(folder) as s:
        jobs = {j.name: j for j in s.jobs()}
    assert sorted(jobs) == sorted(p.stem for p in MDA_FILES)
    units = {"mm": 1e-3, "um": 1e-6, "nm": 1e-9, "m": 1.0}
    for path in MDA_FILES:
        assert main(["inspect", str(path)]) == 0
        seen = _inspect_values(capsys.readouterr().out)
        job = jobs[path.stem]
        data, geometry = job.config["data"], job.config["geometry"]
        assert job.source == "mda" and data["positions"] == "mda"
        assert data["mda_file"] == str(path) and job.config["algorithm"]["iterations"] == 20
        scan = seen["scan"]
        assert data["path"] == f"/data/ptycho/scan{scan}/scan{scan:03d}_data_%06d.h5"
        dims = seen["dims"] if len(seen["dims"]) == 2 else [1, *seen["dims"]]
        assert data["scan_dims"] == dims, path.name
        assert data["frames_per_file"] == dims[1]
        if seen["energy"] is None:
            assert geometry["energy_kev"] is None
        else:
            assert geometry["energy_kev"] == pytest.approx(seen["energy"], rel=1e-4)
        length_units = [u for u, _, _ in seen["axes"] if u in units]
        if not length_units:  # no positioner in metres: no step to fill
            assert data["step_m"] is None, path.name
            continue
        unit = units[length_units[0]]
        # inner axis (last P1 line): its range over its points, in the axis' or the other unit
        inner_unit, lo, hi = seen["axes"][-1]
        k = units.get(inner_unit, unit)
        assert data["step_m"][1] == pytest.approx((float(hi) - float(lo)) * k / (dims[1] - 1),
                                                  rel=1e-3), path.name
        if len(seen["axes"]) == 2:
            outer_unit, lo, hi = seen["axes"][0]
            k = units.get(outer_unit, unit)
            assert data["step_m"][0] == pytest.approx(
                (float(hi) - float(lo)) * k / (dims[0] - 1), rel=1e-3), path.name


def test_add_is_all_or_nothing_and_one_line(tmp_path: Path, capsys) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(_cfg()))
    corrupt = tmp_path / "corrupt.yaml"
    corrupt.write_text("data: {path: [unclosed\n")
    folder = tmp_path / "q"
    assert main(["queue", "add", str(folder), str(good)]) == 0
    for args, text in (([str(good), str(corrupt)], "not valid YAML at line"),
                       ([str(good), str(MDA_FILES[0]) if MDA_FILES else "x.mda"],
                        "needs --template"),
                       ([str(good), str(tmp_path / "gone.yaml")], "not found"),
                       (["--ptychopy", "./ptycho -nosuchkey=1"], "unknown ptychopy parameter")):
        capsys.readouterr()
        assert main(["queue", "add", str(folder), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("ptychompi: error:") and text in err[0], err
    with QueueStore(folder) as s:
        assert [j.name for j in s.jobs()] == ["good"]


def test_inbox_turns_files_into_jobs(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.yaml").write_text(yaml.safe_dump(_cfg()))
    (inbox / "b.cmd").write_text("./ptycho -jobID=b7 -fp=x_#06d.h5 -size=64 -i=3\n")
    (inbox / "broken.yml").write_text("algorithm: {itertions: 5}\n")
    (inbox / "notes.md").write_text("ignored")
    (inbox / ".partial.yaml").write_text("being written")
    if MDA_FILES:
        (inbox / "s.mda").write_bytes(MDA_FILES[-1].read_bytes())
    with QueueStore(tmp_path / "q", create=True) as s:
        assert scan_inbox(inbox, s, None, now=0.0) == []  # nothing has settled yet
        lines = scan_inbox(inbox, s, {"algorithm": {"iterations": 2}},
                           now=time.time() + 10)
        jobs = {j.name: j for j in s.jobs()}
    assert set(jobs) == {"a", "b7"} | ({"s"} if MDA_FILES else set())
    assert jobs["b7"].source == "ptychopy"
    assert sorted(p.name for p in (inbox / "added").iterdir()) == sorted(
        ["a.yaml", "b.cmd"] + (["s.mda"] if MDA_FILES else []))
    assert (inbox / "rejected" / "broken.yml").is_file()
    reason = (inbox / "rejected" / "broken.yml.error").read_text()
    assert "itertions" in reason and any("broken.yml rejected" in ln for ln in lines)
    assert (inbox / "notes.md").is_file() and (inbox / ".partial.yaml").is_file()


def test_list_table_and_json(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "q"
    with QueueStore(folder, create=True) as s:
        a = s.add(_cfg(iterations=40), name="a")
        b = s.add(_cfg(iterations=10), name="b")
        s.claim_next(0, 2)
        s.progress(a.id, 10, 0.5)
        s.record_group(0, [0, 1], ["cpu", "cpu"])
    live = Path(a.output_dir) / "live"
    live.mkdir(parents=True)
    (live / "status.json").write_text(json.dumps({"iteration": 30, "iterations": 40}))
    assert main(["queue", "list", str(folder)]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^\s+{a.id} a\s+running\s+0\s+0 30/40\s+75%", out, re.M), out
    assert re.search(rf"^\s+{b.id} b\s+queued\s+0\s+- 0/10\s+0%", out, re.M), out
    assert re.search(r"^\s+0 0,1\s+cpu,cpu", out, re.M), out
    assert main(["queue", "list", str(folder), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [j["name"] for j in data["jobs"]] == ["a", "b"]
    assert data["groups"] == [{**data["groups"][0], "grp": 0, "ranks": [0, 1],
                               "devices": ["cpu", "cpu"]}]
    assert main(["queue", "cancel", str(folder), str(a.id), str(b.id)]) == 0
    assert main(["queue", "retry", str(folder), str(b.id)]) == 0
    assert main(["queue", "priority", str(folder), str(b.id), "4"]) == 0
    with QueueStore(folder) as s:
        assert s.get(a.id).cancel_requested and s.get(b.id).state == "queued"
        assert s.get(b.id).priority == 4
    assert os.path.isdir(folder / "jobs")


def test_submit_renders_one_allocation_that_runs_the_queue(tmp_path: Path, capsys,
                                                          monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "q"
    simulate_to_files(tmp_path / "scan.cxi", frame=64, grid=6, step_px=8,
                      probe_diameter_px=20)
    with QueueStore(folder, create=True) as s:
        for seed in (0, 1):
            s.add({"data": {"path": str(tmp_path / "scan.cxi")},
                   "algorithm": {"name": "epie", "iterations": 2, "seed": seed},
                   "parallel": {"device": "cpu", "workers": 1}}, name=f"s{seed}")
    args = ["submit", "--queue", str(folder), "--ranks-per-job", "1", "--scheduler", "slurm",
            "--nodes", "1", "--gpus-per-node", "2", "--partition", "gpu",
            "--checkpoint-every", "5", "--dry-run"]
    assert main(args) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --partition=gpu" in script and "#SBATCH --ntasks-per-node=2" in script
    assert re.search(rf"srun --nodes=1 --ntasks=2 --ntasks-per-node=2 \\\n\s+ptychompi queue "
                     rf"run {folder} --ranks-per-job 1 --checkpoint-every 5  #", script), script
    path = folder / "job.slurm.sh"
    assert path.read_text() == script
    for k, gpus, text in (("3", "4", "does not divide the 4 rank(s)"),
                          ("4", "2", "larger than the 2 rank(s)")):
        assert main(["submit", "--queue", str(folder), "--ranks-per-job", k, "--scheduler",
                     "pbs", "--gpus-per-node", gpus, "--dry-run"]) == 2
        assert text in capsys.readouterr().err
    assert main(["submit", "--ranks-per-job", "1", "--scheduler", "pbs", "--dry-run"]) == 2
    assert "give its folder with --queue DIR" in capsys.readouterr().err
    assert main(["submit", "x.yaml", "--queue", str(folder), "--ranks-per-job", "1",
                 "--scheduler", "pbs", "--dry-run"]) == 2
    assert "not both" in capsys.readouterr().err
    # run it: a fake srun starts the ranks with mpiexec
    mpiexec = Path(sys.executable).parent / "mpiexec"
    if not mpiexec.exists() or shutil.which("bash") is None:
        return
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/bash\nn=1\nwhile [[ $1 == --* ]]; do\n"
                               "  case $1 in --ntasks=*) n=${1#--ntasks=};; esac; shift\n"
                               f"done\nexec {mpiexec} -n $n \"$@\"\n")
    (fake / "srun").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "HYDRA_"))}
    env["PATH"] = f"{fake}:{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["PTYCHOMPI_WORKERS"] = "1"
    proc = subprocess.run(["bash", str(path)], capture_output=True, text=True, timeout=120,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with QueueStore(folder) as s:
        assert [(j.name, j.state) for j in s.jobs()] == [("s0", "done"), ("s1", "done")]
        assert {j.group for j in s.jobs()} <= {0, 1}


def test_journal_mode_follows_the_file_system(tmp_path: Path) -> None:
    info = ("22 1 0:1 / / rw - ext4 /dev/vda rw\n"
            "40 22 0:40 / /gpfs/home rw,relatime - gpfs home rw\n"
            "41 22 0:41 / /scratch rw - lustre 10.0.0.1@o2ib:/scratch rw,flock\n"
            "42 41 0:42 / /scratch/local rw - xfs /dev/nvme0 rw\n")
    assert journal_mode("/home/user/q", info) == "WAL"
    assert journal_mode("/gpfs/home/user/q", info) == "DELETE"
    assert journal_mode("/scratch/q", info) == "DELETE"
    assert journal_mode("/scratch/local/q", info) == "WAL"  # the deepest mount point wins
    assert journal_mode("/scratchy/q", info) == "WAL"
    with QueueStore(tmp_path / "q", create=True) as s:  # this machine: whatever it is, in use
        mode = s._db.execute("PRAGMA journal_mode").fetchone()[0].upper()
    assert mode == journal_mode(tmp_path / "q")
