"""The package works without hdf5plugin (an offline GPU machine may lack it): it imports, reads
gzip and plain files, and names the missing filter in one line for LZ4 data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ptychompi.io.cxi import read_cxi, write_cxi

BLOCK = "import sys; sys.modules['hdf5plugin'] = None  # as if it were not installed\n"


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code, *args], capture_output=True,
                          text=True, timeout=120, check=False)


def _scan(path: Path, compression: str | None) -> Path:
    frames = np.arange(4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8)
    pos = np.array([[0, 0], [0, 1e-6], [1e-6, 0], [1e-6, 1e-6]])
    write_cxi(path, frames, pos, distance_m=1.0, pixel_size_m=75e-6, energy_j=1.4e-15,
              compression=compression)
    return path


def test_imports_and_reads_gzip_without_hdf5plugin(tmp_path: Path) -> None:
    gz = _scan(tmp_path / "gz.cxi", "gzip")
    proc = _run("import ptychompi, ptychompi.app.cli, ptychompi.io.cxi, ptychompi.io.aps\n"
                "from ptychompi.io.cxi import read_cxi\n"
                f"s = read_cxi({str(gz)!r}); print(s.compression, s.read([3]).sum())\n"
                "assert 'hdf5plugin' not in sys.modules or sys.modules['hdf5plugin'] is None")
    assert proc.returncode == 0, proc.stderr
    expected = np.arange(3 * 64, 4 * 64).sum()
    assert proc.stdout.split() == ["gzip", f"{float(expected)}"]


def test_lz4_without_hdf5plugin_is_one_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("hdf5plugin")  # to write the LZ4 file here
    lz4 = _scan(tmp_path / "lz4.cxi", "lz4")
    assert read_cxi(lz4).compression == "lz4"
    code = ("from ptychompi.errors import DataError\n"
            "from ptychompi.io.cxi import read_cxi, write_cxi\n"
            "import numpy as np\n"
            "for f in (lambda: read_cxi(sys.argv[1]), lambda: write_cxi(sys.argv[2], "
            "np.zeros((1, 8, 8)), np.zeros((1, 2)), distance_m=1.0, pixel_size_m=1e-4, "
            "energy_j=1e-15, compression='lz4')):\n"
            "    try:\n"
            "        f()\n"
            "    except DataError as e:\n"
            "        print(e)\n")
    proc = _run(code, str(lz4), str(tmp_path / "new.cxi"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, proc.stdout
    assert "compressed with lz4" in lines[0] and "pip install hdf5plugin" in lines[0]
    assert "LZ4 compression needs hdf5plugin" in lines[1]
    assert not (tmp_path / "new.cxi").exists()
