"""Typed configuration: YAML in, validated dataclasses out.

Every key is declared once here, with its type, default, allowed values or range and a help
text; validation, error messages and the commented default file all come from that one table.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config_fields import opt
from .engine_options import (
    ENGINE_OPTIONS,
    ConfigDeprecationWarning,
    DMOptions,
    EPIEOptions,
    LSQMLOptions,
    move_flat_keys,
)
from .errors import ConfigError


@dataclass
class FollowConfig:
    enabled: bool = opt(False, "reconstruct while APS row files (or a CXI file under SWMR) "
                        "are written (= run --follow; the planned scan from data.scan_dims, "
                        "n_frames or mda_file)")
    timeout_s: float = opt(120.0, "no new complete row for this long: the scan is taken as "
                           "ended (aborted) and the rest runs on the rows that arrived",
                           low=0.0)
    poll_s: float = opt(0.5, "seconds between looks at the row files; a row is used once its "
                        "file opens and its size stays the same over one look", low=0.01)
    final_iterations: int | None = opt(None, "iterations kept for after the last row (null "
                                       "= a third of algorithm.iterations)", low=0)
    schedule: list[list[int]] | None = opt(None, "replay the [iteration, rows] decisions of "
                                           "an earlier follow run (its result's provenance "
                                           "follow/schedule): tests, benchmarks")


@dataclass
class DataConfig:
    path: str | None = opt(None, "scan file: CXI, or the first APS row file / its printf pattern")
    format: str = opt("auto", "file layout", choices=("auto", "cxi", "aps"))
    dataset: str = opt("/entry/data/data", "APS: dataset holding the frames in each file")
    first_index: int = opt(1, "APS: index of the first row file in the pattern", low=0)
    frames_per_file: int | None = opt(None, "APS: frames per row file (null = from the files)",
                                      low=1)
    n_frames: int | None = opt(None, "use only the first N frames (null = all)", low=1)
    positions: str = opt("auto", "where positions come from",
                         choices=("auto", "file", "raster", "spiral", "mda"))
    position_file: str | None = opt(None, "CSV of positions in metres, row then column")
    scan_dims: list[int] | None = opt(None, "raster/spiral: [rows, columns] of the scan")
    step_m: list[float] | None = opt(None, "raster/spiral: [row, column] step in metres")
    mda_file: str | None = opt(None, "EPICS MDA file with the scan's positioners")
    mda_pv_map: dict | None = opt(None, "map of parameter -> list of MDA PV names")
    follow: FollowConfig = opt(None, "reconstruct while the scan is written",
                               factory=FollowConfig)


@dataclass
class GeometryConfig:
    energy_kev: float | None = opt(None, "photon energy in keV (null = from the file)", low=0.0)
    distance_m: float | None = opt(None, "sample-detector distance (null = from the file)",
                                   low=0.0)
    detector_pixel_m: float | None = opt(None, "detector pixel size (null = from the file)",
                                         low=0.0)
    propagation: str = opt("farfield", "propagation model", choices=("farfield", "nearfield"))
    focus_to_sample_m: float | None = opt(
        None, "near field, cone beam: focus-sample distance (null = parallel beam)", low=0.0)
    flip_positions: list[bool] = opt(None, "flip [rows, columns] of the positions",
                                     factory=lambda: [False, False])
    transpose_positions: bool = opt(False, "swap the row and column of each position")
    object_margin_px: int = opt(8, "object pixels added around the scanned area", low=0)


@dataclass
class PreprocessConfig:
    crop_size: int | None = opt(None, "crop a size x size window (null = keep the frame)", low=2)
    center: list[int] | None = opt(None, "crop centre [row, col]; null = centre of mass")
    rotate90: int = opt(0, "rotate frames by this many 90 degree steps", low=0, high=3)
    flip_rows: bool = opt(False, "flip frames upside down")
    flip_cols: bool = opt(False, "flip frames left-right")
    transpose: bool = opt(False, "transpose frames")
    threshold: float = opt(0.0, "values below -> 0, others minus the threshold", low=0.0)
    bit_depth: int | None = opt(None, "detector bit depth: saturated pixels are masked", low=1)
    beamstop_mask: str | None = opt(None, ".npy/.h5 boolean file, True = blocked pixel")
    binning: int = opt(1, "sum bins of b x b pixels", low=1)
    invalid: str = opt("error", "NaN/negative intensities", choices=("error", "zero", "mask"))
    amplitudes: bool = opt(False, "the file holds amplitudes (sqrt of intensity)")


@dataclass
class PositionCorrectionConfig:
    enabled: bool = opt(False, "refine the scan positions from the data misfit (all engines)")
    start: int = opt(1, "first iteration that moves positions (early: what the object and "
                     "probe learn from wrong positions stays with them for long)", low=0)
    stop: int | None = opt(None, "iteration from which positions stay where they are "
                           "(null = never)", low=0)
    update_every: int = opt(4, "iterations between position updates (each costs about an "
                            "LSQML iteration's worth of FFTs)", low=1)
    step: float = opt(3.0, "multiple of each position's least-squares shift applied (the "
                      "object adapts to wrong positions, so the plain shift falls short)",
                      low=0.0)
    max_shift: float = opt(0.5, "largest move of a position in one update, px", low=0.0)
    momentum: float = opt(0.8, "fraction of a position's previous move added to its next one "
                          "while the two point the same way (0 = none)", low=0.0, high=0.99)
    max_total: float = opt(4.0, "largest distance of a position from its input, px per axis "
                           "(the tiles grow by this much so windows stay inside them)",
                           low=0.0, high=64.0)
    affine: bool = opt(False, "fit scale, rotation, shear and offset over all positions each "
                       "update; positions = the fitted transform of the input + a residual")
    max_residual: float | None = opt(None, "affine: largest residual from the fitted "
                                     "transform, px per axis (null = max_total)", low=0.0)


@dataclass
class AlgorithmConfig:
    name: str = opt("dm", "reconstruction engine (its options: the section of that name)",
                    choices=tuple(ENGINE_OPTIONS))
    iterations: int = opt(100, "iterations to run", low=0)
    probe_modes: int = opt(1, "incoherent probe modes", low=1)
    probe_update_start: int = opt(0, "first iteration that updates the probe", low=0)
    batch_size: int | None = opt(None, "positions per batch (null = engine default: ePIE up to "
                                 "epie.batch non-overlapping windows, LSQML the scan split "
                                 "into lsqml.batches)", low=1)
    seed: int = opt(0, "random seed (position order, batches)", low=0)
    probe_guess: str | None = opt(None, "starting probe: .npy, .h5 or ptychopy .csv")
    object_guess: str | None = opt(None, "starting object: .npy, .h5 or ptychopy .csv")
    probe_diameter_m: float | None = opt(
        None, "nominal beam diameter: the data's mean far-field amplitude is defocused to "
        "this size for the starting probe (null = the diameter the data show, far field)",
        low=0.0)
    object_amplitude_min: float | None = opt(None, "clip object amplitude below", low=0.0)
    object_amplitude_max: float | None = opt(None, "clip object amplitude above", low=0.0)
    subpixel: bool = opt(True, "sub-pixel positions by a Fourier phase ramp on the probe")
    subpixel_bins: int = opt(8, "sub-pixel positions are rounded to 1/this px, so positions "
                             "with the same remainder share one shifted probe and one "
                             "back-shift (DM, LSQML); 0 = exact", low=0)
    precision: str = opt("single", "float precision", choices=("single", "double"))
    position_correction: PositionCorrectionConfig = opt(
        None, "position refinement", factory=PositionCorrectionConfig)
    epie: EPIEOptions = opt(None, "ePIE's options", factory=EPIEOptions)
    dm: DMOptions = opt(None, "difference map's options", factory=DMOptions)
    lsqml: LSQMLOptions = opt(None, "LSQML's options", factory=LSQMLOptions)


@dataclass
class ParallelConfig:
    device: str = opt("auto", "cpu, gpu or auto ($PTYCHOMPI_DEVICE overrides)",
                      choices=("auto", "cpu", "gpu"))
    share_frequency: int = opt(1, "iterations between object halo exchanges (1 = exact)", low=1)
    probe_share_frequency: int = opt(1, "iterations between probe reductions", low=1)
    grid: list[int] | None = opt(None, "process grid [rows, cols] (null = from the scan)")
    cuda_aware: str = opt("auto", "pass GPU buffers to MPI directly",
                          choices=("auto", "yes", "no"))
    workers: int | None = opt(None, "CPU FFT threads per rank (null = cores / ranks)", low=1)
    fft: str = opt("auto", "CPU FFT library: fftw (pyFFTW), scipy, or auto = fftw when "
                   "installed ($PTYCHOMPI_FFT overrides)", choices=("auto", "fftw", "scipy"))
    operations: str = opt("compiled", "how the engines' steps run on a CPU: compiled (numba "
                          "kernels, fused FFTW pipelines) or array (numpy expressions, the "
                          "code a GPU runs: a slower reference to check results against)",
                          choices=("compiled", "array"))


@dataclass
class EmailConfig:
    to: list[str] | None = opt(None, "recipients")
    smtp_host: str = opt("localhost", "SMTP server")
    smtp_port: int = opt(25, "SMTP port", low=1, high=65535)
    starttls: bool = opt(False, "upgrade the connection with STARTTLS")
    username: str | None = opt(None, "SMTP login (null = none)")
    password_env: str | None = opt(None, "environment variable holding the SMTP password")
    sender: str = opt("ptychompi@localhost", "From: address")


@dataclass
class NotifyConfig:
    email: EmailConfig | None = opt(None, "e-mail the summary when a run ends")


@dataclass
class OutputConfig:
    directory: str = opt("out", "where result.h5, logs and exports go")
    checkpoint_every: int = opt(0, "iterations between checkpoints (0 = none)", low=0)
    formats: list[str] = opt(None, "files to write at the end: hdf5, tiff, png, csv",
                             factory=lambda: ["hdf5"], choices=("hdf5", "tiff", "png", "csv"))
    log_every: int = opt(10, "console line every N iterations when not on a terminal", low=1)
    live_every: int = opt(10, "iterations between live snapshots (live/status.json and "
                          "live/snapshot.npz, for the GUI); 0 = none", low=0)
    notify: NotifyConfig = opt(None, "notifications", factory=NotifyConfig)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict:
        """Plain nested dict (YAML-serialisable)."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SECTION_HELP = {
    "data": "input scan",
    "geometry": "experiment geometry (SI units; null = read from the file)",
    "preprocess": "applied to each frame as it is read, in this order",
    "algorithm": "reconstruction engine and its options",
    "parallel": "devices and MPI exchange",
    "output": "results, checkpoints, exports and notifications",
}


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


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _comment_block(cls: type, values: Any, indent: int) -> list[str]:
    lines = []
    for f in dataclasses.fields(cls):
        value = getattr(values, f.name)
        help_ = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        if choices:
            help_ += f" [{' | '.join(choices)}]"
        pad = " " * indent
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:  # {help_}")
            lines += _comment_block(type(value), value, indent + 2)
        else:
            lines.append(f"{pad}{f.name}: {_yaml_value(value)}  # {help_}")
    return lines


def default_yaml() -> str:
    """The complete default configuration as commented YAML (loads back unchanged)."""
    cfg = Config()
    lines = ["# ptychompi configuration (all keys, with their defaults)"]
    for f in dataclasses.fields(Config):
        lines.append(f"{f.name}:  # {SECTION_HELP[f.name]}")
        lines += _comment_block(type(getattr(cfg, f.name)), getattr(cfg, f.name), 2)
    return "\n".join(lines) + "\n"


__all__ = ["Config", "DataConfig", "GeometryConfig", "PreprocessConfig", "AlgorithmConfig",
           "ParallelConfig", "OutputConfig", "PositionCorrectionConfig", "NotifyConfig",
           "EmailConfig", "load_config",
           "config_from_dict", "default_yaml", "apply_environment", "ENV_OVERRIDES"]
