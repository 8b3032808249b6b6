"""The README's main job, exactly as written there (after its install step), in a copy of the
repository's layout: it must run on 2 MPI ranks and leave a result that reconstructs."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def main_job_commands() -> list[list[str]]:
    """The commands of the README's first bash block after ``pip install``."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)\n```", text, re.S).group(1)
    steps = [s.strip() for s in block.split("&&")]
    after_install = steps[[i for i, s in enumerate(steps) if "pip install" in s][-1] + 1:]
    return [shlex.split(s) for s in after_install]


def test_readme_main_job_runs_on_two_ranks(tmp_path):
    commands = main_job_commands()
    assert [c[0] for c in commands] == ["ptychompi", "mpiexec"], commands
    (tmp_path / "tests" / "data").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "data" / "demo.yaml", tmp_path / "tests" / "data")
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    for cmd in commands:
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, (cmd, done.stdout[-2000:], done.stderr[-2000:])
    with h5py.File(tmp_path / "demo" / "out" / "result.h5", "r") as f:
        error = np.asarray(f["error"])
    assert np.all(np.isfinite(error)) and error[-1] < 0.2 * error[0], error
