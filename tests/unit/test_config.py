"""Typed configuration: validation messages, defaults round trip, overrides."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ptychompi.app.runner import apply_overrides
from ptychompi.config import Config, config_from_dict, default_yaml, load_config
from ptychompi.errors import ConfigError


def test_defaults_round_trip_through_the_commented_yaml():
    text = default_yaml()
    assert "# " in text and "algorithm:" in text
    assert config_from_dict(yaml.safe_load(text)) == Config()


def test_cli_prints_defaults_that_load_back(tmp_path):
    exe = Path(sys.executable).parent / "ptychompi"
    out = subprocess.run([str(exe), "config", "--defaults"], capture_output=True, text=True,
                         check=True).stdout
    path = tmp_path / "d.yaml"
    path.write_text(out)
    expected = Config()
    expected.output.directory = str(tmp_path / "out")  # relative: to the file's folder
    assert load_config(path) == expected
    check = subprocess.run([str(exe), "config", "--check", str(path)], capture_output=True,
                           text=True)
    assert check.returncode == 0 and "valid" in check.stdout


def test_valid_file_with_relative_data_path(tmp_path):
    (tmp_path / "scan.cxi").write_text("")
    path = tmp_path / "scan.yaml"
    path.write_text("data: {path: scan.cxi}\nalgorithm: {name: lsqml, iterations: 7, "
                    "lsqml: {noise_model: poisson}}\nparallel: {share_frequency: 3}\n")
    cfg = load_config(path)
    assert cfg.data.path == str(tmp_path / "scan.cxi")
    assert (cfg.algorithm.name, cfg.algorithm.iterations) == ("lsqml", 7)
    assert cfg.algorithm.lsqml.noise_model == "poisson" and cfg.parallel.share_frequency == 3


@pytest.mark.parametrize("values,needle", [
    ({"algorithm": {"iteratons": 3}}, "did you mean 'iterations'"),
    ({"algorythm": {}}, "did you mean 'algorithm'"),
    ({"geometry": {"energy_kev": "high"}}, "geometry.energy_kev = 'high': expected a number"),
    ({"algorithm": {"iterations": 2.5}}, "algorithm.iterations = 2.5: expected an integer"),
    ({"algorithm": {"name": "epei"}}, "did you mean 'epie'"),
    ({"algorithm": {"probe_modes": 0}}, "probe_modes = 0 is below its minimum 1"),
    ({"algorithm": {"iterations": -1}}, "below its minimum"),
    ({"parallel": {"grid": [2]}}, "parallel.grid"),
    ({"output": {"formats": ["hdf5", "jpg"]}}, "'jpg' is not one of"),
    ({"data": {"scan_dims": [3, 3, 3]}}, "data.scan_dims"),
    ({"preprocess": {"rotate90": 4}}, "above its maximum 3"),
    ({"output": {"notify": {"email": {"smtp_port": "x"}}}}, "smtp_port"),
])
def test_invalid_values_name_the_key_and_the_fix(values, needle):
    with pytest.raises(ConfigError) as info:
        config_from_dict(values)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_scientific_notation_strings_are_numbers():
    cfg = config_from_dict({"geometry": {"distance_m": "1e-3"}})
    assert cfg.geometry.distance_m == pytest.approx(1e-3)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("algorithm: {name: dm\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_overrides_are_validated():
    cfg = apply_overrides(Config(), ["algorithm.iterations=50", "parallel.device=cpu"])
    assert cfg.algorithm.iterations == 50 and cfg.parallel.device == "cpu"
    with pytest.raises(ConfigError, match="did you mean"):
        apply_overrides(Config(), ["algorithm.iteratons=5"])
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides(Config(), ["iterations"])


def test_relative_paths_follow_the_config_file_not_the_working_folder(tmp_path, monkeypatch):
    """Issue 21: one rule for every path key (data.path and output.directory used to differ)."""
    folder = tmp_path / "configs"
    folder.mkdir()
    path = folder / "scan.yaml"
    path.write_text("data: {path: scan.cxi, position_file: pos.csv}\n"
                    "algorithm: {probe_guess: ../p.npy}\noutput: {directory: out}\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Path("configs/scan.yaml"))
    assert cfg.data.path == str(folder / "scan.cxi")
    assert cfg.data.position_file == str(folder / "pos.csv")
    assert cfg.algorithm.probe_guess == str(folder / ".." / "p.npy")
    assert cfg.output.directory == str(folder / "out")
    assert load_config({"output": {"directory": "out"}}).output.directory == "out"


def test_halo_mode_resolved_per_run():
    """``parallel.halo``: ``auto`` is the full halo for one process (and, in the MPI suite,
    for ranks on one node: tests/mpi/test_sparse_halo.py); a mode named is kept."""
    from ptychompi.engines.base import Schedule  # noqa: PLC0415

    for mode, want in (("auto", "full"), ("full", "full"), ("touched", "touched"),
                       ("compact", "compact")):
        cfg = config_from_dict({"data": {"path": "x.cxi"}, "parallel": {"halo": mode}})
        assert Schedule.from_config(cfg.parallel, None).halo == want
    with pytest.raises(ConfigError, match="halo"):
        config_from_dict({"data": {"path": "x.cxi"}, "parallel": {"halo": "zip"}})
