"""The fused per-position pipelines (FFTW called from compiled kernels) against the composed
pipelines of :class:`ptychompi.ops.Operations` they replace: identical objects and probes,
chunk by chunk and in the engine."""

from __future__ import annotations

import numpy as np
import pytest
from test_engines import as_scan, config

from ptychompi import Reconstruction
from ptychompi.backends import Backend, select_backend
from ptychompi.backends.cpu import fftw
from ptychompi.backends.cpu import fused as fused_kernels
from ptychompi.engines.noise import GaussianNoise
from ptychompi.model import physics
from ptychompi.model.physics import Propagator, Windows, window_index
from ptychompi.ops import (
    DmFourierJob,
    DmObjectJob,
    DmProbeJob,
    EpieJob,
    LsqmlJob,
    PositionJob,
    ProbeShifts,
)
from ptychompi.sim.simulate import simulate

pytestmark = pytest.mark.skipif(not fftw.native_available(), reason="pyfftw is a dependency; "
                                "missing only where its wheel is not built")

M, H, W = 32, 120, 120


def rand_complex(rng, shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def test_frame_plans_transform_like_the_chunked_path():
    be = select_backend("cpu", workers=1, fft="fftw")
    a = rand_complex(np.random.default_rng(1), (1, 2, M, M))
    for direction, ours in ((fftw.FFTW_FORWARD, be.fft2), (fftw.FFTW_BACKWARD, be.ifft2)):
        out = np.empty_like(a)
        scale = np.complex64(1 / M)
        fused_kernels._transform(fftw.execute_dft, be.fft_plans.frame_plan((M, M), direction),
                                 a, out, scale)
        assert np.array_equal(out, ours(a))
    assert fftw.frame_aligned((M, M))


def both_ways(be, run):
    """``run(ops)`` with the fused pipelines and with the composed ones (the same backend's
    operations with ``fuse`` off)."""
    ops = be.ops
    assert ops.fuses((M, M))
    fused = run(ops)
    ops.fuse = False
    try:
        return fused, run(ops)
    finally:
        ops.fuse = True


def farfield(be):
    return Propagator.build(be, "farfield", M)


@pytest.mark.parametrize("modes", [1, 2])
@pytest.mark.parametrize("shifted,grad", [(False, "none"), (False, "sum"), (True, "none"),
                                          (True, "stack")])
def test_epie_chunk_equals_the_composed_pipeline(modes, shifted, grad):
    be = select_backend("cpu", workers=1, fft="fftw")
    rng = np.random.default_rng(modes)
    rows, cols = np.array([0, 0, 40, 80]), np.array([0, 40, 0, 80])  # disjoint windows
    obj, probe = rand_complex(rng, (H, W)), rand_complex(rng, (modes, M, M))
    amplitudes = rng.random((6, M, M)).astype(np.float32)
    amplitudes[0, :3] = -1  # masked pixels
    frames = np.array([3, 1, 0, 5])
    shifts = None
    if shifted:  # positions 1 and 2 share a shift
        table = physics.subpixel_ramps(be, rng.uniform(-0.5, 0.5, (3, 2)), M)
        shifts = ProbeShifts(spectrum=be.fft2(probe), table=table, ids=np.array([2, 0, 0, 1]))

    def run(ops):
        o = obj.copy()
        err, g = ops.epie_chunk(EpieJob(amplitudes=amplitudes, frames=frames,
                                        win=Windows(rows, cols, None, M), obj=o, probe=probe,
                                        shifts=shifts, steps=(0.7, 0.1), grad=grad,
                                        prop=farfield(be)))
        return err, g, o

    (err, grad_sum, got_obj), (expected_err, expected_grad, expected_obj) = both_ways(be, run)
    assert np.array_equal(got_obj, expected_obj) and not np.array_equal(got_obj, obj)
    assert (grad_sum is None) == (expected_grad is None) == (grad == "none")
    if grad_sum is not None:
        assert np.array_equal(grad_sum, expected_grad)
    assert err == pytest.approx(expected_err, rel=1e-12)  # summed in another order


@pytest.mark.parametrize("with_probe,per_position,runs,shifted", [
    (False, False, None, False), (True, False, None, False), (True, True, None, True),
    (True, False, np.array([0, 1, 3]), False), (True, False, np.array([0, 1, 3]), True)])
def test_lsqml_chunk_equals_the_composed_pipeline(with_probe, per_position, runs, shifted):
    be = select_backend("cpu", workers=1, fft="fftw")
    rng = np.random.default_rng(7)
    rows, cols = np.array([0, 10, 40, 70]), np.array([0, 20, 35, 80])  # overlapping windows
    obj, probes = rand_complex(rng, (H, W)), rand_complex(rng, (2, 2, M, M))
    probe_of = np.array([0, 1, 1, 0])
    amplitudes = rng.random((6, M, M)).astype(np.float32)
    amplitudes[2, 5:9] = -1
    frames = np.array([3, 2, 0, 5])
    count = 4 if runs is None else len(runs)
    shifts = physics.subpixel_ramps(be, rng.uniform(-0.5, 0.5, (count, 2)), M) if shifted \
        else None

    def run(ops):
        sums = [np.zeros((H, W), np.complex64), np.zeros((H, W), np.float32)]
        refinement = np.full((len(rows), 17), np.nan)
        err, chi, terms = ops.lsqml_chunk(LsqmlJob(
            amplitudes=amplitudes, frames=frames, win=Windows(rows, cols, None, M), obj=obj,
            probes=probes, probe_of=probe_of, num=sums[0], den=sums[1], with_probe=with_probe,
            per_position=per_position, runs=runs, shifts=shifts, prop=farfield(be),
            noise=GaussianNoise(), refinement=refinement))
        return err, chi, terms, sums, refinement

    (err, chi, terms, sums, refinement), (expected_err, expected_chi, expected_terms,
                                          expected_sums, expected_refinement) = both_ways(be, run)
    assert np.array_equal(chi, expected_chi)
    # the position refinement's sums the fused pass took of each χ = Ψ' − ψ, as the composed
    # pipeline takes them of the χ it returns
    assert np.array_equal(refinement, expected_refinement)
    assert np.array_equal(refinement, be.ops.residual_refinement_sums(
        probes, probe_of, chi, obj, Windows(rows, cols, None, M)))
    assert all(np.array_equal(a, b) for a, b in zip(sums, expected_sums, strict=True))
    assert np.abs(sums[0]).max() > 0
    assert (terms is None) == (expected_terms is None) == (not with_probe)
    if terms is not None:
        assert terms.dtype == expected_terms.dtype and np.array_equal(terms, expected_terms)
    assert err == pytest.approx(expected_err, rel=1e-12)


def test_dm_chunks_equal_the_composed_pipelines():
    be = select_backend("cpu", workers=1, fft="fftw")
    rng = np.random.default_rng(11)
    rows, cols = np.array([0, 10, 40, 70]), np.array([0, 20, 35, 80])
    obj, probes = rand_complex(rng, (H, W)), rand_complex(rng, (2, 2, M, M))
    probe_of = np.array([1, 0, 0, 1])
    amplitudes = rng.random((4, M, M)).astype(np.float32)
    amplitudes[1, :4] = -1
    start = fftw.empty_aligned((4, 2, M, M), np.complex64)
    start[...] = rand_complex(rng, start.shape)
    win = Windows(rows, cols, None, M)

    def fourier(ops):
        waves = fftw.empty_aligned(start.shape, np.complex64)
        waves[...] = start
        err = ops.dm_fourier_chunk(DmFourierJob(amplitudes=amplitudes, win=win, obj=obj,
                                                probes=probes, probe_of=probe_of, waves=waves,
                                                bound=0.05, prop=farfield(be)))
        return err, waves

    (err, waves), (expected_err, expected_waves) = both_ways(be, fourier)
    assert np.array_equal(waves, expected_waves) and not np.array_equal(waves, start)
    assert err == pytest.approx(expected_err, rel=1e-12)

    for keep in (True, False):
        def object_sums(ops, keep=keep):
            sums = [np.zeros((H, W), np.complex128), np.zeros((H, W), np.float64)]
            psi = fftw.empty_aligned(waves.shape, np.complex64) if keep else None
            ops.dm_object_chunk(DmObjectJob(waves=waves, win=win, probes=probes,
                                            probe_of=probe_of, num=sums[0], den=sums[1],
                                            keep=psi, prop=farfield(be)))
            return sums, psi

        (sums, psi), (expected, expected_psi) = both_ways(be, object_sums)
        assert all(np.array_equal(a, b) for a, b in zip(sums, expected, strict=True))
        if keep:
            assert np.array_equal(psi, expected_psi)
    with pytest.raises(ValueError, match="aligned"):  # FFTW would crash on such frames
        be.ops.dm_object_chunk(DmObjectJob(waves=waves[:, :, :, :-1], win=win, probes=probes,
                                           probe_of=probe_of, num=sums[0], den=sums[1],
                                           keep=None, prop=farfield(be)))


@pytest.mark.parametrize("shared", [True, False])
def test_dm_probe_chunk_equals_the_composed_pipeline(shared):
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

    def run(ops):
        return ops.dm_probe_chunk(DmProbeJob(psi=values, obj=obj,
                                             win=Windows(rows, cols, None, M), ramps=ramps,
                                             runs=runs, probes=probes, probe_of=probe_of))

    got, expected = both_ways(be, run)
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
            r.engine.backend.ops.fuse = fused
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
            r.engine.backend.ops.fuse = fused
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


def test_position_chunk_equals_the_composed_and_array_pipelines():
    """The position refinement's sums: fused, composed from the kernels, and in numpy's
    array expressions (the GPU's code)."""
    be = select_backend("cpu", workers=1, fft="fftw")
    rng = np.random.default_rng(13)
    rows, cols = np.array([0, 10, 40, 70]), np.array([0, 20, 35, 80])
    obj, probes = rand_complex(rng, (H, W)), rand_complex(rng, (2, 2, M, M))
    probe_of = np.array([1, 0, 0, 1])
    amplitudes = rng.random((6, M, M)).astype(np.float32)
    d_row, d_col = rand_complex(rng, (H, W)), rand_complex(rng, (H, W))
    frames = np.array([5, 0, 2, 3])

    def run(ops, index=None):
        return ops.position_chunk(PositionJob(
            amplitudes=amplitudes, frames=frames, win=Windows(rows, cols, index, M), obj=obj,
            probes=probes, probe_of=probe_of, d_row=d_row, d_col=d_col,
            prop=Propagator.build(ops.backend, "farfield", M)))

    fused, composed = both_ways(be, run)
    np.testing.assert_allclose(fused, composed, rtol=1e-12)
    reference = Backend(np, "cpu", None, 1, ops_kind="array")
    array = run(reference.ops, window_index(rows, cols, M, W))
    np.testing.assert_allclose(array, composed, rtol=2e-4)
    assert np.all(array[:, 1::2] > 0)
