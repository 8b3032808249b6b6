"""Validation and loading: YAML or dicts coerced into the section dataclasses (one-line
:class:`~ptychompi.errors.ConfigError` naming the key), paths made absolute, environment
overrides."""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .engines import (
    ConfigDeprecationWarning,
    move_flat_keys,
)
from .sections import Config, ParallelConfig


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {type(None): "null", bool: "true/false", int: "an integer", float: "a number",
            str: "a string", dict: "a mapping"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp`` and return it converted."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} = {value!r}: expected {_type_name(tp)}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} = {value!r}: expected {_type_name(tp)}")
        inner = typing.get_args(tp)[0]
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} = {value!r}: expected a mapping of keys")
        return _build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads 1e-6 as a string
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict:
        if isinstance(value, dict):
            return value
    elif tp is Any:
        return value
    raise ConfigError(f"{where} = {value!r}: expected {_type_name(tp)}")


def _check_constraints(value: Any, meta: dict, where: str) -> None:
    items = value if isinstance(value, list) else [value]
    for v in items:
        if v is None:
            continue
        if meta.get("choices") and v not in meta["choices"]:
            near = difflib.get_close_matches(str(v), [str(c) for c in meta["choices"]], 1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"{where} = {v!r} is not one of {', '.join(meta['choices'])}{hint}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if meta.get("low") is not None and v < meta["low"]:
                raise ConfigError(f"{where} = {v!r} is below its minimum {meta['low']}")
            if meta.get("high") is not None and v > meta["high"]:
                raise ConfigError(f"{where} = {v!r} is above its maximum {meta['high']}")


def _build(cls: type, values: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), 1, cutoff=0.5)
            hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys: {', '.join(fields)}"
            raise ConfigError(f"unknown config key {path!r}{hint}")
        coerced = _coerce(value, hints[key], path)
        _check_constraints(coerced, dict(fields[key].metadata), path)
        kwargs[key] = coerced
    return cls(**kwargs)


def _check_combinations(cfg: Config) -> None:
    a = cfg.algorithm
    if (a.object_amplitude_min is not None and a.object_amplitude_max is not None
            and a.object_amplitude_min > a.object_amplitude_max):
        raise ConfigError("algorithm.object_amplitude_min is above object_amplitude_max; "
                          "swap them")
    if cfg.parallel.grid is not None and (len(cfg.parallel.grid) != 2
                                          or min(cfg.parallel.grid) < 1):
        raise ConfigError(f"parallel.grid = {cfg.parallel.grid}: expected [rows, cols] >= 1")
    for key in ("scan_dims", "step_m"):
        v = getattr(cfg.data, key)
        if v is not None and len(v) != 2:
            raise ConfigError(f"data.{key} = {v}: expected two values [rows, cols]")
    if cfg.preprocess.center is not None and len(cfg.preprocess.center) != 2:
        raise ConfigError(f"preprocess.center = {cfg.preprocess.center}: expected [row, col]")
    pc = a.position_correction
    if pc.max_residual is not None and pc.max_residual > pc.max_total:
        raise ConfigError(f"algorithm.position_correction.max_residual = {pc.max_residual} is "
                          f"above max_total = {pc.max_total}; lower it or raise max_total")
    if len(cfg.geometry.flip_positions) != 2:
        raise ConfigError("geometry.flip_positions: expected [rows, cols] booleans")


def config_from_dict(values: dict | None) -> Config:
    """Validate a nested dict (as read from YAML) into a :class:`Config`."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError("a config must be a mapping of sections (data, geometry, ...)")
    if isinstance(values.get("algorithm"), dict):  # the flat engine keys of older configs
        algorithm, note = move_flat_keys(values["algorithm"])
        if note is not None:
            values = {**values, "algorithm": algorithm}
            warnings.warn(note, ConfigDeprecationWarning, stacklevel=2)
    cfg = _build(Config, values, "")
    _check_combinations(cfg)
    return cfg


#: file and folder keys; in a config file, relative values are relative to the file's folder
PATH_KEYS = (("data", "path"), ("data", "position_file"), ("data", "mda_file"),
             ("preprocess", "beamstop_mask"), ("algorithm", "probe_guess"),
             ("algorithm", "object_guess"), ("output", "directory"))


def parse_yaml(text: str, where: str) -> Any:
    """``text`` parsed as YAML; a syntax error is a one-line ConfigError naming ``where``."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{where}: not valid YAML{at}; fix the syntax") from None


#: environment variables that override ``parallel`` keys for a run (job scripts, the queue)
ENV_OVERRIDES = {"PTYCHOMPI_DEVICE": "device", "PTYCHOMPI_FFT": "fft",
                 "PTYCHOMPI_WORKERS": "workers"}


def apply_environment(cfg: Config, environ: Mapping[str, str] | None = None) -> Config:
    """``cfg`` with the ``PTYCHOMPI_*`` overrides of :data:`ENV_OVERRIDES` applied.

    The values are validated like the file's, and the config written to a result then says
    what ran. Returns ``cfg`` itself when no override is set, else a copy with a new
    ``parallel`` section. An empty ``PTYCHOMPI_WORKERS`` counts as unset.
    """
    env = os.environ if environ is None else environ
    changes: dict[str, Any] = {}
    for name, key in ENV_OVERRIDES.items():
        raw = env.get(name)
        if raw is None or (key == "workers" and not raw.strip()):
            continue
        text = raw.strip() if key == "workers" else raw.strip().lower()
        try:
            value = int(text) if key == "workers" and text.lstrip("+-").isdigit() else text
            changes[key] = getattr(_build(ParallelConfig, {key: value}, "parallel"), key)
        except ConfigError as exc:
            raise ConfigError(f"${name} = {raw!r} (it overrides parallel.{key}): {exc}") from None
    if not changes:
        return cfg
    return dataclasses.replace(cfg, parallel=dataclasses.replace(cfg.parallel, **changes))


def load_config(source: str | Path | dict | Config | None) -> Config:
    """Load a config from a YAML file path, a dict, or pass a Config through.

    Relative paths in a file (``PATH_KEYS``: the scan, position, MDA, mask and guess files and
    ``output.directory``) are taken relative to the file's folder, wherever the command runs;
    in a dict they stay as given (relative to the working folder).
    """
    if isinstance(source, Config):
        return source
    if source is None or isinstance(source, dict):
        return config_from_dict(source)
    path = Path(source)
    if path.is_dir():
        raise ConfigError(f"{str(path)!r} is a folder, not a config file; give the YAML file "
                          "inside it (`ptychompi config --defaults > scan.yaml` writes one)")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found; check the path "
                          "(`ptychompi config --defaults > scan.yaml` writes a template)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it as text ({exc}); give a YAML file") from None
    values = parse_yaml(text, str(path))
    if values is None:
        raise ConfigError(f"{path} is empty; `ptychompi config --defaults > {path.name}` writes "
                          "every key with its default")
    cfg = config_from_dict(values)
    base = path.absolute().parent
    for section, key in PATH_KEYS:  # one rule: relative to the config file's folder
        node = getattr(cfg, section)
        value = getattr(node, key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            setattr(node, key, str(base / value))
    return cfg
