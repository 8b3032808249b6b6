"""Each fused CPU kernel (ptychompi.backends.cpu.kernels) against the numpy expression it
replaces."""

from __future__ import annotations

import numpy as np
import pytest

from ptychompi.backends import Backend
from ptychompi.backends.cpu import kernels as ck
from ptychompi.backends.cpu.jit import JIT, jit
from ptychompi.model import physics

CPU = Backend(np, "cpu", None, 1)
RTOL = 1e-5
M, H, W, B = 16, 40, 44, 5


def rand_complex(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def amplitudes(rng: np.random.Generator, b: int = B) -> np.ndarray:
    amp = (np.abs(rng.standard_normal((b, M, M))) * 2).astype(np.float32)
    amp[rng.random(amp.shape) < 0.2] = -1.0  # masked pixels
    return amp


def corners(rng: np.random.Generator, b: int = B) -> tuple[np.ndarray, np.ndarray]:
    """Window corners that overlap (several windows share object pixels)."""
    return rng.integers(0, H - M, b), rng.integers(0, W - M, b)


def windows(obj: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return CPU.ops.extract(obj, physics.Windows(rows, cols, None, M))


def close(actual: np.ndarray, expected: np.ndarray, rtol: float = RTOL) -> None:
    """Relative agreement in the norm (elements near zero do not dominate)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    assert np.linalg.norm(actual - expected) <= rtol * np.linalg.norm(expected)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def probe_rows(rng, kind: str) -> tuple[int, np.ndarray]:
    """How many probes and each position's row in them: one for all, one each, or a few
    shared by runs of positions (the sub-pixel shift groups)."""
    if kind == "one":
        return 1, np.zeros(B, np.int64)
    if kind == "each":
        return B, np.arange(B)
    return 3, rng.integers(0, 3, B)


@pytest.mark.parametrize("modes", [1, 2])
@pytest.mark.parametrize("sharing", ["one", "each", "groups"])
def test_exit_waves(rng, modes, sharing):
    count, probe_of = probe_rows(rng, sharing)
    probes = rand_complex(rng, (count, modes, M, M))
    obj = rand_complex(rng, (H, W))
    rows, cols = corners(rng)
    out = np.empty((B, modes, M, M), np.complex64)
    ck.exit_waves(probes, probe_of, obj, rows, cols, out)
    close(out, probes[probe_of] * windows(obj, rows, cols)[:, None])


@pytest.mark.parametrize("modes", [1, 2])
def test_modulus_project(rng, modes):
    wave = rand_complex(rng, (B, modes, M, M))
    amp = amplitudes(rng)
    model = np.sqrt((np.abs(wave) ** 2).sum(axis=1))
    valid = amp >= 0
    expected = wave * np.where(valid, amp / (model + physics.EPS), 1)[:, None]
    err_expected = float((((model - amp) ** 2) * valid).sum(dtype=np.float64))
    out = np.empty_like(wave)
    err = ck.modulus_project(wave, amp, out, physics.EPS)
    close(out, expected)
    assert err == pytest.approx(err_expected, rel=RTOL)
    np.testing.assert_array_equal(out[:, :][~np.broadcast_to(valid[:, None], out.shape)],
                                  wave[~np.broadcast_to(valid[:, None], wave.shape)])
    same, err2 = CPU.ops.modulus_project(wave, amp, in_place=True)  # wrapper, in place
    assert same is wave and err2 == pytest.approx(err, rel=1e-12)
    close(wave, expected)


@pytest.mark.parametrize("modes", [1, 2])
@pytest.mark.parametrize("bound", [0.0, 0.05, 1e6])
def test_dm_fourier_update(rng, modes, bound):
    model = rand_complex(rng, (B, modes, M, M))
    waves = rand_complex(rng, (B, modes, M, M))
    amp = amplitudes(rng)
    # numpy reference: error of the model, trial, relaxed (or strict) projection, update
    err_expected = physics.fourier_error_terms(CPU, model, amp)
    trial = model * 2 - waves
    if bound > 0:
        projected = physics.relaxed_modulus_project(CPU, trial.copy(), amp, bound)
    else:
        valid = amp >= 0
        tmod = np.sqrt((np.abs(trial) ** 2).sum(axis=1))
        projected = trial * np.where(valid, amp / (tmod + physics.EPS), 1)[:, None]
    expected = waves + projected - model
    err = ck.dm_fourier_update(model, waves, amp, bound, physics.EPS)
    close(waves, expected)
    assert err == pytest.approx(err_expected, rel=RTOL)


def test_dm_fourier_update_huge_bound_keeps_the_trial(rng):
    """A bound above every frame's deviation leaves the trial as it is: Ψ ← Φ."""
    model, waves = rand_complex(rng, (B, 1, M, M)), rand_complex(rng, (B, 1, M, M))
    ck.dm_fourier_update(model, waves, amplitudes(rng), 1e9, physics.EPS)
    close(waves, model)


@pytest.mark.parametrize("modes", [1, 2])
@pytest.mark.parametrize("sharing", ["one", "each", "groups"])
def test_object_terms(rng, modes, sharing):
    count, probe_of = probe_rows(rng, sharing)
    values = rand_complex(rng, (B, modes, M, M))
    probes = rand_complex(rng, (count, modes, M, M))
    rows, cols = corners(rng)
    num, den = np.zeros((H, W), np.complex128), np.zeros((H, W), np.float64)
    ck.object_terms(values, probes, probe_of, rows, cols, num, den)
    num_ref, den_ref = np.zeros_like(num), np.zeros_like(den)
    probes = probes[probe_of]
    power = (np.abs(probes) ** 2).sum(axis=1)
    CPU.ops.scatter_add(num_ref, (values * probes.conj()).sum(axis=1), rows, cols)
    CPU.ops.scatter_add(den_ref, power, rows, cols)
    close(num, num_ref)
    close(den, den_ref)


@pytest.mark.parametrize("modes", [1, 2])
@pytest.mark.parametrize("probe_terms", ["none", "sum", "each", "runs"])
@pytest.mark.parametrize("sharing", ["one", "groups"])
def test_lsqml_object_terms(rng, modes, probe_terms, sharing):
    count, probe_of = probe_rows(rng, sharing)
    chi, psi = rand_complex(rng, (B, modes, M, M)), rand_complex(rng, (B, modes, M, M))
    probes, obj = rand_complex(rng, (count, modes, M, M)), rand_complex(rng, (H, W))
    rows, cols = corners(rng)
    expected_chi = chi - psi
    num, den = np.zeros((H, W), np.complex128), np.zeros((H, W), np.float64)
    runs = np.array([0, 2, 3])  # positions {0, 1}, {2}, {3, 4}
    slot = {"none": np.zeros(B, np.int64), "sum": np.zeros(B, np.int64),
            "each": np.arange(B), "runs": physics.run_index(runs, B)}[probe_terms]
    slots = {"none": 0, "sum": 1, "each": B, "runs": len(runs)}[probe_terms]
    pnum = np.zeros((slots, modes, M, M) if slots else (0, modes, 0, 0), np.complex128)
    ck.lsqml_object_terms(chi, psi, probes, probe_of, obj, rows, cols, num, den, pnum, slot)
    close(chi, expected_chi)
    num_ref, den_ref = np.zeros_like(num), np.zeros_like(den)
    mine = probes[probe_of]
    CPU.ops.scatter_add(num_ref, (expected_chi * mine.conj()).sum(axis=1), rows, cols)
    CPU.ops.scatter_add(den_ref, (np.abs(mine) ** 2).sum(axis=1), rows, cols)
    close(num, num_ref)
    close(den, den_ref)
    terms = expected_chi * windows(obj, rows, cols).conj()[:, None]
    if probe_terms == "sum":
        close(pnum[0], terms.sum(axis=0, dtype=np.complex128))
    if probe_terms == "each":
        close(pnum, terms)
    if probe_terms == "runs":
        close(pnum, np.add.reduceat(terms.astype(np.complex128), runs, axis=0))


@pytest.mark.parametrize("modes", [1, 2])
def test_probe_terms_and_conj_products(rng, modes):
    values, obj = rand_complex(rng, (B, modes, M, M)), rand_complex(rng, (H, W))
    rows, cols = corners(rng)
    win = windows(obj, rows, cols)
    pnum, pden = np.zeros((modes, M, M), np.complex128), np.zeros((M, M), np.float64)
    ck.probe_terms(values, obj, rows, cols, pnum, pden)
    close(pnum, (win.conj()[:, None] * values).sum(axis=0, dtype=np.complex128))
    close(pden, (np.abs(win) ** 2).sum(axis=0, dtype=np.float64))
    both = np.zeros((B, modes + 1, M, M), np.complex64)
    ck.conj_window_products(values, obj, rows, cols, np.arange(B), both)
    close(both[:, :modes], win.conj()[:, None] * values)
    close(both[:, modes], np.abs(win) ** 2)
    only = np.zeros((B, modes, M, M), np.complex64)
    ck.conj_window_products(values, obj, rows, cols, np.arange(B), only)
    close(only, both[:, :modes])
    # runs of positions summed into one slot each, in double precision
    runs = np.array([0, 2, 3])
    summed = np.zeros((len(runs), modes + 1, M, M), np.complex128)
    ck.conj_window_products(values, obj, rows, cols, np.array([0, 0, 1, 2, 2]), summed)
    close(summed, np.add.reduceat(both, runs, axis=0, dtype=np.complex128))
    close(CPU.ops.conj_object_products(values, obj, physics.Windows(rows, cols), True,
                                       runs), summed)


@pytest.mark.parametrize("modes", [1, 2])
def test_ramp_fill_and_sum(rng, modes):
    spec = rand_complex(rng, (modes, M, M))
    rr, rc = physics.subpixel_ramps(CPU, rng.random((B, 2)), M)
    out = np.empty((B, modes, M, M), np.complex64)
    ck.ramp_fill(spec, rr, rc, out)
    close(out, spec[None] * rr[:, None, :, None] * rc[:, None, None, :])
    stack = rand_complex(rng, (B, modes, M, M))
    total = np.zeros((modes, M, M), np.complex128)
    ck.ramp_sum(stack, rr, rc, total)
    expected = (stack * rr.conj()[:, None, :, None] * rc.conj()[:, None, None, :]).sum(
        axis=0, dtype=np.complex128)
    close(total, expected)


@pytest.mark.parametrize("modes", [1, 2])
@pytest.mark.parametrize("with_probe", [True, False])
@pytest.mark.parametrize("sharing", ["one", "groups"])
def test_lsqml_step_terms(rng, modes, with_probe, sharing):
    count, probe_of = probe_rows(rng, sharing)
    chi, probes = rand_complex(rng, (B, modes, M, M)), rand_complex(rng, (count, modes, M, M))
    obj, d_obj = rand_complex(rng, (H, W)), rand_complex(rng, (H, W))
    d_probe = rand_complex(rng, (modes, M, M))
    rows, cols = corners(rng)
    out = np.zeros((B, 5))
    ck.lsqml_step_terms(chi, probes, probe_of, obj, d_obj, d_probe if with_probe else
                        np.zeros((0, 0, 0), np.complex64), rows, cols, out)
    dop = windows(d_obj, rows, cols)[:, None] * probes[probe_of]
    dpo = d_probe[None] * windows(obj, rows, cols)[:, None]

    def re_dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x.conj() * y).real.astype(np.float64).sum(axis=(1, 2, 3))

    close(out[:, 0], re_dot(dop, dop))
    close(out[:, 1], re_dot(dop, chi))
    if with_probe:
        close(out[:, 2], re_dot(dpo, dpo))
        close(out[:, 3], re_dot(dop, dpo))
        close(out[:, 4], re_dot(dpo, chi))
    else:
        assert not out[:, 2:].any()


def test_reduce_accumulators_sums_in_order_and_zeroes(rng):
    acc = rng.standard_normal((3, H, W)) + 1j * rng.standard_normal((3, H, W))
    expected = (acc[0] + acc[1] + acc[2]).astype(np.complex64)
    out = np.empty((H, W), np.complex64)
    everywhere = np.zeros(3, np.int64), np.full(3, H, np.int64)
    ck.reduce_accumulators(acc, out, *everywhere)
    np.testing.assert_array_equal(out, expected)
    assert not acc.any()


def test_reduce_accumulators_reads_only_each_threads_rows(rng):
    """Thread t wrote rows [lo_t, hi_t) only: the sum skips the rest, even where a stale
    value would be (it is not read, and it is not zeroed)."""
    acc = rng.standard_normal((2, H, W))
    lo, hi = np.array([0, H // 2]), np.array([H // 2 + 2, H])
    for t in range(2):
        acc[t, :lo[t]] = 0
        acc[t, hi[t]:] = 0
    expected = acc.sum(axis=0)
    acc[0, -1] = 7.0  # outside thread 0's rows: must not be added
    out = np.full((H, W), np.nan)
    ck.reduce_accumulators(acc, out, lo, hi)
    np.testing.assert_array_equal(out, expected)
    assert not acc[0, :hi[0]].any() and not acc[1].any() and (acc[0, -1] == 7.0).all()
    empty = np.full((H, W), np.nan)
    ck.reduce_accumulators(np.zeros((1, H, W)), empty, np.zeros(1, np.int64),
                           np.zeros(1, np.int64))
    assert not empty.any()  # rows no thread wrote are zero


def test_lsqml_object_direction(rng):
    num = rand_complex(rng, (H, W))
    illum = np.abs(rng.standard_normal((H, W))).astype(np.float32)
    out = np.empty_like(num)
    ck.lsqml_object_direction(num, illum, 0.25, physics.EPS, out)
    close(out, num / np.sqrt(illum ** 2 + 0.25 + physics.EPS))


@pytest.mark.parametrize("modes", [1, 2])
@pytest.mark.parametrize("grad", ["none", "sum", "stack"])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("w", [1.0, 0.1])
def test_epie_update(rng, modes, grad, shared, w):
    chi, psi = rand_complex(rng, (3, modes, M, M)), rand_complex(rng, (3, modes, M, M))
    probes = rand_complex(rng, (1 if shared else 3, modes, M, M))
    obj = rand_complex(rng, (H, W))
    rows, cols = np.array([0, 0, 20]), np.array([0, 20, 5])  # disjoint windows
    old = windows(obj, rows, cols)
    delta = chi - psi
    alpha = 0.3
    power = (np.abs(probes) ** 2).sum(axis=1)
    peak = power.reshape(len(probes), -1).max(axis=1)[:, None, None]
    step = (alpha / ((1 - w) * power + w * peak))[:, None]  # each probe row's own power
    expected_obj = obj.copy()
    update = (step * probes.conj() * delta).sum(axis=1)
    CPU.ops.scatter_add(expected_obj, update, rows, cols)
    opower = np.abs(old) ** 2
    omax = opower.reshape(3, -1).max(axis=1)[:, None, None]
    expected_grad = delta * (old.conj() / omax)[:, None]  # ePIE's probe step, as rPIE's
    psum = np.zeros((modes, M, M) if grad == "sum" else (0, 0, 0), np.complex128)
    ck.epie_update(chi, psi, probes, obj, rows, cols, np.array([alpha, w]), psum,
                   grad == "stack")
    close(obj, expected_obj)
    if grad == "sum":
        close(psum, expected_grad.sum(axis=0))
    if grad == "stack":
        close(chi, expected_grad)
    if grad == "none":
        close(chi, delta + psi)  # untouched


def first_fit_reference(order, rows, cols, frame, limit):
    """The batching rule written out plainly: first batch with room and no overlap."""
    batches: list[list[int]] = []
    for j in order:
        for b in batches:
            if len(b) < limit and all(abs(rows[i] - rows[j]) >= frame
                                      or abs(cols[i] - cols[j]) >= frame for i in b):
                b.append(int(j))
                break
        else:
            batches.append([int(j)])
    return batches


@pytest.mark.parametrize("n,frame,limit", [(1, 8, 4), (300, 40, 5), (1200, 24, 64),
                                           (2500, 3, 2)])
def test_first_fit_batches(rng, n, frame, limit):
    rows, cols = rng.integers(0, 200, n), rng.integers(0, 200, n)
    order = rng.permutation(n)
    batch_of = np.empty(n, np.int64)
    used = ck.first_fit_batches(order, rows, cols, frame, limit, batch_of)
    got = [list(order[batch_of == b]) for b in range(used)]
    assert got == first_fit_reference(order, rows, cols, frame, limit)


@pytest.mark.parametrize("modes", [1, 2])
@pytest.mark.parametrize("runs", [None, np.array([0, 2, 3])])
def test_shifted_probe_residual(rng, modes, runs):
    """DM's back-shifted probe residual equals the plain numpy computation
    ``Σ_j S_-j[conj(O_j)(ψ_j − P_j O_j)]`` (per position, or per run of positions sharing a
    shift and so a shifted probe), and the illumination ``Σ_j |O_j|²``."""
    b = 5
    values, obj = rand_complex(rng, (b, modes, M, M)), rand_complex(rng, (H, W))
    rows, cols = corners(rng, b)
    fractions = rng.random((b, 2))
    probe_of = np.arange(b)
    if runs is not None:
        fractions[1], fractions[4] = fractions[0], fractions[3]  # runs share their shift
        probe_of = np.array([0, 0, 2, 3, 3])
    probes = rand_complex(rng, (b, modes, M, M))
    ramps = physics.subpixel_ramps(CPU, fractions, M)
    win = windows(obj, rows, cols)
    terms = win.conj()[:, None] * (values - probes[probe_of] * win[:, None])
    rr, rc = ramps[0].conj(), ramps[1].conj()
    spec = np.fft.fft2(terms, norm="ortho") * rr[:, None, :, None] * rc[:, None, None, :]
    expected_num = np.fft.ifft2(spec.sum(axis=0, dtype=np.complex128), norm="ortho")
    num, den, run_power = CPU.ops.shifted_probe_residual(
        values, obj, physics.Windows(rows, cols), ramps, probes, probe_of, runs)
    close(np.fft.ifft2(num, norm="ortho"), expected_num)
    close(den, (np.abs(win) ** 2).sum(axis=0))
    starts = np.arange(b) if runs is None else runs
    close(run_power, np.add.reduceat(np.abs(win) ** 2, starts, axis=0))


def test_kernels_compile_without_a_writable_cache(monkeypatch):
    """Where numba finds no writable cache folder it refuses ``cache=True`` at decoration
    (RuntimeError); the kernels then compile uncached instead of failing the import."""
    import numba  # noqa: PLC0415

    real_njit = numba.njit
    seen = []

    def njit(**options):
        seen.append(options["cache"])
        if options["cache"]:
            raise RuntimeError("cannot cache function 'f': no locator available for file 'x'")
        return real_njit(**options)

    monkeypatch.setattr(numba, "njit", njit)

    def twice(a):
        return 2 * a

    kernel = jit(JIT)(twice)
    assert seen == [True, False]
    assert kernel(np.float32(3)) == 6


def test_weighted_power_equals_the_numpy_expression():
    rng = np.random.default_rng(5)
    values = (rng.standard_normal((3, 2, 8, 8)) + 1j * rng.standard_normal((3, 2, 8, 8))
              ).astype(np.complex64)
    weight = rng.random((3, 8, 8))
    expected = float((weight[:, None] * np.abs(values.astype(np.complex128)) ** 2).sum())
    assert ck.weighted_power(values, weight) == pytest.approx(expected, rel=1e-12)
