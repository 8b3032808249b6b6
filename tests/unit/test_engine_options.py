"""Options per engine (algorithm.epie / .dm / .lsqml): the deprecated flat keys, each former
module constant taking effect, the registry, the GUI schema, provenance and the one
deprecation line of a two-rank run."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from test_engines import as_scan, assert_resume_is_bit_identical, config

from ptychompi import Reconstruction
from ptychompi.app.follow.arrivals import Decision
from ptychompi.app.follow.recon import FollowReconstruction
from ptychompi.app.gui.schema import fields
from ptychompi.app.provenance import provenance
from ptychompi.app.runner import apply_overrides
from ptychompi.config import AlgorithmConfig, config_from_dict
from ptychompi.config.engines import (
    ENGINE_OPTIONS,
    FLAT_KEYS,
    ConfigDeprecationWarning,
    config_deprecations,
)
from ptychompi.engines import ENGINES
from ptychompi.engines.epie import EPIE
from ptychompi.engines.lsqml import step_decay
from ptychompi.errors import ConfigError
from ptychompi.io.cxi import write_cxi
from ptychompi.sim.simulate import simulate

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def sim():
    return simulate(frame=64, grid=8, step_px=8, probe_diameter_px=20, photons=1e5, seed=3)


def run(sim, name: str, iterations: int, **algo) -> tuple[np.ndarray, np.ndarray]:
    with Reconstruction(config(name, iterations, sim, **algo), scan=as_scan(sim)) as r:
        r.run()
        return r.object, r.probe


@pytest.mark.parametrize("flat,value", [("alpha", 0.5), ("beta", 0.25), ("rpie_weight", 0.3),
                                        ("overlap_iterations", 2), ("fourier_relax", 0.0),
                                        ("dm_refine_from", None), ("dm_refine_patience", 3),
                                        ("noise_model", "poisson")])
def test_flat_key_loads_into_its_section_with_one_line(flat, value):
    with pytest.warns(ConfigDeprecationWarning) as caught:
        cfg = config_from_dict({"algorithm": {flat: value, "iterations": 3}})
    section, key = FLAT_KEYS[flat]
    assert getattr(getattr(cfg.algorithm, section), key) == value
    assert len(caught) == 1 and f"algorithm.{flat} -> algorithm.{section}.{key}" in str(
        caught[0].message)
    assert flat not in cfg.to_dict()["algorithm"]  # what a result records: the new keys
    with pytest.warns(ConfigDeprecationWarning):  # the same value twice is no conflict
        config_from_dict({"algorithm": {flat: value, section: {key: value}}})


def test_flat_and_section_keys_that_disagree_are_an_error():
    with pytest.raises(ConfigError, match="disagree"):
        config_from_dict({"algorithm": {"alpha": 0.5, "epie": {"alpha": 0.7}}})


def test_new_keys_load_without_warning_and_are_validated():
    with config_deprecations() as notes:
        cfg = config_from_dict({"algorithm": {"dm": {"regularisation": 0.01},
                                              "lsqml": {"batches": 4}}})
    assert notes == [] and cfg.algorithm.dm.regularisation == 0.01
    assert cfg.algorithm.lsqml.batches == 4
    with pytest.raises(ConfigError, match="algorithm.lsqml.trim"):
        config_from_dict({"algorithm": {"lsqml": {"trim": 0.6}}})
    with pytest.raises(ConfigError, match="algorithm.epie.alhpa.*alpha"):
        config_from_dict({"algorithm": {"epie": {"alhpa": 0.6}}})


def test_set_override_of_a_flat_key():
    cfg = config_from_dict({})
    with config_deprecations() as notes:
        out = apply_overrides(cfg, ["algorithm.dm_refine_from=7",
                                    "algorithm.dm.regularisation=0.5"])
    assert (out.algorithm.dm.refine_from, out.algorithm.dm.regularisation) == (7, 0.5)
    assert len(notes) == 1 and "algorithm.dm.refine_from" in notes[0]


def test_engine_names_come_from_the_registry():
    choices = dict((f.name, f) for f in dataclasses.fields(AlgorithmConfig))["name"].metadata
    assert tuple(choices["choices"]) == tuple(ENGINES) == tuple(ENGINE_OPTIONS)
    for name in ENGINES:  # each engine has its section
        assert isinstance(getattr(AlgorithmConfig(), name), ENGINE_OPTIONS[name])


def test_gui_schema_lists_the_engine_sections():
    keys = {f["key"]: f for f in fields()}
    for name, cls in ENGINE_OPTIONS.items():
        for f in dataclasses.fields(cls):
            item = keys[f"algorithm.{name}.{f.name}"]
            assert item["help"] and item["default"] == ("" if f.default is None
                                                       else str(f.default))
    assert keys["algorithm.lsqml.noise_model"]["choices"] == ["gaussian", "poisson"]
    assert not any(k in keys for k in (f"algorithm.{flat}" for flat in FLAT_KEYS))


# (engine, section values, extra algorithm keys, iterations): each former module constant
# changes the result when set away from its default (so the engine reads the option)
EFFECTS = [
    ("epie", {"alpha": 0.5}, {}, 3), ("epie", {"beta": 0.5}, {}, 3),
    ("epie", {"rpie_weight": 0.5}, {}, 3), ("epie", {"alpha_final": 1.0}, {}, 3),
    ("epie", {"beta_initial": 1.0}, {}, 3),
    ("dm", {"regularisation": 0.05}, {}, 3), ("dm", {"bound_fraction": 0.5}, {}, 3),
    ("dm", {"overlap_iterations": 2}, {}, 3), ("dm", {"fourier_relax": 0.0}, {}, 3),
    ("dm", {"refine_from": 2}, {}, 4),
    ("lsqml", {"batches": 4}, {}, 2), ("lsqml", {"delta": 0.5}, {}, 2),
    ("lsqml", {"damping": 0.5}, {}, 2), ("lsqml", {"step_scale": 0.5}, {}, 2),
    ("lsqml", {"step_final": 1.0}, {}, 3),
    ("lsqml", {"probe_relaxation": 1.0}, {}, 2), ("lsqml", {"trim": 0.3}, {}, 2),
    ("lsqml", {"noise_model": "poisson"}, {}, 2),
    ("lsqml", {"poisson_newton_steps": 1, "noise_model": "poisson"}, {}, 2),
]


@pytest.mark.parametrize("name,values,extra,iterations", EFFECTS)
def test_each_option_takes_effect(sim, name, values, extra, iterations):
    base = {k: v for k, v in values.items() if k == "noise_model"} if len(values) > 1 else {}
    obj0, probe0 = run(sim, name, iterations, **extra, **{name: base})
    obj1, probe1 = run(sim, name, iterations, **extra, **{name: values})
    assert not (np.array_equal(obj0, obj1) and np.array_equal(probe0, probe1)), values


def test_lsqml_step_decay_over_the_second_half_or_after_the_scan_is_complete():
    assert [step_decay(i, 100, 0.3) for i in (0, 25, 50)] == [1.0, 1.0, 1.0]
    assert 0.3 < step_decay(75, 100, 0.3) < step_decay(60, 100, 0.3) < 1.0
    assert step_decay(99, 100, 0.3) == pytest.approx(0.3)
    assert step_decay(150, 100, 0.3) == pytest.approx(0.3)  # continued past the plan
    assert step_decay(99, 100, 1.0) == 1.0
    # run --follow: no decay while rows arrive; from the end of the scan when that is later
    assert step_decay(99, 100, 0.3, None) == 1.0
    assert step_decay(80, 100, 0.3, 80) == 1.0 and step_decay(90, 100, 0.3, 80) < 1.0
    assert step_decay(99, 100, 0.3, 80) == pytest.approx(0.3)


def test_lsqml_resumed_inside_the_fall_equals_an_uninterrupted_run(tmp_path):
    noisy = simulate(frame=64, grid=6, step_px=8, probe_diameter_px=20, photons=1e3, seed=2)
    cfg = {**config("lsqml", 8, noisy), "output": {"directory": str(tmp_path)}}

    def falling(whole: Reconstruction) -> None:
        assert whole.engine.step_final < 0.5  # the fall is on from iteration 4

    assert_resume_is_bit_identical(cfg, noisy, tmp_path, 6, on_whole=falling)


def test_follow_tells_lsqml_when_the_scan_is_complete():
    follow = SimpleNamespace(decision=Decision(3, False),
                             arrivals=SimpleNamespace(schedule=[[0, 1], [5, 3]]))
    lsqml, dm = SimpleNamespace(complete_from=0), SimpleNamespace(_ml=SimpleNamespace(
        complete_from=0))
    epie = EPIE.__new__(EPIE)  # the class's own default, as a built engine has it
    for engine in (lsqml, dm, epie):
        FollowReconstruction._mark_complete(follow, engine)
    assert lsqml.complete_from is None and dm._ml.complete_from is None  # rows still arrive
    assert epie.complete_from is None
    follow.decision = Decision(8, True)
    follow.arrivals.schedule.append([12, 8])
    for engine in (lsqml, dm, epie):
        FollowReconstruction._mark_complete(follow, engine)
    assert lsqml.complete_from == 12 and dm._ml.complete_from == 12 and epie.complete_from == 12


def test_epie_step_falls_only_once_the_scan_is_complete():
    """Offline the step falls over the second half; following a scan, not while rows arrive
    (None), and from the iteration the scan ended at when that is later than half."""
    engine = EPIE.__new__(EPIE)
    engine.cfg = AlgorithmConfig(name="epie", iterations=100)
    alpha, final = engine.cfg.epie.alpha, engine.cfg.epie.alpha_final
    steps = {}
    for start in (0, None, 80):
        engine.complete_from = start
        steps[start] = []
        for engine.iteration in (40, 75, 80, 90, 100):
            steps[start].append(engine.object_step())
    fall = [0.0, 0.5, 0.6, 0.8, 1.0]
    assert steps[0] == pytest.approx([alpha * (1 - (1 - final) * t) for t in fall])
    assert steps[None] == [alpha] * 5
    assert steps[80] == pytest.approx([alpha, alpha, alpha, alpha * (1 - (1 - final) / 2),
                                       alpha * final])


@pytest.mark.parametrize("photons,low,high", [(1e3, 0.29, 0.31), (1e8, 0.99, 1.0)])
def test_lsqml_step_falls_as_far_as_the_data_are_noisy(photons, low, high):
    noisy = simulate(frame=64, grid=4, step_px=8, probe_diameter_px=20, photons=photons, seed=1)
    with Reconstruction(config("lsqml", 2, noisy), scan=as_scan(noisy)) as r:
        assert low <= r.engine.step_final <= high, r.engine.step_final
    every = config("lsqml", 2, noisy, lsqml={"decay_noise": 0.0})
    with Reconstruction(every, scan=as_scan(noisy)) as r:  # 0: all the way at any dose
        assert r.engine.step_final == pytest.approx(0.3)


def test_epie_batch_limits_the_disjoint_batches():
    # windows 24 px apart: several disjoint windows per batch unless the limit is 1
    wide = simulate(frame=64, grid=6, step_px=24, probe_diameter_px=20, photons=1e5, seed=1)
    default = run(wide, "epie", 2)
    assert all(np.array_equal(a, b) for a, b in zip(default, run(wide, "epie", 2,
                                                                   epie={"batch": 64}),
                                                     strict=True))
    one = run(wide, "epie", 2, epie={"batch": 1})
    assert not np.array_equal(default[0], one[0])


@pytest.mark.parametrize("earliest,refining", [(2, True), (20, False)])
def test_dm_refine_earliest_starts_the_stall_search(sim, earliest, refining):
    dm = {"refine_from": None, "refine_patience": 2, "refine_earliest": earliest}
    with Reconstruction(config("dm", 0, sim, dm=dm), scan=as_scan(sim)) as r:
        engine = r.engine
        engine.errors = [5.0, 4.0, 3.0, 3.5, 3.6, 3.7]  # no new low for 3 iterations
        engine.iteration = len(engine.errors)
        assert engine.refining is refining


def test_section_equals_flat_key_and_batches_equal_batch_size(sim, caplog):
    flat = run(sim, "epie", 3, alpha=0.5, rpie_weight=0.5)
    notes = [r for r in caplog.records if "deprecated config keys" in r.getMessage()]
    assert len(notes) == 1 and "algorithm.rpie_weight" in notes[0].getMessage()
    new = run(sim, "epie", 3, epie={"alpha": 0.5, "rpie_weight": 0.5})
    assert all(np.array_equal(a, b) for a, b in zip(flat, new, strict=True))
    by_count = run(sim, "lsqml", 2, lsqml={"batches": 4})
    by_size = run(sim, "lsqml", 2, batch_size=16)
    assert all(np.array_equal(a, b) for a, b in zip(by_count, by_size, strict=True))


def test_provenance_records_the_engines_options(sim):
    cfg = config("dm", 1, sim, dm={"regularisation": 0.002})
    with Reconstruction(cfg, scan=as_scan(sim)) as r:
        r.run()
        prov = provenance(r)
    assert prov["engine_options"] == dataclasses.asdict(r.config.algorithm.dm)
    assert prov["engine_options"]["regularisation"] == 0.002


@pytest.mark.skipif(not (BIN / "mpiexec").exists(), reason="no mpiexec beside the interpreter")
def test_two_rank_run_prints_the_deprecation_once(sim, tmp_path):
    scan = tmp_path / "scan.cxi"
    write_cxi(scan, sim.frames.astype(np.float32), sim.positions_m, distance_m=sim.distance_m,
              pixel_size_m=sim.detector_pixel_m, wavelength_m=sim.wavelength_m,
              compression=None)
    cfg = config("lsqml", 2, sim, noise_model="poisson", alpha=0.5)
    cfg["data"] = {"path": str(scan)}
    cfg["output"] = {"directory": str(tmp_path / "out")}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "HYDRA_"))}
    proc = subprocess.run([str(BIN / "mpiexec"), "-n", "2", str(BIN / "ptychompi"), "run",
                           "--quiet", str(tmp_path / "cfg.yaml")], cwd=tmp_path, text=True,
                          capture_output=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "deprecated config keys" in ln]
    assert len(lines) == 1 and "[rank" not in lines[0], proc.stderr
    assert "algorithm.noise_model -> algorithm.lsqml.noise_model" in lines[0]
    assert "algorithm.alpha -> algorithm.epie.alpha" in lines[0]
