"""The engines' GPU code, run here with numpy standing in for CuPy.

No GPU is needed: an array module that forwards to numpy plays CuPy, so the engines take their
``backend.is_gpu`` branches and the array-module operations (:class:`ptychompi.ops.ArrayOps`,
which use numpy's expressions where a GPU runs the two CUDA kernels; the kernels are checked
against those expressions in test_kernels.py on a GPU). The numpy reference backend
(``ops_kind="array"`` on a CPU) runs the same operations without the GPU branches of the
engines. Both must compute what the compiled CPU operations compute; the numba kernels' float32
rounding differs from numpy's by an ulp, so the paths agree to rounding as carried by each
engine over four iterations (TOLERANCE).
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import scipy.fft

import ptychompi.app.api as api
from ptychompi import Reconstruction
from ptychompi.backends import Backend
from ptychompi.data.scan import ArrayScan, ScanGeometry
from ptychompi.ops import ArrayOps, CpuOps
from ptychompi.sim.simulate import simulate

MODES = 2  # probe modes: exercises the mode orthogonalisation too
# (error, object/probe) relative tolerances. DM and LSQML carry an ulp of difference as a few
# 1e-6; batched ePIE with beta = 1 amplifies it (a 1.2e-7 relative change of the shifted
# probes alone moves its probe by 6e-3 after two iterations, measured with numpy on both
# sides), so for ePIE the branches must agree to 1e-3 in the error and 1e-2 in the arrays.
TOLERANCE = {"epie": (1e-3, 1e-2), "dm": (2e-5, 2e-5), "lsqml": (2e-5, 2e-5)}


class NumpyAsCupy(types.ModuleType):
    """numpy under CuPy's extra names (asnumpy, cuda streams)."""

    def __init__(self) -> None:
        super().__init__("numpy_as_cupy")
        stream = types.SimpleNamespace(synchronize=lambda: None)
        self.cuda = types.SimpleNamespace(get_current_stream=lambda: stream)

    def __getattr__(self, name: str):
        return getattr(np, name)

    @staticmethod
    def asnumpy(a):
        return np.asarray(a)


def standin_gpu() -> Backend:
    return Backend(NumpyAsCupy(), "gpu", 0, 1)


def reference_cpu() -> Backend:
    return Backend(np, "cpu", None, 1, ops_kind="array")


@pytest.mark.parametrize("make", [standin_gpu, reference_cpu])
@pytest.mark.parametrize("name", ["epie", "dm", "lsqml"])
def test_array_operations_match_the_compiled_cpu_path(monkeypatch, make, name):
    sim = simulate(frame=64, grid=6, step_px=8, probe_diameter_px=20, photons=1e6, seed=0)

    def run(backend):
        monkeypatch.setattr(api, "select_backend", lambda *a, **k: backend)
        scan = ArrayScan(path="sim", n_frames=len(sim.frames), frame_shape=(64, 64),
                         dtype=np.float32, positions_m=sim.positions_m, frames=sim.frames,
                         geometry=ScanGeometry(sim.wavelength_m, sim.distance_m,
                                               sim.detector_pixel_m))
        cfg = {"algorithm": {"name": name, "iterations": 4, "probe_modes": MODES,
                             "probe_diameter_m": 20 * sim.pixel_size_m}}
        with Reconstruction(cfg, scan=scan) as r:
            r.run()
            return r.object, r.probe, r.metrics["error"]

    # the stand-in's FFT is numpy.fft; give the CPU paths the same FFT (scipy.fft rounds
    # differently and ePIE carries such differences), so only the kernels' rounding remains
    monkeypatch.setattr(scipy.fft, "fft2", lambda a, norm=None, workers=None,
                        overwrite_x=False: np.fft.fft2(a, norm=norm))
    monkeypatch.setattr(scipy.fft, "ifft2", lambda a, norm=None, workers=None,
                        overwrite_x=False: np.fft.ifft2(a, norm=norm))
    backend = make()
    assert isinstance(backend.ops, ArrayOps)
    gpu = run(backend)
    compiled = Backend(np, "cpu", None, 1)
    assert isinstance(compiled.ops, CpuOps)
    cpu = run(compiled)
    assert gpu[2][-1] < gpu[2][0]
    err_tol, array_tol = TOLERANCE[name]
    np.testing.assert_allclose(gpu[2], cpu[2], rtol=err_tol)
    for a, b in zip(gpu[:2], cpu[:2], strict=True):
        assert np.linalg.norm(a - b) <= array_tol * np.linalg.norm(b)
