"""ptychopy compatibility: command-string and keyword parsing, simulate, step/whole/numpy API."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

import ptychompi.compat.ptychopy as ptychopy
from ptychompi.app.api import Reconstruction
from ptychompi.config import config_from_dict
from ptychompi.data.scan import ArrayScan, ScanGeometry
from ptychompi.errors import ConfigError
from ptychompi.io.aps import write_aps
from ptychompi.io.results import read_result
from ptychompi.model.geometry import farfield_pixel_size, kev_from_wavelength
from ptychompi.sim.simulate import simulate

LAM = 2.4796837508399954e-10
SIM = ("./ptycho -jobID=sim512 -beamSize=110e-9 -scanDims=8,8 -step=50e-9,50e-9 -i=5 "
       f"-size=64 -lambda={LAM!r} -dx_d=172e-6 -z=1 -simulate=1 -blind=0")


@pytest.fixture(autouse=True)
def _no_open_sessions():
    yield
    for name in ("epie", "dm", "lsqml"):
        s = ptychopy.step_session(name)
        if s is not None:
            s.reconstruction.close()
            ptychopy.steps._SESSIONS.pop(name, None)


def _value(cfg, opts, path: str):
    head, rest = path.split(".", 1)
    if head == "options":
        return getattr(opts, rest)
    if head == "given":
        return opts.given.get(rest)
    node = getattr(cfg, head)
    for part in rest.split("."):
        node = getattr(node, part)
    return node


# (command-string fragment, where, expected)
CASES = [
    ("-jobID=run7", "options.job_id", "run7"),
    ("-algorithm=ePIE", "algorithm.name", "epie"),
    ("-algorithm=DM", "algorithm.name", "dm"),
    ("-algorithm=MLs", "algorithm.name", "lsqml"),
    ("-fp=/d/scan152_data_#06d.h5", "data.path", "/d/scan152_data_%06d.h5"),
    ("-fs=1", "data.first_index", 1),
    ("-hdf5path=/dp", "data.dataset", "/dp"),
    ("-hdf5path=", "data.dataset", "/entry/data/data"),
    ("-dpf=51", "data.frames_per_file", 51),
    ("-beamSize=110e-9", "algorithm.probe_diameter_m", 110e-9),
    ("-probeGuess=p.csv", "algorithm.probe_guess", "p.csv"),
    ("-objectGuess=o.csv", "algorithm.object_guess", "o.csv"),
    ("-size=128", "preprocess.crop_size", 128),
    ("-size=128", "options.size", 128),
    ("-qxy=276,616", "preprocess.center", [276, 616]),
    ("-qxy=282.0,10.7", "preprocess.center", [282, 10]),  # atoi, as ptychopy
    ("-nxy=512,516", "given.nxy", [512, 516]),
    ("-scanDims=51,40", "data.scan_dims", [51, 40]),
    ("-scanDims=7", "data.scan_dims", [7, 7]),
    ("-step=50e-9,60e-9", "data.step_m", [50e-9, 60e-9]),
    ("-step=50e-9", "data.step_m", [50e-9, 50e-9]),  # ptychopy's atoi made this 50
    ("-spiralScan=1", "data.positions", "spiral"),
    ("-spiralScan=0", "data.positions", "auto"),
    ("-flipScanAxis=1", "geometry.transpose_positions", True),
    ("-mirror1stScanAxis=1", "geometry.flip_positions", [True, False]),
    ("-mirror2ndScanAxis=1", "geometry.flip_positions", [False, True]),
    ("-mirror1stScanAxis=1 -flipScanAxis=1", "geometry.flip_positions", [False, True]),
    ("-probeModes=3", "algorithm.probe_modes", 3),
    (f"-lambda={LAM!r}", "geometry.energy_kev", pytest.approx(5.0000004381)),
    (f"-lambda={LAM!r}", "options.wavelength_m", pytest.approx(LAM, rel=1e-12)),
    ("-dx_d=75e-6", "geometry.detector_pixel_m", 75e-6),
    ("-z=2.2", "geometry.distance_m", 2.2),
    ("-i=7", "algorithm.iterations", 7),
    ("-T=30", "options.time_limit_s", 30.0),
    ("-jitterRadius=2", "options.jitter_radius_px", 2.0),
    ("-delta_p=0.1", "options.delta_p", 0.1),
    ("-delta_p=0.25", "options.delta_p", 0.25),
    ("-threshold=3", "preprocess.threshold", 3.0),
    ("-rotate90=1", "preprocess.rotate90", 1),
    ("-rotate90=5", "preprocess.rotate90", 1),
    ("-sqrtData", "preprocess.amplitudes", False),
    ("-sqrtData=0", "preprocess.amplitudes", True),
    ("-algorithm=MLs", "preprocess.amplitudes", False),
    ("-fftShiftData", "given.fftShiftData", True),
    ("-bitDepth=12", "preprocess.bit_depth", 12),
    ("-binaryOutput=1", "options.binary_output", True),
    ("-simulate=1", "options.simulate", True),
    ("-phaseConstraint=0", "given.phaseConstraint", 0),
    ("-updateProbe=10", "algorithm.probe_update_start", 9),
    ("-updateProbe=0", "algorithm.probe_update_start", 0),
    ("-updateModes=5", "given.updateModes", 5),
    ("-updateVis=5", "given.updateVis", 5),
    ("-blind=1", "given.blind", True),
    ("-beamstopMask=1", "options.beamstop_mask", True),
    ("-lf=pos.csv", "data.position_file", "pos.csv"),
    ("-lf=pos.csv", "data.positions", "file"),
    ("-PPS=3", "given.PPS", 3),
    ("-overlap=2", "given.overlap", 2),
    ("-shareFrequency=5", "parallel.share_frequency", 5),
    ("-RMS=1", "given.RMS", True),
    ("-save=10", "options.save_every", 10),
    ("-threads=4", "given.threads", 4),
    ("-angles=0", "given.angles", 0),
    ("-drift=1e-9,2e-9", "options.drift_m", (1e-9, 2e-9)),
    ("-wsServerUrl=ws://host:1", "given.wsServerUrl", "ws://host:1"),
]


@pytest.mark.parametrize(("fragment", "where", "expected"), CASES)
def test_parameter(fragment, where, expected):
    cfg, opts = ptychopy.parse_full(f"./ptycho {fragment}")
    assert _value(cfg, opts, where) == expected


def test_every_parameter_is_tested():
    tested = {frag.split()[0].lstrip("-").split("=")[0] for frag, _, _ in CASES}
    tested |= {f.lstrip("-").split("=")[0] for frag, _, _ in CASES for f in frag.split()}
    assert set(ptychopy.PARAMETERS) <= tested, set(ptychopy.PARAMETERS) - tested


def test_no_effect_parameters_are_reported():
    _, opts = ptychopy.parse_full("./ptycho -blind=1 -nxy=4,4 -PPS=3 -i=5 -fftShiftData")
    assert sorted(opts.no_effect) == ["PPS", "blind", "fftShiftData", "nxy"]


def test_defaults_are_ptychopy_struct_defaults():
    cfg, opts = ptychopy.parse_full("./ptycho")
    assert cfg.algorithm.name == "epie" and cfg.algorithm.iterations == 100
    assert cfg.algorithm.probe_update_start == 9 and cfg.algorithm.probe_diameter_m == 1e-7
    assert cfg.geometry.energy_kev == pytest.approx(kev_from_wavelength(2.48e-10))
    assert (cfg.geometry.distance_m, cfg.geometry.detector_pixel_m) == (1.0, 172e-6)
    assert cfg.data.scan_dims == [12, 12] and cfg.data.step_m == [40e-9, 40e-9]
    assert cfg.data.first_index == 0 and cfg.data.frames_per_file is None
    assert cfg.preprocess.crop_size is None and cfg.preprocess.center is None
    assert cfg.preprocess.amplitudes is True and cfg.parallel.share_frequency == 1
    assert cfg.output.directory == "data"
    assert opts.size == 256 and not opts.size_given and opts.job_id == ""


def test_keys_case_insensitive_dashless_and_first_token_ignored():
    cfg = ptychopy.parse("ptycho SCANDIMS=3,4 -Lambda=1e-10 --STEP=1e-8 i=9 -SQRTDATA")
    assert cfg.data.scan_dims == [3, 4] and cfg.data.step_m == [1e-8, 1e-8]
    assert cfg.algorithm.iterations == 9 and cfg.preprocess.amplitudes is False
    assert cfg.geometry.energy_kev == pytest.approx(kev_from_wavelength(1e-10))
    cfg = ptychopy.parse("-i=7 -z=3")  # the first word is the program name, as in ptychopy
    assert cfg.algorithm.iterations == 100 and cfg.geometry.distance_m == 3.0
    cfg = ptychopy.parse("./ptycho -fp='/my data/scan_#03d.h5'")  # quoted path with a space
    assert cfg.data.path == "/my data/scan_%03d.h5"


@pytest.mark.parametrize(("cmd", "match"), [
    ("-scanDim=3,3", r"-scanDim\b.*did you mean -scanDims"),
    ("-lamda=1e-10", "did you mean -lambda"),
    ("-i=abc", r"-i = 'abc'.*integer"),
    ("-i=2.5", r"-i = '2.5'"),
    ("-z=x", "-z"),
    ("-lambda=-1e-10", "-lambda.*positive"),
    ("-scanDims=1,2,3", "-scanDims"),
    ("-algorithm=PIE", "-algorithm.*ePIE"),
    ("-i", r"-i needs a value"),
    ("-lf=p.csv -spiralScan=1", "exclude"),
    ("-fp=scan_#03d.csv", "-fp.*HDF5"),
    ("-probeModes=0", "-probeModes"),
])
def test_bad_parameters(cmd, match):
    with pytest.raises(ConfigError, match=match):
        ptychopy.parse(f"./ptycho {cmd}")


def test_python_keywords_and_their_defaults():
    cfg, opts = ptychopy.parse_kwargs("epie", fp="/d/s_#06d.h5", lambd=1e-10, iter=3, qx=276,
                                      qy=616, scanDimsx=5, scanDimsy=6, stepx=1e-8,
                                      stepy=2e-8, sqrtData=1, jobID="k")
    assert cfg.data.path == "/d/s_%06d.h5" and cfg.algorithm.iterations == 3
    assert cfg.preprocess.center == [276, 616] and cfg.data.scan_dims == [5, 6]
    assert cfg.data.step_m == [1e-8, 2e-8] and cfg.preprocess.amplitudes is False
    assert cfg.geometry.energy_kev == pytest.approx(kev_from_wavelength(1e-10))
    # ptychopy.c's keyword defaults differ from the struct's
    assert cfg.geometry.distance_m == 2.2 and cfg.algorithm.probe_diameter_m == 400e-9
    assert opts.size == 512 and opts.job_id == "k"
    cfg, _ = ptychopy.parse_kwargs("dm", qx=300)  # the other half keeps its default, 128
    assert cfg.preprocess.center == [300, 128] and cfg.algorithm.name == "dm"
    cfg, _ = ptychopy.parse_kwargs("dm", scanDimsx=4)
    assert cfg.data.scan_dims == [4, 26]
    with pytest.raises(ConfigError, match="did you mean iter"):
        ptychopy.parse_kwargs("epie", itr=3)
    with pytest.raises(ConfigError, match="keyword iter"):
        ptychopy.parse_kwargs("epie", iter="many")


def test_function_algorithm_wins(caplog):
    cfg, _ = ptychopy.parse_full("./ptycho -algorithm=DM", algorithm="epie")
    assert cfg.algorithm.name == "epie"
    assert "ignored" in caplog.text


# ----------------------------------------------------------------------------- running
def _sim_scan(frame: int = 64, grid: int = 8) -> ArrayScan:
    """The scan -simulate=1 should build for SIM, made here independently."""
    px = farfield_pixel_size(LAM, 1.0, frame, 172e-6)
    sim = simulate(frame=frame, grid=grid, step_px=50e-9 / px, probe_diameter_px=110e-9 / px,
                   photons=1e6, seed=0, probe_modes=1, jitter_px=0.0,
                   energy_kev=kev_from_wavelength(LAM), distance_m=1.0,
                   detector_pixel_m=172e-6)
    return ArrayScan("sim", len(sim.frames), (frame, frame), np.dtype(np.float32),
                     sim.positions_m, geometry=ScanGeometry(LAM, 1.0, 172e-6), frames=sim.frames)


def _sim_config(**algorithm) -> dict:
    return {"algorithm": {"name": "epie", "iterations": 5, "probe_diameter_m": 110e-9,
                          "probe_update_start": 9, **algorithm},
            "geometry": {"energy_kev": kev_from_wavelength(LAM), "distance_m": 1.0,
                         "detector_pixel_m": 172e-6}}


def test_seed_example_step_mode(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ptychopy.epieinit(SIM) is True
    for _ in range(5):
        assert ptychopy.epiestep() is True
    resobj = ptychopy.epieresobj()
    resprobe = ptychopy.epieresprobe()
    assert ptychopy.epiepost() is True
    assert ptychopy.step_session("epie") is None
    assert np.iscomplexobj(resobj) and resobj.ndim == 2
    assert resprobe.shape == (1 * 64, 64) and np.iscomplexobj(resprobe)
    obj_csv = np.genfromtxt("data/sim512_object_0.csv", delimiter=",", dtype=complex)
    probe_csv = np.genfromtxt("data/sim512_probes_0.csv", delimiter=",", dtype=complex)
    assert obj_csv.shape == resobj.shape and probe_csv.shape == (64, 64)
    np.testing.assert_allclose(obj_csv, resobj, rtol=1e-5, atol=1e-5 * np.abs(resobj).max())
    res = read_result("data/sim512_result.h5")
    assert res.object.shape == resobj.shape and len(res.error) == 5
    with pytest.raises(ConfigError, match="epieinit"):
        ptychopy.epiestep()


def test_step_api_equals_whole_mode(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cmd = SIM + " -updateProbe=3 -probeModes=2"  # simulated frames: intensities anyway
    ptychopy.epieinit(cmd)
    for _ in range(5):
        ptychopy.epiestep()
    obj, probe = ptychopy.epieresobj(), ptychopy.epieresprobe()
    ptychopy.epiepost()
    scan = _sim_scan()
    # the simulation with 2 modes, as -probeModes=2 asks
    px = farfield_pixel_size(LAM, 1.0, 64, 172e-6)
    sim = simulate(frame=64, grid=8, step_px=50e-9 / px, probe_diameter_px=110e-9 / px,
                   photons=1e6, seed=0, probe_modes=2, jitter_px=0.0,
                   energy_kev=kev_from_wavelength(LAM), distance_m=1.0, detector_pixel_m=172e-6)
    scan.frames = sim.frames
    whole = Reconstruction(config_from_dict(_sim_config(probe_update_start=2, probe_modes=2)),
                           scan=scan)
    whole.run()
    assert np.array_equal(whole.object, obj)
    assert np.array_equal(whole.probe.reshape(-1, 64), probe) and probe.shape == (128, 64)
    assert not np.array_equal(whole.probe[0], whole.probe[1])
    # the whole-mode compat function gives the same object
    assert np.array_equal(ptychopy.epiecmdstr(cmd), obj)


def test_dm_and_mls_aliases(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cmd = SIM.replace("-jobID=sim512", "-jobID=al").replace("-i=5", "-i=2")
    assert ptychopy.mlsinit(cmd) is True
    assert ptychopy.step_session("lsqml").reconstruction.config.algorithm.name == "lsqml"
    ptychopy.lsqmlstep()
    ptychopy.mlsstep()
    assert ptychopy.mlsresprobe().shape == (64, 64)
    ptychopy.mlspost()
    assert ptychopy.dm(cmd) is True
    assert os.path.isfile("data/al_object_0.csv")


def test_save_time_limit_and_binary_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cmd = SIM.replace("-i=5", "-i=4") + " -save=2 -binaryOutput=1 -jobID=b"
    obj = ptychopy.epiecmdstr(cmd)
    names = sorted(os.listdir("data"))
    assert names == ["b_object_0.bin", "b_object_1.bin", "b_object_2.bin", "b_probes_0.bin",
                     "b_probes_1.bin", "b_probes_2.bin", "b_result.h5"]
    raw = np.fromfile("data/b_object_0.bin", dtype=np.complex64).reshape(obj.shape)
    assert np.array_equal(raw, obj)
    assert os.path.getsize("data/b_probes_0.bin") == 64 * 64 * 8
    recon, opts = ptychopy.reconstruction_from_cmdstr(SIM.replace("-i=5", "-i=50") + " -T=1e-9")
    with recon:
        ptychopy.run_whole(recon, opts)
        assert recon.iteration == 1  # stopped by -T after the first iteration


def test_simulate_checks_the_beam():
    with pytest.raises(ConfigError, match="-beamSize.*frame"):
        ptychopy.reconstruction_from_cmdstr(SIM.replace("-beamSize=110e-9", "-beamSize=5e-6"))
    with pytest.raises(ConfigError, match="same step"):
        ptychopy.reconstruction_from_cmdstr(SIM.replace("-step=50e-9,50e-9",
                                                        "-step=50e-9,60e-9"))


def test_simulate_rectangular_grid():
    recon, opts = ptychopy.reconstruction_from_cmdstr(SIM.replace("-scanDims=8,8",
                                                                  "-scanDims=3,5"))
    with recon:
        assert recon.layout.n_frames == 15
        assert opts.simulation is not None and recon.config.preprocess.crop_size is None


def test_numpy_api(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scan = _sim_scan()
    kw = dict(jobID="np", lambd=LAM, z=1.0, dx_d=172e-6, beamSize=110e-9, iter=3,
              sqrtData=1, size=64)
    assert ptychopy.epienp(diffractionNP=scan.frames.astype(np.float64),
                           positionNP=scan.positions_m, **kw) is True
    obj = np.genfromtxt("data/np_object_0.csv", delimiter=",", dtype=complex)
    probe = np.genfromtxt("data/np_probes_0.csv", delimiter=",", dtype=complex)
    assert probe.shape == (64, 64) and obj.ndim == 2
    # step form, with a starting probe and a starting object of ptychopy's (smaller) shape
    guess_obj = np.full((60, 70), 0.9 + 0.1j)
    ptychopy.epienpinit(diffractionNP=scan.frames, positionNP=scan.positions_m,
                        probeNP=np.ones((64, 64), complex), objectNP=guess_obj, **kw)
    recon = ptychopy.step_session("epie").reconstruction
    start = ptychopy.epieresobj()
    assert start.shape == obj.shape
    assert np.count_nonzero(start == np.complex64(0.9 + 0.1j)) == 60 * 70
    ptychopy.epiestep()
    assert ptychopy.epieresobj().shape == obj.shape
    assert ptychopy.epieresprobe().shape == (64, 64) and recon.iteration == 1
    ptychopy.epiepost()
    with pytest.raises(ConfigError, match="diffractionNP"):
        ptychopy.epienp(positionNP=scan.positions_m, **kw)
    with pytest.raises(ConfigError, match="positionNP"):
        ptychopy.epienp(diffractionNP=scan.frames, positionNP=scan.positions_m[:-1], **kw)
    with pytest.raises(ConfigError, match="size=32"):
        ptychopy.epienp(diffractionNP=scan.frames, positionNP=scan.positions_m,
                        **{**kw, "size": 32})


def test_files_crop_beamstop_and_drift(tmp_path, monkeypatch):
    """-fp row files larger than -size are cropped at -qxy; beamstopMask.h5; -drift."""
    monkeypatch.chdir(tmp_path)
    scan = _sim_scan(frame=32, grid=4)
    raw = np.zeros((16, 48, 40), np.float32)
    raw[:, 10:42, 4:36] = scan.frames  # centre of the 32-px window at (26, 20)
    write_aps(tmp_path / "scan", "s_%03d.h5", raw, frames_per_file=4)
    mask = np.ones((48, 40), np.float32)
    mask[26, 20] = 0.5  # ptychopy: < 0.99 is blocked
    with h5py.File(tmp_path / "scan" / "beamstopMask.h5", "w") as f:
        f["/entry/data/data"] = mask[None]
    px = farfield_pixel_size(LAM, 1.0, 32, 172e-6)
    step = 50e-9 * 32 / 64  # the same step in pixels as the 64-pixel simulation
    cmd = (f"./ptycho -fp=scan/s_#03d.h5 -fs=1 -dpf=4 -scanDims=4,4 -step={step!r} -size=32 "
           f"-qxy=26,20 -lambda={LAM!r} -z=1 -dx_d=172e-6 -sqrtData -beamstopMask=1 -i=2 "
           f"-drift=0,{px!r}")
    recon, opts = ptychopy.reconstruction_from_cmdstr(cmd)
    with recon:
        assert recon.layout.frame == 32 and recon.config.preprocess.center == [26, 20]
        assert recon.source.mask[26, 20] == np.False_ and recon.source.mask.sum() == 48 * 40 - 1
        cols = recon.source.positions_m[:4, 1]
        np.testing.assert_allclose(np.diff(cols), step + px * np.array([1, 1, 1]))
        recon.step(2)
    # frames already of -size are used whole (no centre of mass, no crop)
    write_aps(tmp_path / "same", "s_%03d.h5", scan.frames, frames_per_file=16)
    recon, _ = ptychopy.reconstruction_from_cmdstr(
        f"./ptycho -fp=same/s_#03d.h5 -fs=1 -scanDims=4,4 -step={step!r} -size=32 "
        f"-lambda={LAM!r} -z=1 -dx_d=172e-6 -sqrtData")
    with recon:
        assert recon.config.preprocess.crop_size is None and recon.layout.frame == 32
    with pytest.raises(ConfigError, match="-fp"):
        ptychopy.reconstruction_from_cmdstr("./ptycho -i=1")
