"""Typed configuration: YAML in, validated dataclasses out.

Every key is declared once (:mod:`ptychompi.config.sections`), with its type, default, allowed
values or range and a help text; validation, error messages (:mod:`ptychompi.config.load`) and
the commented default file (here) all come from that one table. Import the names from here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from .load import (
    ENV_OVERRIDES,
    apply_environment,
    config_from_dict,
    load_config,
    parse_yaml,
)
from .sections import (
    AlgorithmConfig,
    Config,
    DataConfig,
    EmailConfig,
    FollowConfig,
    GeometryConfig,
    NotifyConfig,
    OutputConfig,
    ParallelConfig,
    PositionCorrectionConfig,
    PreprocessConfig,
)

SECTION_HELP = {
    "data": "input scan",
    "geometry": "experiment geometry (SI units; null = read from the file)",
    "preprocess": "applied to each frame as it is read, in this order",
    "algorithm": "reconstruction engine and its options",
    "parallel": "devices and MPI exchange",
    "output": "results, checkpoints, exports and notifications",
}


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
           "config_from_dict", "default_yaml", "apply_environment", "ENV_OVERRIDES",
           "FollowConfig", "SECTION_HELP", "parse_yaml"]
