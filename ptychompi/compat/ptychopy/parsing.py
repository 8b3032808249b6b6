"""ptychopy command strings and keywords parsed into a :class:`~ptychompi.config.Config` and
:class:`~.params.PtychopyOptions` (unknown keys and bad values: one-line ConfigError)."""

from __future__ import annotations

import difflib
import logging
import math
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from ...config import Config, config_from_dict
from ...errors import ConfigError
from ...model.geometry import wavelength_from_kev
from .params import (
    _DISPLAY,
    _LOWER,
    _NO_EFFECT,
    _PAIR_FILL,
    _PY_LOWER,
    CPP_DEFAULTS,
    OUTPUT_DIR,
    PARAMETERS,
    PY_DEFAULTS,
    PY_KEYWORDS,
    PtychopyOptions,
    _bool,
)

log = logging.getLogger("ptychompi.compat.ptychopy")


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
