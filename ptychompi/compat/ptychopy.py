"""APS ptychopy compatibility: its command strings, its Python keywords and its functions.

Existing beamline scripts run unchanged::

    import ptychompi.compat.ptychopy as ptychopy
    ptychopy.epieinit("./ptycho -jobID=sim512 -beamSize=110e-9 -scanDims=30,30 "
                      "-step=50e-9,50e-9 -i=100 -size=512 -lambda=2.4796837508399954e-10 "
                      "-dx_d=172e-6 -z=1 -simulate=1")
    for i in range(100):
        ptychopy.epiestep()
    obj, probe = ptychopy.epieresobj(), ptychopy.epieresprobe()
    ptychopy.epiepost()          # data/sim512_object_0.csv, data/sim512_probes_0.csv

Entry points (``A`` = ``epie``, ``dm``, ``lsqml`` or its alias ``mls``; each takes ``comm=``,
an mpi4py communicator, ``None`` = this process alone):

* :func:`parse` / :func:`parse_full`: a command string to a :class:`~ptychompi.config.Config`
  (plus :class:`PtychopyOptions`, the parameters without a config key);
  :func:`reconstruction_from_cmdstr` builds the :class:`~ptychompi.api.Reconstruction`
  (``ptychompi run --ptychopy``); :func:`run_whole` and :func:`write_outputs` finish it.
* whole mode: ``A(**kw)`` or ``A(cmdstr)`` and ``Anp(diffractionNP=, positionNP=, objectNP=,
  probeNP=, **kw)`` return ``True``; ``Acmdstr(cmdstr)`` returns the object.
* step mode: ``Ainit(cmdstr or **kw)``, ``Anpinit(diffractionNP=, ...)``, ``Astep()``,
  ``Aresobj()``, ``Aresprobe()``, ``Apost()``. ptychopy's step API is stateful by design, so
  the open reconstruction lives in a module-level registry with one slot per algorithm
  (``mls`` shares the ``lsqml`` slot; a second ``Ainit`` closes the first); ``Apost`` writes
  the files, closes the reconstruction and frees the slot. On several ranks every function is
  collective: call it on every rank. ``Aresobj()`` returns the assembled object on rank 0 and
  ``None`` on the other ranks; ``Aresprobe()`` returns the probe on every rank.

Results: the object as a complex 2-D array (complex64 by default), the probe as ptychopy
stacks it, ``(K*M, M)`` complex. Files, written by rank 0 as ptychopy does, relative to the
working directory (``data/`` is created): ``data/<jobID>_object_0.csv`` and
``data/<jobID>_probes_0.csv`` (``.bin`` with ``-binaryOutput=1``; ``_<i/N>`` every N iterations
with ``-save=N`` in whole mode), plus ptychompi's result file ``data/<jobID>_result.h5``.

Parameters: :data:`PARAMETERS` lists every ptychopy parameter with its config target, its
converter and a note; :data:`PY_KEYWORDS` maps ptychopy's Python keywords onto them. Keys are
case-insensitive, the leading dash is optional, the first token (``./ptycho``) is the program
name and is ignored, flags may come without a value (``-sqrtData``), pairs are ``a,b``.
Unknown parameters and bad values raise a one-line :class:`~ptychompi.errors.ConfigError`.
Defaults are ptychopy's own: the C++ struct defaults for command strings, the (different)
keyword defaults of ``ptychopy.c`` for the keyword functions (``PTYCHOPY.md`` section 1).

Where ptychompi deliberately differs from ptychopy (its defects fixed, or no equivalent):

* ``-step=50e-9`` (one value) is a float step for both axes (ptychopy's ``atoi`` made it 50).
* ``-delta_p`` is parsed and checked (both ptychopy parsers drop it); ptychompi's LSQML uses
  a fixed 0.1, ptychopy's value, so other values only draw a warning.
* ``-sqrtData``, ``-threshold``, ``-bitDepth`` act as ptycholib intended (ptychopy stopped
  applying them in 2021): ePIE/DM frames are Fourier moduli unless ``-sqrtData`` says they
  are intensities (``preprocess.amplitudes = not sqrtData``); MLs always takes intensities,
  as ptychopy's ``prePhase`` does. Simulated frames are intensities.
* ``-updateProbe=N`` starts probe updates in iteration N counted from 1, as ptychopy, which
  is ``probe_update_start = N-1`` in ptychompi's 0-based count.
* ``-size`` crops only frames larger than ``size``; ``-qxy`` is the crop centre; without
  ``-qxy`` ptychompi uses the centre of mass (ptychopy's default 128,128 is a 256-pixel
  detector's centre). Frames smaller than the window are an error (ptychopy zero-pads).
* ``-shareFrequency`` defaults to 1 (exact halo exchange every iteration, DESIGN.md 6), not
  ptychopy's 10. ``-RMS`` is accepted: ptychompi always reports its error metric.
* ``-beamstopMask=1`` reads ``<folder of -fp>/beamstopMask.h5`` (the ``-hdf5path`` dataset,
  first frame) with ptychopy's meaning, value < 0.99 = blocked.
* ``-fftShiftData`` has no effect: ptychompi expects centred frames (files, and the arrays of
  the numpy API) and shifts them itself. ``-rotate90`` is counter-clockwise (``np.rot90``).
* ``-mirror1stScanAxis``/``-mirror2ndScanAxis``/``-flipScanAxis`` also apply to ``-lf``
  position lists; ``-drift`` and ``-jitterRadius`` apply to raster scans of files, and
  ``-jitterRadius`` to simulated scans.
* ``-simulate=1`` simulates with :func:`ptychompi.simulate.simulate` (a Siemens-star object,
  not lena/baboon): ``-size`` pixel frames, a ``-scanDims`` raster (equal steps on both axes),
  object pixel ``lambda z / (size dx_d)``, beam diameter ``beamSize`` / pixel (it must fit the
  frame), 1e6 photons per frame with Poisson noise, seed ``algorithm.seed``.
* ``-fp`` reads HDF5 row files (and CXI files); ptychopy's raw ``.csv``/``.bin`` frames are
  refused. ``-T`` and ``-save`` act in whole mode only.
* Object arrays carry ptychompi's margin (``geometry.object_margin_px``) and may be a few
  pixels larger than ptychopy's; an ``-objectGuess``/``objectNP`` of another shape is centred
  in (or cropped to) ptychompi's object.
* Stepping past ``-i`` iterations is allowed (ptychopy overran its error array), the registry
  holds one reconstruction per algorithm (ptychopy had one global phaser), and keyword errors
  raise (ptychopy printed them and went on).
* No effect, accepted: ``-nxy``, ``-threads``, ``-overlap``, ``-angles``, ``-blind``,
  ``-updateVis``, ``-wsServerUrl``, ``-phaseConstraint``, ``-updateModes``, ``-PPS`` (see
  their notes in :data:`PARAMETERS`).
"""

from __future__ import annotations

import copy
import difflib
import logging
import math
import os
import shlex
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..api import Reconstruction, agree
from ..config import Config, config_from_dict
from ..errors import ConfigError, DataError, PtychompiError
from ..geometry import farfield_pixel_size, kev_from_wavelength, wavelength_from_kev
from ..scan import ArrayScan, ScanGeometry, ScanSource

__all__ = [
    "PARAMETERS", "PY_KEYWORDS", "CPP_DEFAULTS", "PY_DEFAULTS", "PtychopyOptions",
    "StepSession", "parse", "parse_full", "parse_kwargs", "reconstruction_from_cmdstr",
    "reconstruction_from_kwargs", "reconstruction_from_arrays", "run_whole", "write_outputs",
    "step_session",
    "epie", "dm", "lsqml", "mls",
    "epiecmdstr", "dmcmdstr", "lsqmlcmdstr", "mlscmdstr",
    "epienp", "dmnp", "lsqmlnp", "mlsnp",
    "epieinit", "dminit", "lsqmlinit", "mlsinit",
    "epienpinit", "dmnpinit", "lsqmlnpinit", "mlsnpinit",
    "epiestep", "dmstep", "lsqmlstep", "mlsstep",
    "epieresobj", "dmresobj", "lsqmlresobj", "mlsresobj",
    "epieresprobe", "dmresprobe", "lsqmlresprobe", "mlsresprobe",
    "epiepost", "dmpost", "lsqmlpost", "mlspost",
]

log = logging.getLogger("ptychompi.compat.ptychopy")

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
                      "-z/-dx_d (ptychompi.simulate; 1e6 photons per frame)"),
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
    simulation: Any = field(default=None, repr=False)  # ptychompi.simulate.Simulation


# ----------------------------------------------------------------------------- parsing
def _canonical(key: str, table: Mapping[str, str], candidates: Sequence[str],
               kind: str) -> str:
    name = table.get(key.lower())
    if name is None:
        near = difflib.get_close_matches(key.lower(), list(table), 1, cutoff=0.6)
        dash = "-" if kind == "parameter" else ""
        hint = (f"; did you mean {dash}{table[near[0]]}?" if near else
                f"; known: {', '.join(candidates[:12])}, ...")
        raise ConfigError(f"unknown ptychopy {kind} {dash}{key}{hint}")
    return name


def _convert(name: str, value: Any, label: str) -> Any:
    try:
        return PARAMETERS[name].convert(value)
    except ValueError as exc:
        raise ConfigError(f"ptychopy {label} = {value!r}: {exc}") from None


def _tokens(cmdstr: str) -> dict[str, Any]:
    """``-key=value`` tokens (after the program name) -> {parameter: converted value}."""
    if not isinstance(cmdstr, str):
        raise ConfigError(f"a ptychopy command string must be a str, got {type(cmdstr).__name__}")
    try:
        tokens = shlex.split(cmdstr)
    except ValueError as exc:
        raise ConfigError(f"cannot split the ptychopy command string ({exc}); "
                          "check its quotes") from None
    if tokens:
        first = tokens[0].lstrip("-").split("=", 1)[0].lower()
        if first in _LOWER and (tokens[0].startswith("-") or "=" in tokens[0]):
            log.warning("the first word of a ptychopy command string is the program name and "
                        "is ignored: %r (start the string with ./ptycho)", tokens[0])
    values: dict[str, Any] = {}
    for tok in tokens[1:]:
        body = tok[2:] if tok.startswith("--") else tok[1:] if tok.startswith("-") else tok
        key, eq, raw = body.partition("=")
        name = _canonical(key.strip(), _LOWER, list(PARAMETERS), "parameter")
        if not eq and PARAMETERS[name].convert is not _bool:
            raise ConfigError(f"ptychopy parameter -{name} needs a value: -{name}=...")
        values[name] = _convert(name, raw if eq else None, f"parameter -{name}")
    return values


def _kwargs(kw: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """ptychopy's Python keywords -> {parameter: converted value}."""
    values: dict[str, Any] = {}
    pairs: dict[str, dict[int, Any]] = {}
    for key, value in kw.items():
        py = _canonical(key, _PY_LOWER, list(PY_KEYWORDS), "keyword")
        name, index = PY_KEYWORDS[py]
        if index is None:
            values[name] = _convert(name, value, f"keyword {py}")
        else:
            pairs.setdefault(name, {})[index] = (py, value)
    for name, parts in pairs.items():
        default = defaults.get(name, _PAIR_FILL.get(name))
        if default is None and len(parts) < 2:
            missing = [k for k, (n, i) in PY_KEYWORDS.items() if n == name and i not in parts]
            raise ConfigError(f"ptychopy keyword {missing[0]} is needed with "
                              f"{parts[next(iter(parts))][0]}")
        merged = [parts[i][1] if i in parts else default[i] for i in (0, 1)]
        label = "/".join(parts[i][0] for i in sorted(parts))
        values[name] = _convert(name, merged, f"keyword {label}")
    return values


def _set(tree: dict, target: str, value: Any) -> None:
    section, key = target.split(".", 1)
    node = tree.setdefault(section, {})
    if key.endswith("]"):
        key, idx = key[:-1].split("[")
        lst = node.setdefault(key, [False, False])
        lst[int(idx)] = value
    else:
        node[key] = value


def _resolve(given: dict[str, Any], defaults: Mapping[str, Any], algorithm: str | None,
             cmdstr: str = "") -> tuple[Config, PtychopyOptions]:
    """Parameters (converted) + ptychopy defaults -> (Config, PtychopyOptions)."""
    v: dict[str, Any] = {}
    for name, default in defaults.items():
        if default is not None:
            v[name] = _convert(name, default, f"default -{name}")
    v.update(given)
    if algorithm is not None:
        if "algorithm" in given and given["algorithm"] != algorithm:
            log.warning("-algorithm=%s ignored: this function runs %s", given["algorithm"],
                        _DISPLAY[algorithm])
        v["algorithm"] = algorithm
    tree: dict[str, dict] = {}
    for name, value in v.items():
        target = PARAMETERS[name].target
        if target is None or value is None:
            continue
        if name == "size" and "size" not in given:
            continue  # ptychopy's default size does not crop; it sizes simulations
        _set(tree, target, value)
    algo = v.get("algorithm", "epie")
    pre = tree.setdefault("preprocess", {})
    pre["amplitudes"] = (not v.get("sqrtData", False)) and algo != "lsqml"
    geo = tree.setdefault("geometry", {})
    if geo.get("transpose_positions") and "flip_positions" in geo:
        geo["flip_positions"] = geo["flip_positions"][::-1]  # mirror first, then swap
    data = tree.setdefault("data", {})
    if v.get("lf"):
        if v.get("spiralScan") == "spiral":
            raise ConfigError("ptychopy parameters -lf and -spiralScan=1 exclude each other; "
                              "give one")
        data["positions"] = "file"
    tree.setdefault("output", {})["directory"] = OUTPUT_DIR
    try:
        cfg = config_from_dict(tree)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (from the ptychopy parameters)") from None

    opts = PtychopyOptions(
        job_id=v.get("jobID", ""), algorithm=algo, simulate=bool(v.get("simulate", False)),
        size=int(v.get("size", 256)), size_given="size" in given,
        scan_dims=tuple(v.get("scanDims", (12, 12))), step_m=tuple(v.get("step", (40e-9,) * 2)),
        beam_size_m=float(v.get("beamSize", 1e-7)),
        wavelength_m=wavelength_from_kev(float(cfg.geometry.energy_kev)),
        distance_m=float(cfg.geometry.distance_m or 1.0),
        detector_pixel_m=float(cfg.geometry.detector_pixel_m or 172e-6),
        jitter_radius_px=float(v.get("jitterRadius", 0.0)),
        drift_m=tuple(v.get("drift", (0.0, 0.0))), time_limit_s=float(v.get("T", -1.0)),
        save_every=int(v.get("save", 999999)), binary_output=bool(v.get("binaryOutput", False)),
        beamstop_mask=bool(v.get("beamstopMask", False)),
        delta_p=float(v.get("delta_p", 0.1)), given=dict(given),
        no_effect=[n for n in given if n in _NO_EFFECT], cmdstr=cmdstr)
    if not math.isclose(opts.delta_p, 0.1):
        log.warning("-delta_p=%g has no effect: ptychompi's LSQML damping is fixed at 0.1",
                    opts.delta_p)
    return cfg, opts


def parse_full(cmdstr: str, *, algorithm: str | None = None) -> tuple[Config, PtychopyOptions]:
    """A ptychopy command string -> ``(Config, PtychopyOptions)``.

    ``algorithm`` (epie | dm | lsqml) overrides ``-algorithm`` (the ``A*`` functions). Unknown
    parameters and bad values raise a one-line :class:`ConfigError`.
    """
    return _resolve(_tokens(cmdstr), CPP_DEFAULTS, algorithm, cmdstr)


def parse(cmdstr: str) -> Config:
    """A ptychopy command string (``./ptycho -key=value ...``) -> :class:`Config`."""
    return parse_full(cmdstr)[0]


def parse_kwargs(algorithm: str | None = None, **kw: Any) -> tuple[Config, PtychopyOptions]:
    """ptychopy's Python keywords (``fp=``, ``lambd=``, ``iter=``, ...) -> config and options."""
    return _resolve(_kwargs(kw, PY_DEFAULTS), PY_DEFAULTS, algorithm)


# ----------------------------------------------------------------------------- building
def _simulated_scan(opts: PtychopyOptions, cfg: Config) -> ArrayScan:
    """``-simulate=1``: a raster scan from ptychompi.simulate with ptychopy's geometry."""
    from ..simulate import simulate  # noqa: PLC0415

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
    import h5py  # noqa: PLC0415

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
    from ..dataset import open_source  # noqa: PLC0415

    if not cfg.data.path:
        raise ConfigError("no data: give -fp=<file pattern> (or -simulate=1)")
    source = open_source(cfg)
    jitter, drift = opts.jitter_radius_px, opts.drift_m
    if jitter or any(drift):
        if source.metadata.get("positions") == "raster":
            from ..io.aps import raster_positions  # noqa: PLC0415

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
    from ..dataset import plan_layout  # noqa: PLC0415
    from ..initial import read_array_file  # noqa: PLC0415

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


# ----------------------------------------------------------------------------- outputs
def _stacked(probe: np.ndarray) -> np.ndarray:
    probe = np.asarray(probe)
    return probe.reshape(-1, probe.shape[-1])


def write_outputs(recon: Reconstruction, opts: PtychopyOptions, index: int = 0, *,
                  final: bool = True, directory: str | os.PathLike = OUTPUT_DIR) -> list[str]:
    """ptychopy's files ``<directory>/<jobID>_{object,probes}_<index>.csv|.bin`` (collective).

    Rank 0 writes; with ``final`` also ``<jobID>_result.h5``. Returns the paths (rank 0).
    """
    obj = recon.object  # collective
    probe = _stacked(recon.probe)
    written: list[str] = []
    error: BaseException | None = None
    if recon.rank == 0:
        try:
            written = _write_files(recon, opts, obj, probe, index, final, Path(directory))
        except Exception as exc:  # noqa: BLE001 - any failure is reported on every rank below
            error = exc
    agree(recon.comm, error)
    return written


def _write_files(recon: Reconstruction, opts: PtychopyOptions, obj: np.ndarray,
                 probe: np.ndarray, index: int, final: bool, out: Path) -> list[str]:
    from ..io.export import write_ptychopy_csv  # noqa: PLC0415

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PtychompiError(f"cannot create the output folder {str(out)!r} "
                             f"({exc.strerror or exc}); run from a writable folder") from None
    ext = ".bin" if opts.binary_output else ".csv"
    if final:
        log.info("Writing final reconstruction (%d,%d) to disk...", *obj.shape)
    paths = []
    for name, arr in (("object", obj), ("probes", probe)):
        path = out / f"{opts.job_id}_{name}_{index}{ext}"
        if opts.binary_output:
            np.ascontiguousarray(arr, dtype=np.complex64).tofile(path)
        else:
            write_ptychopy_csv(path, arr)
        paths.append(str(path))
    if final:
        paths.append(_write_result(recon, opts, obj, out / f"{opts.job_id}_result.h5"))
    return paths


def _write_result(recon: Reconstruction, opts: PtychopyOptions, obj: np.ndarray,
                  path: Path) -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    from ..io.results import ResultData, write_result  # noqa: PLC0415
    from ..provenance import run_settings  # noqa: PLC0415

    try:
        ver = version("ptychompi")
    except PackageNotFoundError:
        ver = "unknown"
    metrics = recon.metrics
    prov = {"version": ver, "ranks": recon.size, "algorithm": recon.config.algorithm.name,
            "iterations_done": int(metrics["iterations"]),
            "wall_time_s": float(time.perf_counter() - recon.started),
            "interface": "ptychopy", "ptychopy_command": opts.cmdstr, "job_id": opts.job_id,
            **run_settings(recon)}
    write_result(path, ResultData(object=obj, probe=recon.probe, positions=recon.positions,
                                  error=np.asarray(metrics["error"], np.float64),
                                  pixel_size=float(recon.layout.pixel_size_m),
                                  config_yaml=recon.config.to_yaml(), provenance=prov))
    return str(path)


def _log_iteration(recon: Reconstruction, metrics: dict) -> None:
    if recon.rank == 0:
        name = _DISPLAY.get(recon.config.algorithm.name, recon.config.algorithm.name)
        log.info("%s Iteration [%05d] --- step time= %f", name, metrics["iteration"],
                 metrics.get("seconds", 0.0))
        log.info("%s Iteration [%05d] --- RMS= %e", name, metrics["iteration"],
                 metrics["error"])


def run_whole(recon: Reconstruction, opts: PtychopyOptions,
              callback: Callable[[dict], None] | None = None) -> dict:
    """Whole mode as ptychopy: ``-i`` iterations, ``-T`` time limit, ``-save`` files."""
    limit = opts.time_limit_s
    save = opts.save_every
    t0 = time.perf_counter()
    while recon.iteration < recon.config.algorithm.iterations:
        metrics = recon.step()
        _log_iteration(recon, metrics)
        if callback is not None:
            callback(metrics)
        if save > 0 and recon.iteration % save == 0:
            write_outputs(recon, opts, recon.iteration // save, final=False)
        if limit > 0:
            stop = time.perf_counter() - t0 > limit
            if recon.comm is not None and recon.size > 1:
                stop = recon.comm.bcast(stop, root=0)  # rank 0's clock decides for all
            if stop:
                log.info("time limit -T=%g s reached after %d iterations", limit,
                         recon.iteration)
                break
    return recon.metrics


# ----------------------------------------------------------------------------- step mode
@dataclass
class StepSession:
    """An open step-mode reconstruction (one per algorithm slot)."""

    reconstruction: Reconstruction
    options: PtychopyOptions
    comm: Any | None


_SESSIONS: dict[str, StepSession] = {}  # ptychopy's step API is stateful by design


def _slot(name: str) -> str:
    return "lsqml" if name in ("mls", "lsqml") else name


def step_session(algorithm: str) -> StepSession | None:
    """The open step-mode session of ``algorithm`` (epie | dm | lsqml | mls), if any."""
    return _SESSIONS.get(_slot(algorithm))


def _open(name: str, recon: Reconstruction, opts: PtychopyOptions, comm: Any | None) -> bool:
    slot = _slot(name)
    old = _SESSIONS.pop(slot, None)
    if old is not None:
        log.warning("%sinit: closing the open %s reconstruction without writing it", name,
                    slot)
        old.reconstruction.close()
    _SESSIONS[slot] = StepSession(recon, opts, comm)
    return True


def _session(name: str, func: str, comm: Any | None) -> StepSession:
    s = _SESSIONS.get(_slot(name))
    if s is None:
        raise ConfigError(f"{name}{func}() without an open reconstruction; call {name}init() "
                          "first")
    if comm is not None and s.comm is not None and comm != s.comm:
        raise ConfigError(f"{name}{func}(comm=...) differs from the communicator given to "
                          f"{name}init()")
    return s


def _algo(name: str) -> str:
    return "lsqml" if name == "mls" else name


def _make_whole(name: str) -> Callable[..., bool]:
    def whole(cmdstr: str | None = None, /, *, comm: Any | None = None, **kw: Any) -> bool:
        if cmdstr is not None:
            if kw:
                raise ConfigError(f"{name}(): give a command string or keywords, not both")
            recon, opts = reconstruction_from_cmdstr(cmdstr, comm, algorithm=_algo(name))
        else:
            recon, opts = reconstruction_from_kwargs(_algo(name), comm, **kw)
        with recon:
            run_whole(recon, opts)
            write_outputs(recon, opts)
        return True

    whole.__name__ = whole.__qualname__ = name
    whole.__doc__ = (f"Whole {_DISPLAY[_algo(name)]} run from ptychopy keywords (or a command "
                     "string); writes data/<jobID>_*; returns True.")
    return whole


def _make_cmdstr(name: str) -> Callable[..., np.ndarray | None]:
    def cmd(cmdstr: str, *, comm: Any | None = None) -> np.ndarray | None:
        recon, opts = reconstruction_from_cmdstr(cmdstr, comm, algorithm=_algo(name))
        with recon:
            run_whole(recon, opts)
            write_outputs(recon, opts)
            return recon.object

    cmd.__name__ = cmd.__qualname__ = f"{name}cmdstr"
    cmd.__doc__ = (f"Whole {_DISPLAY[_algo(name)]} run from a command string; writes the "
                   "files; returns the object (rank 0; None on other ranks).")
    return cmd


def _make_np(name: str) -> Callable[..., bool]:
    def np_run(*, comm: Any | None = None, diffractionNP: Any = None,  # noqa: N803
               positionNP: Any = None, objectNP: Any = None, probeNP: Any = None,  # noqa: N803
               **kw: Any) -> bool:
        recon, opts = reconstruction_from_arrays(
            _algo(name), comm, diffractionNP=diffractionNP, positionNP=positionNP,
            objectNP=objectNP, probeNP=probeNP, **kw)
        with recon:
            run_whole(recon, opts)
            write_outputs(recon, opts)
        return True

    np_run.__name__ = np_run.__qualname__ = f"{name}np"
    np_run.__doc__ = (f"Whole {_DISPLAY[_algo(name)]} run on numpy arrays (diffractionNP "
                      "(N, size, size) cropped and centred, positionNP (N, 2) metres row, col; "
                      "objectNP, probeNP optional); writes the files; returns True.")
    return np_run


def _make_init(name: str) -> Callable[..., bool]:
    def init(cmdstr: str | None = None, /, *, comm: Any | None = None, **kw: Any) -> bool:
        if cmdstr is not None:
            if kw:
                raise ConfigError(f"{name}init(): give a command string or keywords, not both")
            recon, opts = reconstruction_from_cmdstr(cmdstr, comm, algorithm=_algo(name))
        else:
            recon, opts = reconstruction_from_kwargs(_algo(name), comm, **kw)
        return _open(name, recon, opts, comm)

    init.__name__ = init.__qualname__ = f"{name}init"
    init.__doc__ = (f"Step mode: open a {_DISPLAY[_algo(name)]} reconstruction from a command "
                    "string or ptychopy keywords; returns True.")
    return init


def _make_npinit(name: str) -> Callable[..., bool]:
    def npinit(*, comm: Any | None = None, diffractionNP: Any = None,  # noqa: N803
               positionNP: Any = None, objectNP: Any = None, probeNP: Any = None,  # noqa: N803
               **kw: Any) -> bool:
        recon, opts = reconstruction_from_arrays(
            _algo(name), comm, diffractionNP=diffractionNP, positionNP=positionNP,
            objectNP=objectNP, probeNP=probeNP, **kw)
        return _open(name, recon, opts, comm)

    npinit.__name__ = npinit.__qualname__ = f"{name}npinit"
    npinit.__doc__ = (f"Step mode: open a {_DISPLAY[_algo(name)]} reconstruction on numpy "
                      "arrays; returns True.")
    return npinit


def _make_step(name: str) -> Callable[..., bool]:
    def step(*, comm: Any | None = None) -> bool:
        s = _session(name, "step", comm)
        _log_iteration(s.reconstruction, s.reconstruction.step())
        return True

    step.__name__ = step.__qualname__ = f"{name}step"
    step.__doc__ = "Step mode: one iteration (collective); returns True."
    return step


def _make_resobj(name: str) -> Callable[..., np.ndarray | None]:
    def resobj(*, comm: Any | None = None) -> np.ndarray | None:
        return _session(name, "resobj", comm).reconstruction.object

    resobj.__name__ = resobj.__qualname__ = f"{name}resobj"
    resobj.__doc__ = ("Step mode: the object, complex 2-D (collective; rank 0, None on the "
                      "other ranks).")
    return resobj


def _make_resprobe(name: str) -> Callable[..., np.ndarray]:
    def resprobe(*, comm: Any | None = None) -> np.ndarray:
        return _stacked(_session(name, "resprobe", comm).reconstruction.probe)

    resprobe.__name__ = resprobe.__qualname__ = f"{name}resprobe"
    resprobe.__doc__ = "Step mode: the probe modes stacked vertically, (K*M, M) complex."
    return resprobe


def _make_post(name: str) -> Callable[..., bool]:
    def post(*, comm: Any | None = None) -> bool:
        s = _session(name, "post", comm)
        try:
            write_outputs(s.reconstruction, s.options)
        finally:
            _SESSIONS.pop(_slot(name), None)
            s.reconstruction.close()
        return True

    post.__name__ = post.__qualname__ = f"{name}post"
    post.__doc__ = "Step mode: write data/<jobID>_* and close the reconstruction; returns True."
    return post


epie = _make_whole("epie")
dm = _make_whole("dm")
lsqml = _make_whole("lsqml")
mls = _make_whole("mls")
epiecmdstr = _make_cmdstr("epie")
dmcmdstr = _make_cmdstr("dm")
lsqmlcmdstr = _make_cmdstr("lsqml")
mlscmdstr = _make_cmdstr("mls")
epienp = _make_np("epie")
dmnp = _make_np("dm")
lsqmlnp = _make_np("lsqml")
mlsnp = _make_np("mls")
epieinit = _make_init("epie")
dminit = _make_init("dm")
lsqmlinit = _make_init("lsqml")
mlsinit = _make_init("mls")
epienpinit = _make_npinit("epie")
dmnpinit = _make_npinit("dm")
lsqmlnpinit = _make_npinit("lsqml")
mlsnpinit = _make_npinit("mls")
epiestep = _make_step("epie")
dmstep = _make_step("dm")
lsqmlstep = _make_step("lsqml")
mlsstep = _make_step("mls")
epieresobj = _make_resobj("epie")
dmresobj = _make_resobj("dm")
lsqmlresobj = _make_resobj("lsqml")
mlsresobj = _make_resobj("mls")
epieresprobe = _make_resprobe("epie")
dmresprobe = _make_resprobe("dm")
lsqmlresprobe = _make_resprobe("lsqml")
mlsresprobe = _make_resprobe("mls")
epiepost = _make_post("epie")
dmpost = _make_post("dm")
lsqmlpost = _make_post("lsqml")
mlspost = _make_post("mls")
