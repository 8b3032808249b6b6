"""MPI: the ptychopy step API on a communicator equals Reconstruction's whole mode.

Run with ``mpiexec -n 2 python -m pytest --with-mpi tests/mpi/test_ptychopy_mpi.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest
from mpi4py import MPI

import ptychompi.compat.ptychopy as ptychopy
from ptychompi.app.api import Reconstruction
from ptychompi.config import config_from_dict
from ptychompi.data.scan import ArrayScan, ScanGeometry
from ptychompi.model.geometry import farfield_pixel_size, kev_from_wavelength
from ptychompi.sim.simulate import simulate

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
LAM = 2.4796837508399954e-10
SIM = ("./ptycho -jobID=mpi -beamSize=110e-9 -scanDims=8,8 -step=50e-9,50e-9 -i=4 "
       f"-size=64 -lambda={LAM!r} -dx_d=172e-6 -z=1 -simulate=1 -updateProbe=2")


@pytest.fixture
def shared_cwd(monkeypatch):
    """One working directory for every rank (rank 0 writes data/ there)."""
    path = comm.bcast(tempfile.mkdtemp(prefix="ptychopy-mpi-") if rank == 0 else None, root=0)
    monkeypatch.chdir(path)
    yield path
    comm.Barrier()
    if rank == 0:
        shutil.rmtree(path, ignore_errors=True)


def _whole_mode() -> Reconstruction:
    px = farfield_pixel_size(LAM, 1.0, 64, 172e-6)
    sim = simulate(frame=64, grid=8, step_px=50e-9 / px, probe_diameter_px=110e-9 / px,
                   photons=1e6, seed=0, jitter_px=0.0, energy_kev=kev_from_wavelength(LAM),
                   distance_m=1.0, detector_pixel_m=172e-6)
    scan = ArrayScan("sim", len(sim.frames), (64, 64), np.dtype(np.float32), sim.positions_m,
                     geometry=ScanGeometry(LAM, 1.0, 172e-6), frames=sim.frames)
    cfg = config_from_dict({
        "algorithm": {"name": "epie", "iterations": 4, "probe_diameter_m": 110e-9,
                      "probe_update_start": 1},
        "geometry": {"energy_kev": kev_from_wavelength(LAM), "distance_m": 1.0,
                     "detector_pixel_m": 172e-6}})
    r = Reconstruction(cfg, comm, scan=scan)
    r.run()
    return r


@pytest.mark.mpi
def test_step_api_equals_whole_mode_on_ranks(shared_cwd):
    assert ptychopy.epieinit(SIM, comm=comm) is True
    for _ in range(4):
        ptychopy.epiestep()
    obj = ptychopy.epieresobj()
    probe = ptychopy.epieresprobe()
    ptychopy.epiepost()

    whole = _whole_mode()
    ref_obj, ref_probe = whole.object, whole.probe
    whole.close()
    assert probe.shape == (64, 64)
    assert np.array_equal(probe, ref_probe.reshape(-1, 64))
    if rank == 0:
        assert obj is not None and obj.ndim == 2 and np.iscomplexobj(obj)
        assert np.array_equal(obj, ref_obj)
    else:
        assert obj is None  # the object is assembled on rank 0 only
    # every rank holds the same probe
    probes = comm.allgather(probe)
    assert all(np.array_equal(p, probes[0]) for p in probes)

    comm.Barrier()
    names = sorted(os.listdir("data"))
    assert names == ["mpi_object_0.csv", "mpi_probes_0.csv", "mpi_result.h5"]
    if rank == 0:
        csv = np.genfromtxt("data/mpi_object_0.csv", delimiter=",", dtype=complex)
        assert csv.shape == obj.shape


@pytest.mark.mpi
def test_whole_mode_cmdstr_on_ranks(shared_cwd):
    obj = ptychopy.epiecmdstr(SIM.replace("-jobID=mpi", "-jobID=w"), comm=comm)
    ref = _whole_mode()
    ref_obj = ref.object
    ref.close()
    if rank == 0:
        assert np.array_equal(obj, ref_obj)
    else:
        assert obj is None
    comm.Barrier()
    assert os.path.isfile("data/w_probes_0.csv")
