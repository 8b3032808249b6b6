"""Job scripts: rendering, shell syntax, directives, and submission through fake sbatch/qsub."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ptychompi.app import submit
from ptychompi.app.submit import render_job, submit_cli, template_text
from ptychompi.errors import ConfigError, PtychompiError


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "scan 1.yaml"
    p.write_text("algorithm:\n  name: dm\noutput:\n  directory: results/run1\n")
    return p


def _args(config, scheduler, **kw) -> argparse.Namespace:
    base = {"config": str(config), "scheduler": scheduler, "nodes": 2, "gpus_per_node": 4,
            "time": "01:30:00", "account": None, "queue": None, "setup": None,
            "dry_run": False}
    base.update(kw)
    return argparse.Namespace(**base)


def _bash_n(text: str, tmp_path: Path) -> None:
    script = tmp_path / "check.sh"
    script.write_text(text)
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_templates_found_and_complete():
    for sched in ("slurm", "pbs"):
        text = template_text(sched)
        assert "${config}" in text and "set -euo pipefail" in text
    src = Path(submit.__file__).resolve().parents[2] / "jobscripts"  # ptychompi/app/
    assert (src / "slurm.sh.in").is_file() and (src / "pbs.sh.in").is_file()


def test_render_slurm(config, tmp_path):
    text = render_job(config, "slurm", 3, 4, "12:00:00", account="m1234", queue="gpu",
                      setup="module load cudatoolkit\nsource /opt/env/bin/activate")
    _bash_n(text, tmp_path)
    assert text.startswith("#!/bin/bash\n")
    directives = [ln for ln in text.splitlines() if ln.startswith("#SBATCH")]
    assert "#SBATCH --nodes=3" in directives
    assert "#SBATCH --ntasks-per-node=4" in directives
    assert "#SBATCH --gpus-per-node=4" in directives
    assert "#SBATCH --time=12:00:00" in directives
    assert "#SBATCH --account=m1234" in directives
    assert "#SBATCH --partition=gpu" in directives
    out = tmp_path / "results" / "run1"
    assert f"#SBATCH --output={out}/job.slurm.%j.out" in directives
    assert f"#SBATCH --error={out}/job.slurm.%j.err" in directives
    # every directive comes before the first command
    lines = text.splitlines()
    first_cmd = next(i for i, ln in enumerate(lines) if ln and not ln.startswith("#"))
    assert max(i for i, ln in enumerate(lines) if ln.startswith("#SBATCH")) < first_cmd
    assert re.search(r"srun --nodes=3 --ntasks=12 --ntasks-per-node=4", text)
    assert f"ptychompi run '{config}'" in text  # quoted: the name has a space
    assert "module load cudatoolkit\nsource /opt/env/bin/activate\n" in text
    assert f"cd {tmp_path}" in text
    assert "${" not in text


def test_render_pbs(config, tmp_path):
    text = render_job(config, "pbs", 2, 4, "00:45:00", account="proj", queue="debug")
    _bash_n(text, tmp_path)
    directives = [ln for ln in text.splitlines() if ln.startswith("#PBS")]
    assert "#PBS -l select=2:ncpus=4:ngpus=4:mpiprocs=4" in directives
    assert "#PBS -l walltime=00:45:00" in directives
    assert "#PBS -A proj" in directives and "#PBS -q debug" in directives
    assert "#PBS -l place=scatter" in directives
    name = next(ln for ln in directives if ln.startswith("#PBS -N")).split()[-1]
    assert len(name) <= 15 and name[0].isalpha()
    assert f"#PBS -o {tmp_path}/results/run1/job.pbs.out" in directives
    assert re.search(r"mpiexec -n 8 --ppn 4 \\\n\s+ptychompi run ", text)


def test_optional_directives_left_out(config):
    slurm = render_job(config, "slurm", 1, 1, "00:10:00")
    assert "--account" not in slurm and "--partition" not in slurm
    pbs = render_job(config, "pbs", 1, 1, "00:10:00")
    assert "#PBS -A" not in pbs and "#PBS -q" not in pbs


@pytest.mark.parametrize("kw", [
    {"time": "1:00"}, {"time": "01:60:00"}, {"time": "00:00:00"}, {"time": "aa:bb:cc"},
    {"nodes": 0}, {"gpus_per_node": -1}, {"nodes": 1.5}, {"account": "a b"},
    {"queue": "q\n#SBATCH --x"}, {"scheduler": "lsf"}])
def test_render_rejects(config, kw):
    args = {"scheduler": "slurm", "nodes": 1, "gpus_per_node": 4, "time": "01:00:00"}
    args.update(kw)
    with pytest.raises(PtychompiError) as exc:
        render_job(config, **args)
    assert "\n" not in str(exc.value)


def test_missing_config_is_the_loaders_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        render_job(tmp_path / "nope.yaml", "slurm", 1, 1, "01:00:00")


def _fake_tool(tmp_path: Path, name: str, output: str, rc: int = 0) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    log = tmp_path / f"{name}.args"
    tool = bindir / name
    tool.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{log}"\necho "{output}"\nexit {rc}\n')
    tool.chmod(0o755)
    return log


@pytest.mark.parametrize(("sched", "tool", "reply", "printed"), [
    ("slurm", "sbatch", "Submitted batch job 123", "Submitted batch job 123"),
    ("pbs", "qsub", "4567.pbs01", "Submitted PBS job 4567.pbs01")])
def test_submit_calls_the_scheduler(config, tmp_path, monkeypatch, capsys, sched, tool, reply,
                                    printed):
    log = _fake_tool(tmp_path, tool, reply)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert submit_cli(_args(config, sched)) == 0
    script = tmp_path / "results" / "run1" / f"job.{sched}.sh"
    assert script.is_file() and os.access(script, os.X_OK)
    assert log.read_text().splitlines() == [str(script)]
    out = capsys.readouterr().out
    assert printed in out and str(script) in out
    _bash_n(script.read_text(), tmp_path)


def test_dry_run_prints_and_submits_nothing(config, tmp_path, monkeypatch, capsys):
    log = _fake_tool(tmp_path, "sbatch", "Submitted batch job 1")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert submit_cli(_args(config, "slurm", dry_run=True)) == 0
    out = capsys.readouterr().out
    script = tmp_path / "results" / "run1" / "job.slurm.sh"
    assert out == script.read_text()
    assert not log.exists()


def test_no_scheduler_on_path(config, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("qsub") is None
    with pytest.raises(PtychompiError, match="qsub not found on PATH.*--dry-run") as exc:
        submit_cli(_args(config, "pbs"))
    assert "\n" not in str(exc.value)
    assert (tmp_path / "results" / "run1" / "job.pbs.sh").is_file()


def test_scheduler_refuses(config, tmp_path, monkeypatch):
    _fake_tool(tmp_path, "sbatch", "sbatch: error: invalid account", rc=1)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(PtychompiError, match=r"exit 1.*invalid account"):
        submit_cli(_args(config, "slurm"))


# ----------------------------------------------------------------- issue 21, item 6
@pytest.mark.parametrize("sched", ["slurm", "pbs"])
def test_newline_in_config_name_is_refused(tmp_path, monkeypatch, sched):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "x\ntouch INJ\n.yaml"
    evil.write_text("output:\n  directory: out\n")
    with pytest.raises(PtychompiError, match="control character") as exc:
        render_job(evil, sched, 1, 1, "00:10:00")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("sched", ["slurm", "pbs"])
@pytest.mark.parametrize("name", ["$(touch INJ).yaml", "a'b;touch INJ;'.yaml", "`touch INJ`.yaml",
                                  "x\"; touch INJ; \".yaml"])
def test_shell_characters_in_config_name_stay_text(tmp_path, monkeypatch, sched, name):
    """The rendered script runs (fake launcher and ptychompi): no command from the name runs
    and ptychompi gets the exact path."""
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / name
    cfg.write_text("output:\n  directory: out\n")
    text = render_job(cfg, sched, 1, 1, "00:10:00", setup="true")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    got = tmp_path / "argv.txt"
    for tool in ("srun", "mpiexec"):  # drop the launcher's own options, run the rest
        (bindir / tool).write_text('#!/bin/bash\nwhile [[ "$1" == -* ]]; do shift; '
                                   '[[ "$1" =~ ^[0-9]+$ ]] && shift; done\nexec "$@"\n')
    (bindir / "ptychompi").write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > "{got}"\n')
    for tool in bindir.iterdir():
        tool.chmod(0o755)
    script = tmp_path / "job.sh"
    script.write_text(text)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "INJ").exists()
    assert got.read_text().splitlines() == ["run", str(cfg)]
