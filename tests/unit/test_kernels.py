"""CUDA kernels (ptychompi.backends.gpu.kernels, kernels/*.cu): nvcc compile, GPU vs numpy, CPU
references.

GPU tests need cupy and a device and skip otherwise; the nvcc test needs nvcc (PATH,
$CUDA_HOME/bin, /usr/local/cuda/bin or /usr/local/bin) and skips otherwise. The wrapper tests
with a fake cupy check the Python side (argument order and types, grids, copies) on any machine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ptychompi.backends import Backend
from ptychompi.backends.gpu import kernels
from ptychompi.model import physics

CPU = Backend(np, "cpu")
ARCHES = ("sm_80", "sm_90")


# --------------------------------------------------------------------------- helpers
def find_nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    candidates = [Path(h) / "bin" / "nvcc" for h in homes if h] + [Path("/usr/local/bin/nvcc")]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def rand_complex(rng: np.random.Generator, shape: tuple[int, ...],
                 dtype: Any = np.complex64) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def overlapping_windows(rng: np.random.Generator, n: int, frame: int,
                        size: int) -> tuple[np.ndarray, np.ndarray]:
    """Corners of n windows crowded into a small area, so that many overlap (and repeat)."""
    rows = rng.integers(0, size - frame + 1, n)
    cols = rng.integers(0, size - frame + 1, n)
    rows[:3] = cols[:3] = 0  # identical windows: the worst case for atomics
    return rows.astype(np.int64), cols.astype(np.int64)


def masked_amplitude(rng: np.random.Generator, wave: np.ndarray,
                     fraction: float = 0.2) -> np.ndarray:
    b, _, m0, m1 = wave.shape
    amp = np.abs(rng.standard_normal((b, m0, m1))).astype(wave.real.dtype) * 2.0
    amp[rng.random(amp.shape) < fraction] = -1.0
    return amp


def reference_modulus(wave: np.ndarray, amp: np.ndarray) -> tuple[np.ndarray, float]:
    return CPU.ops.modulus_project(wave.copy(), amp, in_place=True)


# --------------------------------------------------------------------------- sources, nvcc
def test_kernel_sources_found_and_define_the_kernels_python_calls() -> None:
    sources = kernels.kernel_sources()
    assert set(sources) == set(kernels.KERNELS)
    for name, path in sources.items():
        assert path.is_file() and path.suffix == ".cu"
        text = path.read_text()
        assert "#include" not in text, "NVRTC compiles these without host headers"
        defined = set(re.findall(r"^PTYCHOMPI_\w+\((\w+),", text, flags=re.M))
        assert defined == set(kernels.KERNELS[name]), name
    block = re.search(r"#define MODULUS_BLOCK (\d+)", sources["modulus"].read_text())
    assert block and int(block.group(1)) == kernels._MODULUS_BLOCK


def test_kernel_sources_prefers_package_data(tmp_path: Path, monkeypatch: Any) -> None:
    for name in kernels.KERNELS:
        (tmp_path / f"{name}.cu").write_text("// copy\n")
    monkeypatch.setattr(kernels, "kernel_dirs", lambda: (tmp_path, Path("/nonexistent")))
    assert kernels.kernel_sources() == {n: tmp_path / f"{n}.cu" for n in kernels.KERNELS}
    monkeypatch.setattr(kernels, "kernel_dirs", lambda: (Path("/nonexistent"),))
    with pytest.raises(FileNotFoundError, match="scatter_add.cu not found"):
        kernels.kernel_sources()


def test_import_does_not_import_cupy() -> None:
    code = "import sys, ptychompi.backends.gpu.kernels; sys.exit('cupy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("name", sorted(kernels.KERNELS))
def test_kernels_compile_with_nvcc(name: str, arch: str, tmp_path: Path) -> None:
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin, /usr/local/bin)")
    source = kernels.kernel_sources()[name]
    ptx = tmp_path / f"{name}.ptx"
    cmd = [nvcc, "-std=c++17", "--ptx", f"-arch={arch}", "-o", str(ptx), str(source)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    entries = set(re.findall(r"\.entry\s+(\w+)\(", ptx.read_text()))
    assert set(kernels.KERNELS[name]) <= entries


# --------------------------------------------------------------------------- CPU references
def test_modulus_reference_masks_and_error() -> None:
    # mode 0 = 3, mode 1 = 4i everywhere: model amplitude 5
    wave = np.empty((2, 2, 3, 3), np.complex64)
    wave[:, 0], wave[:, 1] = 3.0, 4.0j
    amp = np.full((2, 3, 3), 2.0, np.float32)
    amp[0, 1, 2] = amp[1, 0, 0] = amp[1, 2, 2] = -1.0
    valid = amp >= 0
    before = wave.copy()
    out, err = CPU.ops.modulus_project(wave, amp, in_place=False)
    np.testing.assert_array_equal(wave, before)  # not in place
    assert err == pytest.approx(valid.sum() * (5.0 - 2.0) ** 2, rel=1e-6)
    for k, value in enumerate((3.0, 4.0j)):
        np.testing.assert_array_equal(out[:, k][~valid], before[:, k][~valid])
        np.testing.assert_allclose(out[:, k][valid], value * 2.0 / 5.0, rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(physics.model_intensity(out))[valid], 2.0, rtol=1e-6)
    same, err2 = CPU.ops.modulus_project(wave, amp, in_place=True)
    assert same is wave and err2 == err


def test_scatter_add_reference_overlaps() -> None:
    target = np.zeros((5, 6), np.complex64)
    values = np.ones((3, 2, 2), np.complex64) * np.array([1, 2j, 4], np.complex64)[:, None, None]
    CPU.ops.scatter_add(target, values, np.array([0, 0, 1]), np.array([0, 1, 1]))
    expected = np.zeros((5, 6), np.complex64)
    expected[0:2, 0:2] += 1
    expected[0:2, 1:3] += 2j
    expected[1:3, 1:3] += 4
    np.testing.assert_array_equal(target, expected)


# --------------------------------------------------------------------------- fake cupy
class _FakeDevice:
    id = 0

    def __enter__(self) -> _FakeDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _FakeArray(np.ndarray):
    device = _FakeDevice()

    def get(self) -> np.ndarray:
        return np.asarray(self)


def _fake(a: np.ndarray) -> _FakeArray:
    return a.view(_FakeArray)


def _emulate(name: str, grid: tuple[int, ...], block: tuple[int, ...],
             args: tuple[Any, ...]) -> None:
    """Numpy stand-in for the CUDA kernels, checking what the .cu signatures expect."""
    if name.startswith("scatter_add"):
        target, values, rows, cols, n, m0, m1, ld = args
        assert [type(a) for a in (n, m0, m1, ld)] == [np.int64, np.int32, np.int32, np.int64]
        assert values.flags.c_contiguous and values.dtype == target.dtype
        assert rows.dtype == cols.dtype == np.int64 and len(rows) == n
        assert grid[0] * block[0] >= m0 * m1 and 1 <= grid[1] <= 65535
        r, c = np.divmod(np.arange(m0 * m1), m1)
        flat = (rows[:, None] + r) * ld + cols[:, None] + c
        np.add.at(np.asarray(target), np.divmod(flat, ld), np.asarray(values).reshape(n, -1))
        return
    wave, amp, n, frame_pixels, modes, err = args
    assert [type(a) for a in (n, frame_pixels, modes)] == [np.int64, np.int64, np.int32]
    assert wave.flags.c_contiguous and amp.flags.c_contiguous and amp.size == n
    assert amp.dtype == wave.real.dtype and err.dtype == np.float64
    assert block == (kernels._MODULUS_BLOCK,)
    w = np.asarray(wave).reshape(-1, modes, frame_pixels)
    a = np.asarray(amp).reshape(-1, frame_pixels)
    model = np.sqrt((np.abs(w) ** 2).sum(axis=1))
    valid = a >= 0
    err[0] += np.sum(np.where(valid, (model - a).astype(np.float64) ** 2, 0.0))
    w *= np.where(valid, a / (model + np.float32(1e-9)), 1)[:, None].astype(a.dtype)


@pytest.fixture
def fake_cupy(monkeypatch: Any) -> types.ModuleType:
    mod = types.ModuleType("cupy")
    mod.ndarray = _FakeArray
    mod.asarray = lambda a, dtype=None: _fake(np.asarray(a, dtype=dtype))
    mod.ascontiguousarray = lambda a, dtype=None: _fake(np.ascontiguousarray(a, dtype=dtype))
    mod.broadcast_to = lambda a, shape: _fake(np.broadcast_to(a, shape))
    mod.zeros = lambda shape, dtype=float: _fake(np.zeros(shape, dtype))

    class RawModule:
        def __init__(self, code: str, options: tuple[str, ...]) -> None:
            assert options == kernels.COMPILE_OPTIONS
            self.code = code

        def get_function(self, name: str) -> Any:
            assert f"({name}," in self.code
            return lambda grid, block, args: _emulate(name, grid, block, args)

    mod.RawModule = RawModule
    monkeypatch.setitem(sys.modules, "cupy", mod)
    return mod


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, np.float32, np.float64])
def test_scatter_add_wrapper_with_fake_cupy(fake_cupy: Any, dtype: Any) -> None:
    rng = np.random.default_rng(1)
    rows, cols = overlapping_windows(rng, 40, 5, 12)
    values = rand_complex(rng, (40, 5, 5)) if np.dtype(dtype).kind == "c" else \
        rng.standard_normal((40, 5, 5))
    wide = np.zeros((12, 20), dtype)
    expected = np.zeros((12, 12), dtype)
    CPU.ops.scatter_add(expected, values.astype(dtype), rows, cols)
    target = _fake(wide)[:, 3:15]  # contiguous rows, row stride 20
    cache = kernels.KernelCache()
    kernels.scatter_add_gpu(target, _fake(values.astype(dtype)), rows, cols, cache=cache)
    np.testing.assert_allclose(wide[:, 3:15], expected, rtol=1e-6, atol=1e-6)
    assert not wide[:, :3].any() and not wide[:, 15:].any()
    with pytest.raises(ValueError, match="outside"):
        kernels.scatter_add_gpu(target, _fake(values.astype(dtype)), rows + 8, cols,
                                cache=cache)
    if np.dtype(dtype).kind == "f":
        with pytest.raises(TypeError):
            kernels.scatter_add_gpu(target, _fake(rand_complex(rng, (40, 5, 5))), rows, cols,
                                    cache=cache)


@pytest.mark.parametrize("in_place", [True, False])
def test_modulus_wrapper_with_fake_cupy(fake_cupy: Any, in_place: bool) -> None:
    rng = np.random.default_rng(2)
    wave = rand_complex(rng, (3, 2, 6, 6))
    amp = masked_amplitude(rng, wave)
    ref, ref_err = reference_modulus(wave, amp)
    strided = np.zeros((3, 2, 6, 12), np.complex64)
    strided[..., ::2] = wave
    arg = _fake(strided)[..., ::2]  # not contiguous: the wrapper must copy (and copy back)
    out, err = kernels.modulus_project_gpu(arg, _fake(amp), in_place=in_place,
                                           cache=kernels.KernelCache())
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-6, atol=1e-7)
    assert err == pytest.approx(ref_err, rel=1e-6) and isinstance(err, float)
    if in_place:
        assert out is arg and np.allclose(strided[..., ::2], ref)
    else:
        np.testing.assert_array_equal(strided[..., ::2], wave)


# --------------------------------------------------------------------------- GPU
@pytest.fixture(scope="module")
def cp() -> types.ModuleType:
    cupy = pytest.importorskip("cupy")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - no driver: CuPy raises its own types
        pytest.skip(f"no usable CUDA device: {exc}")
    if count < 1:
        pytest.skip("no CUDA device")
    return cupy


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, np.float32, np.float64])
def test_scatter_add_gpu_matches_numpy(cp: Any, dtype: Any) -> None:
    rng = np.random.default_rng(3)
    n, frame, size = 300, 16, 40
    rows, cols = overlapping_windows(rng, n, frame, size)
    values = (rand_complex(rng, (n, frame, frame)) if np.dtype(dtype).kind == "c"
              else rng.standard_normal((n, frame, frame))).astype(dtype)
    start = np.zeros((size, size), dtype) + values[0, 0, 0]
    expected = start.copy()
    CPU.ops.scatter_add(expected, values, rows, cols)
    target = cp.asarray(start)
    kernels.scatter_add_gpu(target, cp.asarray(values), rows, cols, cache=kernels.KernelCache())
    np.testing.assert_allclose(cp.asnumpy(target), expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())


def test_scatter_add_gpu_broadcast_view_many_windows_and_dispatch(cp: Any) -> None:
    rng = np.random.default_rng(4)
    n, frame, size = 70_000, 3, 50  # more windows than gridDim.y allows: grid-stride path
    rows, cols = overlapping_windows(rng, n, frame, size)
    probe = rand_complex(rng, (frame, frame))
    expected = np.zeros((size, size), np.complex64)
    CPU.ops.scatter_add(expected, np.broadcast_to(probe, (n, frame, frame)), rows, cols)
    target = cp.zeros((size, size), np.complex64)
    gpu = Backend(cp, "gpu", 0)
    gpu.ops.scatter_add(target, cp.broadcast_to(cp.asarray(probe), (n, frame, frame)),
                        rows, cols)
    np.testing.assert_allclose(cp.asnumpy(target), expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("modes", [1, 2])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_modulus_project_gpu_matches_numpy(cp: Any, modes: int, dtype: Any) -> None:
    rng = np.random.default_rng(5 + modes)
    wave = rand_complex(rng, (7, modes, 32, 32), dtype)
    amp = masked_amplitude(rng, wave)
    ref, ref_err = reference_modulus(wave, amp)
    d_wave = cp.asarray(wave)
    out, err = kernels.modulus_project_gpu(d_wave, cp.asarray(amp), in_place=True,
                                           cache=kernels.KernelCache())
    assert out is d_wave and isinstance(err, float)
    got = cp.asnumpy(out)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    masked = np.broadcast_to(amp[:, None] < 0, wave.shape)
    np.testing.assert_array_equal(got[masked], wave[masked])  # masked pixels untouched
    assert err == pytest.approx(ref_err, rel=1e-5)


def test_modulus_project_gpu_not_in_place_and_dispatch(cp: Any) -> None:
    rng = np.random.default_rng(8)
    wave = rand_complex(rng, (5, 2, 64, 64))
    amp = masked_amplitude(rng, wave)
    ref, ref_err = reference_modulus(wave, amp)
    d_wave = cp.asarray(wave)
    out, err = Backend(cp, "gpu", 0).ops.modulus_project(d_wave, cp.asarray(amp),
                                       in_place=False)
    np.testing.assert_array_equal(cp.asnumpy(d_wave), wave)
    np.testing.assert_allclose(cp.asnumpy(out), ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    assert err == pytest.approx(ref_err, rel=1e-5)
