"""The FFTW transforms of the CPU backend against scipy.fft, and their determinism."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.fft

import ptychompi.backends as backend_module
from ptychompi.backends import cpu_fft_library, select_backend
from ptychompi.backends.cpu import fftw
from ptychompi.errors import ConfigError

pytestmark = pytest.mark.skipif(not fftw.available(), reason="pyfftw is a dependency; "
                                "missing only where its wheel is not built")


def frames(shape, dtype=np.complex64, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return a.astype(dtype)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_fftw_matches_scipy_unitary(dtype):
    be = select_backend("cpu", workers=1, fft="fftw")
    a = frames((5, 2, 24, 40), dtype)
    tol = 1e-5 if dtype == np.complex64 else 1e-12
    for ours, ref in ((be.fft2, scipy.fft.fft2), (be.ifft2, scipy.fft.ifft2)):
        out = ours(a)
        assert out.dtype == dtype and out.shape == a.shape
        np.testing.assert_allclose(out, ref(a, norm="ortho"), atol=tol * np.abs(a).max())
    real = a.real.copy()
    half = be.rfft2(real)
    np.testing.assert_allclose(half, scipy.fft.rfft2(real, norm="ortho"),
                               atol=tol * np.abs(real).max())
    back = be.irfft2(half.copy(), real.shape[-2:])
    assert back.dtype == real.dtype
    np.testing.assert_allclose(back, real, atol=10 * tol * np.abs(real).max())


def test_fftw_input_is_kept_and_slices_work():
    be = select_backend("cpu", workers=1, fft="fftw")
    a = frames((6, 1, 32, 32))
    keep = a.copy()
    out = be.fft2(a[1:4])  # a slice (offset: not aligned like a fresh array)
    np.testing.assert_array_equal(a, keep)
    np.testing.assert_allclose(out, scipy.fft.fft2(a[1:4], norm="ortho"), atol=1e-5 * 8)
    strided = be.fft2(a[:, :, ::2, ::2])  # not contiguous
    np.testing.assert_allclose(strided, scipy.fft.fft2(a[:, :, ::2, ::2], norm="ortho"),
                               atol=1e-4)


def test_a_frame_transforms_the_same_whatever_shares_its_call():
    """Chunks differ between rank counts and threads: a frame's transform must not."""
    be1 = select_backend("cpu", workers=1, fft="fftw")
    be2 = select_backend("cpu", workers=2, fft="fftw")
    a = frames((23, 1, 64, 64))
    alone = np.concatenate([be1.fft2(a[i:i + 1]) for i in range(len(a))])
    np.testing.assert_array_equal(be1.fft2(a), alone)
    np.testing.assert_array_equal(be1.fft2(a[5:12]), alone[5:12])
    np.testing.assert_array_equal(be2.fft2(a), alone)  # blocks over two threads
    be1.close()
    be2.close()


def test_callers_arrays_are_never_written_by_a_later_call():
    """Aligned blocks go through FFTW without copies; the plan must not keep them."""
    be = select_backend("cpu", workers=1, fft="fftw")
    a = fftw.empty_aligned((4, 1, 32, 32), np.complex64)
    a[...] = frames((4, 1, 32, 32))
    keep = a.copy()
    first = be.fft2(a)
    kept = first.copy()
    flat = np.empty(4 * 32 * 32 + 1, np.complex64)[1:]  # 8 bytes off: the copy path
    misaligned = flat.reshape(4, 1, 32, 32)
    misaligned[...] = frames((4, 1, 32, 32), seed=3)
    np.testing.assert_allclose(be.fft2(misaligned),
                               scipy.fft.fft2(misaligned, norm="ortho"), atol=1e-4)
    np.testing.assert_array_equal(a, keep)
    np.testing.assert_array_equal(first, kept)


def test_fftw_from_concurrent_threads():
    """Plans are per thread: concurrent callers get correct, identical results."""
    be = select_backend("cpu", workers=1, fft="fftw")
    inputs = [frames((8, 1, 32, 32), seed=s) for s in range(6)]
    expected = [scipy.fft.fft2(x, norm="ortho") for x in inputs]
    with ThreadPoolExecutor(3) as pool:
        for _ in range(5):
            results = list(pool.map(be.fft2, inputs))
            for got, want in zip(results, expected, strict=True):
                np.testing.assert_allclose(got, want, atol=1e-5 * 16)


def test_plans_depend_on_the_block_not_the_batch(monkeypatch):
    """Batches of any size reuse the plans of at most BLOCK block lengths; the cache is
    bounded."""
    t = fftw.FftwTransforms()
    for n in (3, 16, 19, 35, 48):
        out = t.fft2(frames((n, 1, 8, 8)))
        np.testing.assert_allclose(out, scipy.fft.fft2(frames((n, 1, 8, 8)), norm="ortho"),
                                   atol=1e-5 * 8)
    assert {key[1] for key in t.plans.thread_plans()} <= {3, 16, 19 - 16, 35 - 32}
    monkeypatch.setattr(fftw, "PLANS_PER_THREAD", 2)
    for n in range(1, 7):
        t.fft2(frames((n, 1, 8, 8)))
    assert len(t.plans.thread_plans()) == 2


def test_large_frames_use_short_blocks_and_a_byte_budget(monkeypatch):
    """Plans' buffers stay within the per-thread budget, large frames in short blocks."""
    monkeypatch.setattr(fftw, "BLOCK_BYTES", 3 * 64 * 64 * 8)  # 3 frames of 64² complex64
    monkeypatch.setattr(fftw, "PLAN_BYTES_PER_THREAD", 4 * 2 * 64 * 64 * 8)
    t = fftw.FftwTransforms()
    a = frames((7, 1, 64, 64))
    np.testing.assert_allclose(t.fft2(a), scipy.fft.fft2(a, norm="ortho"), atol=1e-4)
    assert {key[1] for key in t.plans.thread_plans()} == {3, 1}  # blocks of 3, 3 and 1 frames
    for kind in (t.ifft2, t.fft2):
        kind(frames((2, 1, 64, 64)))
    assert sum(t.plans.thread_plans().values()) <= fftw.PLAN_BYTES_PER_THREAD


def test_fft_library_choice_and_errors(monkeypatch):
    monkeypatch.delenv("PTYCHOMPI_FFT", raising=False)
    assert cpu_fft_library("auto") == "fftw"
    assert select_backend("cpu", fft="scipy").fft == "scipy"
    monkeypatch.setenv("PTYCHOMPI_FFT", "scipy")
    assert select_backend("cpu", fft="fftw").fft == "scipy"  # the environment wins
    monkeypatch.setenv("PTYCHOMPI_FFT", "mkl")
    with pytest.raises(ConfigError, match="PTYCHOMPI_FFT.*auto, fftw, scipy"):
        select_backend("cpu")
    monkeypatch.delenv("PTYCHOMPI_FFT")
    monkeypatch.setattr(backend_module.fftw, "available", lambda: False)
    assert cpu_fft_library("auto") == "scipy"
    with pytest.raises(ConfigError, match="pyfftw is not installed"):
        cpu_fft_library("fftw")
