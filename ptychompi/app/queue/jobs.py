"""Job configs from what a beamline has: a YAML config, a ptychopy command string, or an MDA
file plus a template config.

Each builder returns ``(config dict, name, source)`` ready for :meth:`QueueStore.add`; the
config is validated there. Relative paths in a YAML file are taken relative to that file.

An MDA job starts from the template and fills what the template leaves ``null`` from the MDA
file, as the ``mda`` position source reads it: ``data.mda_file`` and ``data.positions: mda``,
``geometry.energy_kev``, ``data.scan_dims`` (complete rows x points), ``data.step_m`` (row,
column step in metres) and ``data.frames_per_file`` (points per row: one row file per scan
row). In ``data.path`` the fields ``{scan}`` (the MDA scan number, ``{scan:04d}`` zero-padded),
``{stem}`` (the MDA file name without extension) and ``{mda_dir}`` (its folder) are filled in,
so one template serves a whole list of scans.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from ...errors import ConfigError, PtychompiError
from ...model.geometry import length_scale

__all__ = ["job_from_yaml", "job_from_ptychopy", "job_from_mda", "load_template",
           "fill_pattern", "mda_values"]

_PATH_KEYS = (("data", "path"), ("data", "position_file"), ("data", "mda_file"),
              ("preprocess", "beamstop_mask"), ("algorithm", "probe_guess"),
              ("algorithm", "object_guess"), ("output", "directory"))
_FIELD = re.compile(r"\{(scan|stem|mda_dir)(?::0?(\d{1,2})d)?\}")


def _read_yaml(path: Path, what: str) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {str(path)!r} not found; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {str(path)!r} ({exc}); check the file") from None
    from ...config import parse_yaml  # noqa: PLC0415

    values = parse_yaml(text, str(path))
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections (data, ...)")
    return values


def _absolute_paths(values: dict, base: Path) -> dict:
    """Relative file paths in ``values`` made absolute against ``base`` (the YAML's folder)."""
    out = copy.deepcopy(values)
    for section, key in _PATH_KEYS:
        node = out.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str) and node[key]:
            p = Path(node[key])
            if not p.is_absolute():
                node[key] = str((base / p).absolute())
    return out


def job_from_yaml(path: str | Path) -> tuple[dict, str, str]:
    """A YAML config file -> (config, name = file stem, "yaml")."""
    from ...config import config_from_dict  # noqa: PLC0415

    p = Path(path)
    values = _absolute_paths(_read_yaml(p, "job config"), p.absolute().parent)
    config_from_dict(values)  # the file's own errors, named by key
    return values, p.stem, "yaml"


def job_from_ptychopy(cmdstr: str) -> tuple[dict, str, str]:
    """A ptychopy command string -> ({"ptychopy": cmdstr}, name = its jobID, "ptychopy")."""
    from ...compat.ptychopy import parse_full  # noqa: PLC0415

    _, opts = parse_full(cmdstr)
    return {"ptychopy": cmdstr}, opts.job_id or "ptychopy", "ptychopy"


def load_template(path: str | Path) -> dict:
    """The template config of MDA jobs (validated; paths relative to its folder)."""
    from ...config import config_from_dict  # noqa: PLC0415

    p = Path(path)
    values = _absolute_paths(_read_yaml(p, "template"), p.absolute().parent)
    config_from_dict(values)
    return values


def fill_pattern(text: str, scan: int, mda_path: Path) -> str:
    """``{scan}``, ``{scan:04d}``, ``{stem}`` and ``{mda_dir}`` of ``text`` filled in."""
    def one(m: re.Match) -> str:
        if m.group(1) == "stem":
            return mda_path.stem
        if m.group(1) == "mda_dir":
            return str(mda_path.absolute().parent)
        width = int(m.group(2) or 0)
        return f"{scan:0{width}d}" if width else str(scan)

    return _FIELD.sub(one, text)


def mda_values(path: str | Path, pv_map: dict | None = None) -> dict[str, Any]:
    """What an MDA file says about a scan: scan number, energy, dims, steps, points per row."""
    from ...io.mda import read_mda, scan_parameters  # noqa: PLC0415

    mda = read_mda(path)
    params = scan_parameters(mda, pv_map)
    dims = [int(d) for d in params["scan_dims"]]
    rows, cols = (1, dims[-1]) if len(dims) == 1 else (dims[-2], dims[-1])
    fast_unit = params.get("fast_unit") or params.get("slow_unit")
    slow_unit = params.get("slow_unit") or params.get("fast_unit")
    kf, ks = length_scale(fast_unit), length_scale(slow_unit)
    col = params["fast_step"] * kf if kf and params.get("fast_step") is not None else None
    row = params["slow_step"] * ks if ks and params.get("slow_step") is not None else None
    step = None
    if col is not None:
        step = [row if row is not None else col, col]
    return {"scan": int(mda.scan_number), "energy_kev": params.get("energy_kev"),
            "scan_dims": [rows, cols], "step_m": step, "points_per_row": cols}


def job_from_mda(path: str | Path, template: dict) -> tuple[dict, str, str]:
    """An MDA file plus a template config -> (config, name = MDA file stem, "mda")."""
    p = Path(path).absolute()
    values = copy.deepcopy(template)
    data = values.setdefault("data", {})
    geometry = values.setdefault("geometry", {})
    if not isinstance(data, dict) or not isinstance(geometry, dict):
        raise ConfigError("the template's data and geometry must be sections (mappings)")
    try:
        found = mda_values(p, data.get("mda_pv_map"))
    except PtychompiError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader surprise is one line
        raise PtychompiError(f"{p}: cannot read the MDA file ({type(exc).__name__}: "
                             f"{exc})") from None
    data["mda_file"] = str(p)
    data["positions"] = "mda"
    if data.get("scan_dims") is None:
        data["scan_dims"] = found["scan_dims"]
    if data.get("step_m") is None and found["step_m"] is not None:
        data["step_m"] = found["step_m"]
    if data.get("frames_per_file") is None:
        data["frames_per_file"] = found["points_per_row"]
    if geometry.get("energy_kev") is None and found["energy_kev"] is not None:
        geometry["energy_kev"] = float(found["energy_kev"])
    if isinstance(data.get("path"), str):
        data["path"] = fill_pattern(data["path"], found["scan"], p)
    output = values.get("output")
    if isinstance(output, dict) and isinstance(output.get("directory"), str):
        output["directory"] = fill_pattern(output["directory"], found["scan"], p)
    from ...config import config_from_dict  # noqa: PLC0415

    config_from_dict(values)
    return values, p.stem, "mda"
