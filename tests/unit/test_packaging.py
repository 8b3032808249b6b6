"""The wheel ships every subpackage: pyproject's explicit package list against the tree (a
subpackage missing from the list imports in an editable install and is absent from a wheel)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_in_the_wheel() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts)
               for p in (ROOT / "ptychompi").rglob("__init__.py")
               if "__pycache__" not in p.parts}
    assert on_disk - listed == set()
    assert {"ptychompi._kernels", "ptychompi.jobscripts"} <= listed
