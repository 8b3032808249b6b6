"""The :class:`~ptychompi.app.api.Reconstruction` of a parsed ptychopy job: simulated scans, files
(positions, beamstop mask, crop) and numpy arrays mapped onto ptychompi's scan sources."""

from __future__ import annotations

import copy
import logging
import math
import os
import tempfile
from typing import Any

import h5py
import numpy as np

from ...app.api import Reconstruction, agree
from ...config import Config
from ...data.dataset import open_source, plan_layout
from ...data.scan import ArrayScan, ScanGeometry, ScanSource
from ...errors import ConfigError, DataError
from ...io.aps import raster_positions
from ...model.geometry import farfield_pixel_size
from ...model.initial import read_array_file
from ...sim.simulate import simulate
from .params import SIMULATION_PHOTONS, PtychopyOptions
from .parsing import parse_full, parse_kwargs

log = logging.getLogger("ptychompi.compat.ptychopy")


# ----------------------------------------------------------------------------- building
def _simulated_scan(opts: PtychopyOptions, cfg: Config) -> ArrayScan:
    """``-simulate=1``: a raster scan from ptychompi.sim.simulate with ptychopy's geometry."""
    if opts.given.get("lf") or opts.given.get("spiralScan") == "spiral":
        raise ConfigError("-simulate=1 makes a raster scan; drop -lf / -spiralScan")
    m = opts.size
    if m < 8:
        raise ConfigError(f"-simulate=1 needs -size >= 8 pixels, got {m}")
    px = farfield_pixel_size(opts.wavelength_m, opts.distance_m, m, opts.detector_pixel_m)
    step_r, step_c = opts.step_m
    if not math.isclose(step_r, step_c, rel_tol=1e-9):
        raise ConfigError(f"-simulate=1 needs the same step on both axes, got -step={step_r:g},"
                          f"{step_c:g}")
    diameter = opts.beam_size_m / px
    if not diameter < m:
        raise ConfigError(f"-simulate=1: -beamSize={opts.beam_size_m:g} m is {diameter:.1f} "
                          f"object pixels of {px:.3g} m, which does not fit the {m}-pixel frame;"
                          f" use a smaller -beamSize or a larger -size")
    rows, cols = opts.scan_dims
    grid = max(rows, cols)
    sim = simulate(frame=m, grid=grid, step_px=step_r / px, probe_diameter_px=diameter,
                   photons=SIMULATION_PHOTONS, seed=cfg.algorithm.seed,
                   probe_modes=cfg.algorithm.probe_modes, jitter_px=opts.jitter_radius_px,
                   energy_kev=float(cfg.geometry.energy_kev),
                   distance_m=opts.distance_m, detector_pixel_m=opts.detector_pixel_m)
    keep = (np.arange(rows)[:, None] * grid + np.arange(cols)[None, :]).ravel()
    frames, positions = sim.frames[keep], sim.positions_m[keep]
    opts.simulation = sim
    return ArrayScan(path=f"simulate:{opts.job_id or 'ptychopy'}", n_frames=len(frames),
                     frame_shape=(m, m), dtype=np.dtype(np.float32), positions_m=positions,
                     geometry=ScanGeometry(sim.wavelength_m, sim.distance_m,
                                           sim.detector_pixel_m),
                     frames=frames, metadata={"simulated": True})


def _read_beamstop(path: str, dataset: str, shape: tuple[int, int]) -> np.ndarray:
    """ptychopy's ``beamstopMask.h5``: first frame of ``dataset``, value < 0.99 = blocked."""
    if not os.path.isfile(path):
        raise DataError(f"-beamstopMask=1: {path} not found (ptychopy reads beamstopMask.h5 "
                        "beside the -fp files)")
    try:
        with h5py.File(path, "r") as f:
            ds = f.get(dataset)
            if not isinstance(ds, h5py.Dataset):
                raise DataError(f"{path}: no dataset {dataset} (the -hdf5path dataset)")
            arr = ds[0] if ds.ndim == 3 else ds[()]
    except OSError as exc:
        raise DataError(f"{path}: cannot read the beamstop mask ({exc})") from None
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape != tuple(shape):
        raise DataError(f"{path}: beamstop mask is {arr.shape}, the frames are {tuple(shape)}")
    return arr >= 0.99


def _file_scan(cfg: Config, opts: PtychopyOptions) -> ScanSource:
    """Open the files of ``-fp`` and apply what the config cannot say (drift, jitter, mask)."""
    if not cfg.data.path:
        raise ConfigError("no data: give -fp=<file pattern> (or -simulate=1)")
    source = open_source(cfg)
    jitter, drift = opts.jitter_radius_px, opts.drift_m
    if jitter or any(drift):
        if source.metadata.get("positions") == "raster":
            frame = opts.size if opts.size_given else int(source.frame_shape[0])
            g = cfg.geometry
            px = farfield_pixel_size(opts.wavelength_m, opts.distance_m, frame,
                                     opts.detector_pixel_m)
            source.positions_m = raster_positions(
                cfg.data.scan_dims, cfg.data.step_m,
                mirror_rows=bool(opts.given.get("mirror1stScanAxis", False)),
                mirror_cols=bool(opts.given.get("mirror2ndScanAxis", False)),
                swap=g.transpose_positions, drift_m=drift, jitter_px=jitter, pixel_m=px,
                seed=cfg.algorithm.seed)
            g.flip_positions, g.transpose_positions = [False, False], False  # done above
        else:
            log.warning("-drift/-jitterRadius apply to raster scans only; ignored here")
    if opts.beamstop_mask:
        folder = os.path.dirname(str(cfg.data.path))
        valid = _read_beamstop(os.path.join(folder, "beamstopMask.h5"), cfg.data.dataset,
                               tuple(source.frame_shape))
        source.mask = valid if source.mask is None else (np.asarray(source.mask, bool) & valid)
    return source


def _fit_object(arr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centre ``arr`` in a flat-1 array of ``shape`` (cropping what does not fit)."""
    out = np.ones(shape, dtype=np.complex128)
    src, dst = [], []
    for n_in, n_out in zip(arr.shape, shape, strict=True):
        if n_in <= n_out:
            a = (n_out - n_in) // 2
            src.append(slice(0, n_in))
            dst.append(slice(a, a + n_in))
        else:
            a = (n_in - n_out) // 2
            src.append(slice(a, a + n_out))
            dst.append(slice(0, n_out))
    out[tuple(dst)] = arr[tuple(src)]
    return out


def _object_guess_file(cfg: Config, source: ScanSource, guess: np.ndarray | None,
                       frame: int) -> str | None:
    """A temporary .npy holding the object guess fitted to ptychompi's object, if needed."""
    from_file = guess is None
    if from_file:
        if not cfg.algorithm.object_guess:
            return None
        guess = read_array_file(cfg.algorithm.object_guess, "object")
    guess = np.asarray(guess)
    if guess.ndim != 2:
        raise ConfigError(f"the object guess has shape {guess.shape}; expected a 2-D array")
    shape = plan_layout(cfg, source, frame).object_shape
    if from_file and guess.shape == tuple(shape):
        return None  # the file fits as it is
    if guess.shape != tuple(shape):
        log.info("object guess %s centred in ptychompi's %s object", guess.shape, shape)
    fd, path = tempfile.mkstemp(suffix=".npy", prefix="ptychopy-object-")
    with os.fdopen(fd, "wb") as fh:
        np.save(fh, _fit_object(guess, shape))
    return path


def _build(cfg: Config, opts: PtychopyOptions, comm: Any | None,
           arrays: dict[str, Any] | None = None) -> Reconstruction:
    """The Reconstruction for a resolved ptychopy command (files, simulation or arrays)."""
    cfg = copy.deepcopy(cfg)
    if opts.no_effect:
        log.info("ptychopy parameters without effect in ptychompi: %s",
                 ", ".join(f"-{n}" for n in opts.no_effect))
    error: BaseException | None = None
    source: ScanSource | None = None
    guess_file: str | None = None
    try:
        object_np = None
        if arrays is not None:
            source = _array_scan(arrays, cfg, opts)
            object_np = arrays.get("objectNP")
        elif opts.simulate:
            source = _simulated_scan(opts, cfg)
            cfg.preprocess.amplitudes = False  # simulated frames are intensities
            cfg.geometry.flip_positions, cfg.geometry.transpose_positions = [False, False], False
        else:
            source = _file_scan(cfg, opts)
        raw = tuple(int(n) for n in source.frame_shape)
        if arrays is not None or opts.simulate or raw == (opts.size, opts.size):
            cfg.preprocess.crop_size, cfg.preprocess.center = None, None
        frame = cfg.preprocess.crop_size or raw[0]
        guess_file = _object_guess_file(cfg, source, object_np, frame)
        if guess_file is not None:
            cfg.algorithm.object_guess = guess_file
    except Exception as exc:  # noqa: BLE001 - any failure is reported on every rank below
        error = exc
        if source is not None:
            source.close()
    try:
        agree(comm, error)
        return Reconstruction(cfg, comm, scan=source)
    finally:
        if guess_file is not None:
            os.remove(guess_file)


def _array_scan(arrays: dict[str, Any], cfg: Config, opts: PtychopyOptions) -> ArrayScan:
    """The numpy API: ``diffractionNP`` (N, M, M) centred, ``positionNP`` (N, 2) metres."""
    diff = arrays.get("diffractionNP")
    if diff is None:
        raise ConfigError("diffractionNP is missing: pass diffractionNP=<(N, size, size) array>")
    diff = np.asarray(diff)
    if diff.ndim != 3 or diff.shape[1] != diff.shape[2]:
        raise ConfigError(f"diffractionNP has shape {diff.shape}; expected (N, size, size)")
    n, m = diff.shape[0], diff.shape[1]
    if opts.size_given and opts.size != m:
        raise ConfigError(f"size={opts.size} but diffractionNP frames are {m}x{m}; the numpy "
                          "API takes frames already cropped to size")
    pos = arrays.get("positionNP")
    if pos is None:
        raise ConfigError("positionNP is missing: pass positionNP=<(N, 2) array of row, col "
                          "in metres>")
    pos = np.asarray(pos, dtype=np.float64)
    if pos.shape != (n, 2):
        raise ConfigError(f"positionNP has shape {pos.shape}; expected ({n}, 2), one row,col "
                          "pair in metres per diffraction pattern")
    probe = arrays.get("probeNP")
    if probe is not None:
        probe = np.asarray(probe)
        if probe.ndim == 2 and probe.shape[0] > m and probe.shape[0] % m == 0:
            probe = probe.reshape(-1, m, m)
        if probe.shape[-2:] != (m, m):
            raise ConfigError(f"probeNP has shape {probe.shape}; expected ({m}, {m})")
    return ArrayScan(path="numpy", n_frames=n, frame_shape=(m, m), dtype=diff.dtype,
                     positions_m=pos, illumination=probe,
                     geometry=ScanGeometry(opts.wavelength_m, opts.distance_m,
                                           opts.detector_pixel_m), frames=diff)


def reconstruction_from_cmdstr(cmdstr: str, comm: Any | None = None, *,
                               algorithm: str | None = None
                               ) -> tuple[Reconstruction, PtychopyOptions]:
    """Build the Reconstruction a ptychopy command string describes (collective)."""
    cfg, opts = parse_full(cmdstr, algorithm=algorithm)
    return _build(cfg, opts, comm), opts


def reconstruction_from_kwargs(algorithm: str | None = None, comm: Any | None = None,
                               **kw: Any) -> tuple[Reconstruction, PtychopyOptions]:
    """Build the Reconstruction for ptychopy's Python keywords (collective)."""
    cfg, opts = parse_kwargs(algorithm, **kw)
    return _build(cfg, opts, comm), opts


def reconstruction_from_arrays(algorithm: str | None = None, comm: Any | None = None, *,
                               diffractionNP: Any = None, positionNP: Any = None,  # noqa: N803
                               objectNP: Any = None, probeNP: Any = None,  # noqa: N803
                               **kw: Any) -> tuple[Reconstruction, PtychopyOptions]:
    """The numpy API: frames already cropped and centred, positions in metres (row, col)."""
    cfg, opts = parse_kwargs(algorithm, **kw)
    arrays = {"diffractionNP": diffractionNP, "positionNP": positionNP, "objectNP": objectNP,
              "probeNP": probeNP}
    return _build(cfg, opts, comm, arrays), opts
