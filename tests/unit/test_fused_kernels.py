"""The fused per-position pipelines (FFTW called from compiled kernels) against the chunked
path they replace: identical objects and probes, position by position and in the engine."""

from __future__ import annotations

import numpy as np
import pytest
from test_engines import as_scan, config

from ptychompi import Reconstruction, fftw, fftw_native, fused_kernels, physics
from ptychompi.backend import select_backend
from ptychompi.physics import Windows
from ptychompi.simulate import simulate

pytestmark = pytest.mark.skipif(not fftw_native.available(), reason="pyfftw is a dependency; "
                                "missing only where its wheel is not built")

M, H, W = 32, 120, 120


def rand_complex(rng, shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def test_frame_plans_transform_like_the_chunked_path():
    be = select_backend("cpu", workers=1, fft="fftw")
    a = rand_complex(np.random.default_rng(1), (1, 2, M, M))
    for direction, ours in ((fftw_native.FFTW_FORWARD, be.fft2),
                            (fftw_native.FFTW_BACKWARD, be.ifft2)):
        out = np.empty_like(a)
        scale = np.complex64(1 / M)
        fused_kernels._transform(fftw_native.execute_dft, fftw_native.frame_plan((M, M), direction),
                                 a, out, scale)
        assert np.array_equal(out, ours(a))
    assert fftw_native.frame_aligned((M, M))


@pytest.mark.parametrize("modes", [1, 2])
@pytest.mark.parametrize("shifted,grad", [(False, "none"), (False, "sum"), (True, "none"),
                                          (True, "stack")])
def test_epie_chunk_equals_the_chunked_path(modes, shifted, grad):
    be = select_backend("cpu", workers=1, fft="fftw")
    rng = np.random.default_rng(modes)
    rows, cols = np.array([0, 0, 40, 80]), np.array([0, 40, 0, 80])  # disjoint windows
    obj, probe = rand_complex(rng, (H, W)), rand_complex(rng, (modes, M, M))
    amplitudes = rng.random((6, M, M)).astype(np.float32)
    amplitudes[0, :3] = -1  # masked pixels
    frames = np.array([3, 1, 0, 5])
    ramps = physics.subpixel_ramps(be, rng.uniform(-0.5, 0.5, (4, 2)), M) if shifted else None
    probe_ft = be.fft2(probe) if shifted else None

    expected_obj = obj.copy()
    probes = physics.shifted_probes(be, probe_ft, ramps, probe)
    win = Windows(rows, cols, None)
    psi = physics.exit_waves(be, probes, expected_obj, win)
    projected, expected_err = physics.modulus_project(be, be.fft2(psi), amplitudes[frames])
    expected_grad = physics.epie_update(be, be.ifft2(projected), psi, probes, expected_obj, win,
                                        (0.7, 0.1), grad)
    if grad == "stack":
        expected_grad = physics.unshift_sum(be, expected_grad, ramps, spectrum=True)

    err, grad_sum = fused_kernels.epie_chunk(amplitudes, frames, rows, cols, obj, probe,
                                             probe_ft, ramps, (0.7, 0.1), physics.EPS, grad)
    assert np.array_equal(obj, expected_obj)
    assert (grad_sum is None) == (expected_grad is None)
    if grad_sum is not None:
        assert np.array_equal(grad_sum, expected_grad)
    assert err == pytest.approx(expected_err, rel=1e-12)  # summed in another order


@pytest.mark.parametrize("with_probe,per_position,runs", [
    (False, False, None), (True, False, None), (True, True, None),
    (True, False, np.array([0, 1, 3]))])
def test_lsqml_chunk_equals_the_chunked_path(with_probe, per_position, runs):
    be = select_backend("cpu", workers=1, fft="fftw")
    rng = np.random.default_rng(7)
    rows, cols = np.array([0, 10, 40, 70]), np.array([0, 20, 35, 80])  # overlapping windows
    obj, probes = rand_complex(rng, (H, W)), rand_complex(rng, (2, 2, M, M))
    probe_of = np.array([0, 1, 1, 0])
    amplitudes = rng.random((6, M, M)).astype(np.float32)
    amplitudes[2, 5:9] = -1
    frames = np.array([3, 2, 0, 5])
    sums = [np.zeros((H, W), np.complex64), np.zeros((H, W), np.float32)]
    win = Windows(rows, cols, None)
    psi = physics.exit_waves(be, probes, obj, win, probe_of)
    projected, expected_err = physics.modulus_project(be, be.fft2(psi), amplitudes[frames])
    expected_chi = be.ifft2(projected)
    expected_terms = physics.lsqml_object_terms(be, expected_chi, psi, probes, obj, win, *sums,
                                                with_probe, probe_of, per_position, runs)
    fused_sums = [np.zeros_like(a) for a in sums]
    err, chi, terms = fused_kernels.lsqml_chunk(amplitudes, frames, rows, cols, obj, probes,
                                                probe_of, *fused_sums, with_probe, per_position,
                                                runs, physics.EPS)
    assert np.array_equal(chi, expected_chi)
    assert all(np.array_equal(a, b) for a, b in zip(fused_sums, sums, strict=True))
    assert (terms is None) == (expected_terms is None)
    if terms is not None:
        assert terms.dtype == expected_terms.dtype and np.array_equal(terms, expected_terms)
    assert err == pytest.approx(expected_err, rel=1e-12)
    if runs is not None:  # with the runs' ramps the call also back-shifts their sums
        ramps = physics.subpixel_ramps(be, rng.uniform(-0.5, 0.5, (len(runs), 2)), M)
        _, _, spectrum = fused_kernels.lsqml_chunk(
            amplitudes, frames, rows, cols, obj, probes, probe_of,
            *[np.zeros_like(a) for a in sums], with_probe, per_position, runs, physics.EPS,
            ramps)
        assert np.array_equal(spectrum, physics.unshift_sum(be, terms, ramps, spectrum=True))


def test_dm_chunks_equal_the_chunked_path():
    be = select_backend("cpu", workers=1, fft="fftw")
    rng = np.random.default_rng(11)
    rows, cols = np.array([0, 10, 40, 70]), np.array([0, 20, 35, 80])
    obj, probes = rand_complex(rng, (H, W)), rand_complex(rng, (2, 2, M, M))
    probe_of = np.array([1, 0, 0, 1])
    amplitudes = rng.random((4, M, M)).astype(np.float32)
    amplitudes[1, :4] = -1
    waves = fftw.empty_aligned((4, 2, M, M), np.complex64)
    waves[...] = rand_complex(rng, waves.shape)
    win = Windows(rows, cols, None)

    model = be.fft2(physics.exit_waves(be, probes, obj, win, probe_of))
    expected_waves = waves.copy()
    expected_err = physics.dm_fourier_update(be, model, expected_waves, amplitudes, 0.05)
    err = fused_kernels.dm_fourier_chunk(amplitudes, rows, cols, obj, probes, probe_of, waves,
                                         0.05, physics.EPS)
    assert np.array_equal(waves, expected_waves)
    assert err == pytest.approx(expected_err, rel=1e-12)

    expected = [np.zeros((H, W), np.complex128), np.zeros((H, W), np.float64)]
    expected_psi = be.ifft2(waves)
    physics.object_terms(be, expected_psi, probes, win, *expected, probe_of)
    for keep in (True, False):
        sums = [np.zeros_like(a) for a in expected]
        psi = fftw.empty_aligned(waves.shape, np.complex64) if keep else None
        fused_kernels.dm_object_chunk(waves, rows, cols, probes, probe_of, *sums, psi)
        assert all(np.array_equal(a, b) for a, b in zip(sums, expected, strict=True))
        if keep:
            assert np.array_equal(psi, expected_psi)
    with pytest.raises(ValueError, match="aligned"):  # FFTW would crash on such frames
        fused_kernels.dm_object_chunk(waves[:, :, :, :-1], rows, cols, probes, probe_of, *sums,
                                      None)


@pytest.mark.parametrize("shared", [True, False])
def test_dm_probe_chunk_equals_the_chunked_path(shared):
    be = select_backend("cpu", workers=1, fft="fftw")
    rng = np.random.default_rng(5)
    rows, cols = np.array([0, 10, 40, 70, 5]), np.array([0, 20, 35, 80, 60])
    obj, values = rand_complex(rng, (H, W)), rand_complex(rng, (5, 2, M, M))
    runs = np.array([0, 2, 3])  # positions 0-1, 2 and 3-4 share a shift
    shifts = rng.uniform(-0.5, 0.5, (5, 2))
    shifts[1], shifts[4] = shifts[0], shifts[3]
    ramps = physics.subpixel_ramps(be, shifts, M)
    probes = rand_complex(rng, (3, 2, M, M))  # the distinct shifted probes, one per run
    probe_of = None if shared else np.array([0, 0, 1, 2, 2])
    if shared:
        probes = probes[:1]
    expected = physics.shifted_probe_residual(be, values, obj, Windows(rows, cols, None),
                                              ramps, probes, probe_of, runs)
    got = fused_kernels.dm_probe_chunk(values, obj, rows, cols,
                                       physics.run_ramps(be, ramps, runs), runs, probes,
                                       probe_of)
    for a, b in zip(got, expected, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.parametrize("name", ["epie", "dm", "lsqml"])
@pytest.mark.parametrize("subpixel", [True, False])
def test_engine_fused_equals_chunked(name, subpixel):
    sim = simulate(frame=32, grid=8, step_px=5, probe_diameter_px=10, photons=1e5, seed=3)
    cfg = config(name, 4, sim, probe_update_start=1, subpixel=subpixel, dm={"refine_from": 2})
    cfg["parallel"]["workers"] = 2
    results = []
    for fused in (True, False):
        with Reconstruction(cfg, scan=as_scan(sim)) as r:
            assert r.engine.fused  # CPU, FFTW, far field, single precision
            r.engine.fused = fused
            r.run()
            results.append((r.object, r.probe, r.metrics["error"]))
    (obj_f, probe_f, err_f), (obj_c, probe_c, err_c) = results
    assert np.array_equal(obj_f, obj_c) and np.array_equal(probe_f, probe_c)
    np.testing.assert_allclose(err_f, err_c, rtol=1e-6)


@pytest.mark.parametrize("name", ["epie", "dm", "lsqml"])
def test_engine_fused_equals_chunked_near_field(shared_data, name):
    """The real PETRA III near-field scan (100² frames): the fused kernels propagate through
    the Fresnel transfer function like physics.Propagator."""
    cfg = {"data": {"path": str(shared_data / "petra3-p25-nearfield"
                                / "PETRAIII_P25_Near_Field_Ptycho.cxi")},
           "geometry": {"propagation": "nearfield", "focus_to_sample_m": 3.65e-3},
           "algorithm": {"name": name, "iterations": 3, "probe_update_start": 1,
                         "dm": {"refine_from": 2}},
           "parallel": {"device": "cpu", "workers": 2}}
    results = []
    for fused in (True, False):
        with Reconstruction(cfg) as r:
            assert r.engine.fused and r.engine.data.propagator.kind == "nearfield"
            r.engine.fused = fused
            r.run()
            results.append((r.object, r.probe))
    assert np.array_equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][1], results[1][1])


def test_fused_only_where_it_applies():
    sim = simulate(frame=32, grid=4, step_px=5, probe_diameter_px=10, photons=1e5, seed=3)
    poisson = config("lsqml", 1, sim, lsqml={"noise_model": "poisson"})
    double = config("epie", 1, sim, precision="double")
    scipy_fft = config("dm", 1, sim)
    scipy_fft["parallel"]["fft"] = "scipy"
    for cfg in (poisson, double, scipy_fft):
        with Reconstruction(cfg, scan=as_scan(sim)) as r:
            assert not r.engine.fused
