"""ptychopy's parameters: value converters, the :data:`PARAMETERS` table (config target,
converter, note), its Python keywords, both sets of defaults and :class:`PtychopyOptions`."""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ...model.geometry import kev_from_wavelength

OUTPUT_DIR = "data"  # ptychopy writes data/<jobID>_* relative to the working directory
SIMULATION_PHOTONS = 1e6  # photons per simulated frame (ptychopy's lena/baboon has none)
_DISPLAY = {"epie": "ePIE", "dm": "DM", "lsqml": "MLs"}


# ----------------------------------------------------------------------------- converters
def _text(v: Any) -> str:
    if v is None:
        raise ValueError("expected a value")
    return str(v).strip()


def _float(v: Any, *, low: float | None = None, positive: bool = False) -> float:
    if isinstance(v, bool):
        raise ValueError("expected a number")
    try:
        x = float(_text(v)) if isinstance(v, str) else float(v)
    except (TypeError, ValueError):
        raise ValueError("expected a number") from None
    if not math.isfinite(x):
        raise ValueError("expected a finite number")
    if positive and not x > 0:
        raise ValueError("expected a positive number")
    if low is not None and x < low:
        raise ValueError(f"expected a number >= {low:g}")
    return x


def _int(v: Any, *, low: int | None = None) -> int:
    if isinstance(v, bool):
        return int(v)
    try:
        x = float(_text(v)) if isinstance(v, str) else float(v)
    except (TypeError, ValueError):
        raise ValueError("expected an integer") from None
    if not (math.isfinite(x) and x.is_integer()):
        raise ValueError("expected an integer")
    if low is not None and x < low:
        raise ValueError(f"expected an integer >= {low}")
    return int(x)


def _atoi(v: Any) -> int:
    """C ``atoi`` as ptychopy's ``-qxy``/``-nxy``: ``282.7`` -> 282."""
    x = _float(v)
    return int(x)


def _bool(v: Any) -> bool:
    """A flag: no value = true; 0/1, true/false, yes/no, on/off."""
    if v is None or isinstance(v, bool):
        return True if v is None else v
    if isinstance(v, (int, float, np.integer, np.floating)):
        return bool(v)
    s = _text(v).lower()
    if s in ("", "true", "yes", "on", "t", "y"):
        return True
    if s in ("false", "no", "off", "f", "n"):
        return False
    try:
        return float(s) != 0
    except ValueError:
        raise ValueError("expected 0 or 1") from None


def _pair(v: Any, one: Callable[[Any], Any]) -> list:
    """``"a,b"`` or a 2-sequence -> ``[a, b]``; one value -> ``[a, a]``."""
    if isinstance(v, str):
        parts = _text(v).strip("()[]").split(",")
        if parts and parts[-1].strip() == "" and len(parts) > 1:
            parts = parts[:-1]
    elif isinstance(v, (Sequence, np.ndarray)):
        parts = list(v)
    else:
        parts = [v]
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise ValueError("expected one value or a pair a,b")
    return [one(p) for p in parts]


def _algorithm(v: Any) -> str:
    s = _text(v).lower()
    names = {"epie": "epie", "dm": "dm", "mls": "lsqml", "lsqml": "lsqml", "ml": "lsqml"}
    if s not in names:
        near = difflib.get_close_matches(s, ["epie", "dm", "mls"], 1)
        hint = f"; did you mean {dict(epie='ePIE', dm='DM', mls='MLs')[near[0]]}?" if near else ""
        raise ValueError(f"expected ePIE, DM or MLs{hint}")
    return names[s]


def _pattern(v: Any) -> str | None:
    s = _text(v)
    if not s:
        return None  # ptychopy's keyword default "": no files
    ext = os.path.splitext(s)[1].lower()
    if ext in (".csv", ".bin"):
        raise ValueError(f"ptychompi reads HDF5 row files (.h5) and CXI files, not raw {ext} "
                         "frames; convert them to HDF5 (ptychompi.io.aps.write_aps)")
    return s.replace("#", "%", 1)  # ptychopy: the first '#' is the printf '%'


def _path_or_none(v: Any) -> str | None:
    s = _text(v)
    return s or None


def _dataset(v: Any) -> str | None:
    s = _text(v)
    return s or None  # ptychopy keeps /entry/data/data for an empty name


def _update_start(v: Any) -> int:
    return max(_int(v, low=0) - 1, 0)


def _rotate(v: Any) -> int:
    return _int(v) % 4


def _energy(v: Any) -> float:
    return kev_from_wavelength(_float(v, positive=True))


class Param(NamedTuple):
    """One ptychopy parameter: config target (``None``: none), converter, note."""

    target: str | None
    convert: Callable[[Any], Any]
    note: str


def _pos_float(v: Any) -> float:
    return _float(v, positive=True)


def _nonneg_float(v: Any) -> float:
    return _float(v, low=0.0)


def _pos_int(v: Any) -> int:
    return _int(v, low=1)


def _nonneg_int(v: Any) -> int:
    return _int(v, low=0)


PARAMETERS: dict[str, Param] = {
    "jobID": Param(None, _text, "run tag: output names data/<jobID>_object_0.csv etc."),
    "algorithm": Param("algorithm.name", _algorithm,
                       "ePIE/DM/MLs -> epie/dm/lsqml; the A*() functions set it themselves"),
    "fp": Param("data.path", _pattern,
                "HDF5 row-file pattern; the first '#' becomes '%' (scan152_data_#06d.h5); "
                "a .cxi file also works"),
    "fs": Param("data.first_index", _nonneg_int, "index of the first file"),
    "hdf5path": Param("data.dataset", _dataset, "dataset in each file (empty: the default)"),
    "dpf": Param("data.frames_per_file", _pos_int,
                 "frames per file (not given: read from the files)"),
    "beamSize": Param("algorithm.probe_diameter_m", _pos_float,
                      "nominal beam size (m): starting probe; simulated beam diameter"),
    "probeGuess": Param("algorithm.probe_guess", _path_or_none,
                        "starting probe CSV (modes stacked vertically, or mode 0)"),
    "objectGuess": Param("algorithm.object_guess", _path_or_none,
                         "starting object CSV; another shape is centred in the object"),
    "size": Param("preprocess.crop_size", lambda v: _int(v, low=2),
                  "frame size: crops frames larger than this; simulated frame size"),
    "qxy": Param("preprocess.center", lambda v: _pair(v, _atoi),
                 "crop centre row,col in raw pixels (atoi: 282.0 -> 282); "
                 "not given: centre of mass"),
    "nxy": Param(None, lambda v: _pair(v, _atoi),
                 "no effect: raw .csv/.bin frame size; HDF5 frames give their own size"),
    "scanDims": Param("data.scan_dims", lambda v: _pair(v, _pos_int),
                      "raster rows,cols; also the frame count for -lf and -spiralScan"),
    "step": Param("data.step_m", lambda v: _pair(v, _pos_float),
                  "step row,col (m); one value = both axes, as a float (ptychopy: atoi)"),
    "spiralScan": Param("data.positions", lambda v: "spiral" if _bool(v) else None,
                        "spiral positions r = sqrt(k) step, theta = 4 sqrt(k)"),
    "flipScanAxis": Param("geometry.transpose_positions", _bool, "swap row and column"),
    "mirror1stScanAxis": Param("geometry.flip_positions[0]", _bool,
                               "reverse the 1st scan axis (before -flipScanAxis)"),
    "mirror2ndScanAxis": Param("geometry.flip_positions[1]", _bool,
                               "reverse the 2nd scan axis (before -flipScanAxis)"),
    "probeModes": Param("algorithm.probe_modes", _pos_int, "incoherent probe modes"),
    "lambda": Param("geometry.energy_kev", _energy, "wavelength (m), stored as energy (keV)"),
    "dx_d": Param("geometry.detector_pixel_m", _pos_float, "detector pixel (m)"),
    "z": Param("geometry.distance_m", _pos_float, "sample-detector distance (m)"),
    "i": Param("algorithm.iterations", _nonneg_int, "iterations (Python keyword: iter)"),
    "T": Param(None, _float, "whole mode: stop after T seconds of phasing (<= 0: off)"),
    "jitterRadius": Param(None, _nonneg_float,
                          "uniform +-r pixel jitter added to raster positions (seeded)"),
    "delta_p": Param(None, _nonneg_float,
                     "MLs LSQ damping: parsed (ptychopy drops it); ptychompi's LSQML uses "
                     "0.1, ptychopy's value, so others only warn"),
    "threshold": Param("preprocess.threshold", _nonneg_float,
                       "values below -> 0, others minus it (ptychopy stopped applying it)"),
    "rotate90": Param("preprocess.rotate90", _rotate, "rotate frames n x 90 degrees (ccw)"),
    "sqrtData": Param("preprocess.amplitudes", _bool,
                      "frames are intensities: amplitudes = not sqrtData for ePIE/DM; "
                      "MLs always takes intensities"),
    "fftShiftData": Param(None, _bool,
                          "no effect: ptychompi expects centred frames and shifts them itself"),
    "bitDepth": Param("preprocess.bit_depth", _pos_int,
                      "pixels >= 2^bitDepth - 1 are saturated and left out"),
    "binaryOutput": Param(None, _bool, "write .bin (raw complex64) instead of .csv"),
    "simulate": Param(None, _bool,
                      "simulated raster scan from -size/-scanDims/-step/-beamSize/-lambda/"
                      "-z/-dx_d (ptychompi.sim.simulate; 1e6 photons per frame)"),
    "phaseConstraint": Param(None, _nonneg_int,
                             "no effect: ptychompi has no object phase clamp"),
    "updateProbe": Param("algorithm.probe_update_start", _update_start,
                         "probe updates from iteration N counted from 1 (= N-1 from 0)"),
    "updateModes": Param(None, _nonneg_int,
                         "no effect: all modes update from -updateProbe, orthogonalised"),
    "updateVis": Param(None, _int, "no effect: no visualisation"),
    "blind": Param(None, _bool, "no effect: no visualisation"),
    "beamstopMask": Param(None, _bool,
                          "read <folder of -fp>/beamstopMask.h5 (value < 0.99 = blocked)"),
    "lf": Param("data.position_file", _path_or_none,
                "CSV of row,col positions in metres (positions: file)"),
    "PPS": Param(None, _nonneg_int, "no effect: ptychompi has no position search"),
    "overlap": Param(None, _nonneg_int,
                     "no effect: ptychompi exchanges exactly the overlapping windows"),
    "shareFrequency": Param("parallel.share_frequency", _pos_int,
                            "iterations between object exchanges (default 1, not 10)"),
    "RMS": Param(None, _bool, "accepted: ptychompi always computes and reports its error"),
    "save": Param(None, _int, "whole mode: also write data/<jobID>_*_<i/N> every N iterations"),
    "threads": Param(None, _int, "no effect: IO threads (ptychompi reads per rank)"),
    "angles": Param(None, _int, "no effect: unused by ptychopy's reconstruction too"),
    "drift": Param(None, lambda v: _pair(v, _float),
                   "linear drift a,b (m per row/col index) added to raster positions"),
    "wsServerUrl": Param(None, _text, "no effect: no render server"),
}

# Python keyword -> (parameter, index of a pair or None)
PY_KEYWORDS: dict[str, tuple[str, int | None]] = {
    **{name: (name, None) for name in PARAMETERS},
    "qx": ("qxy", 0), "qy": ("qxy", 1), "nx": ("nxy", 0), "ny": ("nxy", 1),
    "scanDimsx": ("scanDims", 0), "scanDimsy": ("scanDims", 1),
    "stepx": ("step", 0), "stepy": ("step", 1), "lambd": ("lambda", None),
    "iter": ("i", None),
}

# ptychopy's defaults where they define the reconstruction (the C++ struct for command
# strings, ``ptychopy.c`` for keywords); parameters absent here keep ptychompi's defaults
CPP_DEFAULTS: dict[str, Any] = {
    "jobID": "", "algorithm": "epie", "fs": 0, "beamSize": 1e-7, "size": 256,
    "scanDims": [12, 12], "step": [40e-9, 40e-9], "probeModes": 1, "lambda": 2.48e-10,
    "dx_d": 172e-6, "z": 1.0, "i": 100, "T": -1.0, "jitterRadius": 0.0, "delta_p": 0.1,
    "sqrtData": False, "updateProbe": 10, "save": 999999, "drift": [0.0, 0.0],
}
PY_DEFAULTS: dict[str, Any] = {
    **CPP_DEFAULTS, "beamSize": 400e-9, "size": 512, "scanDims": [26, 26],
    "lambda": 2.3843e-10, "z": 2.2, "T": 0.0,
}
_PAIR_FILL = {"qxy": [128, 128], "nxy": [256, 256]}  # ptychopy's qx/qy, nx/ny keyword defaults

_NO_EFFECT = ("nxy", "fftShiftData", "phaseConstraint", "updateModes", "updateVis", "blind",
              "PPS", "overlap", "RMS", "threads", "angles", "wsServerUrl")
_LOWER = {name.lower(): name for name in PARAMETERS}
_PY_LOWER = {name.lower(): name for name in PY_KEYWORDS}


@dataclass
class PtychopyOptions:
    """What a ptychopy command holds beyond the :class:`Config` (resolved, with defaults)."""

    job_id: str = ""
    algorithm: str = "epie"
    simulate: bool = False
    size: int = 256  # -size (the simulated frame size; crops only frames larger than it)
    size_given: bool = False
    scan_dims: tuple[int, int] = (12, 12)
    step_m: tuple[float, float] = (40e-9, 40e-9)
    beam_size_m: float = 1e-7
    wavelength_m: float = 2.48e-10
    distance_m: float = 1.0
    detector_pixel_m: float = 172e-6
    jitter_radius_px: float = 0.0
    drift_m: tuple[float, float] = (0.0, 0.0)
    time_limit_s: float = -1.0  # -T; <= 0: no limit
    save_every: int = 999999  # -save
    binary_output: bool = False
    beamstop_mask: bool = False
    delta_p: float = 0.1
    given: dict[str, Any] = field(default_factory=dict)  # parameters as given, converted
    no_effect: list[str] = field(default_factory=list)  # given parameters without effect
    cmdstr: str = ""
    simulation: Any = field(default=None, repr=False)  # ptychompi.sim.simulate.Simulation
