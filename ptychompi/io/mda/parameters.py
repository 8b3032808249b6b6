"""Scan parameters (energy, positions, steps, units) found in an MDA file by PV name
patterns."""

from __future__ import annotations

import fnmatch
from typing import Any

import numpy as np

from ptychompi.model.geometry import LENGTH_TO_M

from .records import MdaFile, MdaScan, Positioner

#: Default parameter -> PV names tried in order (glob patterns; a trailing ".VAL" is
#: optional on both sides, as in EPICS).
DEFAULT_PV_MAP: dict[str, list[str]] = {
    "energy_kev": [
        "29idmono:ENERGY_SP",
        "29idmono:ENERGY_MON",
        "*mono:ENERGY_SP",
        "*mono:ENERGY_MON",
        "*mono:ENERGY_RBV",
        "*:Energy_SP",
        "*:Energy_RBV",
        "ID02us:Energy",
        "ID02ds:Energy",
        "ID??:Energy",
        "ID??us:Energy",
        "ID??ds:Energy",
        "ID??:EnergySet",
        "ID??:EnergyRBV",
        "S??ID:EnergyM",
        "S??ID:EnergySetC",
    ],
}

_ENERGY_TO_KEV = {"ev": 1e-3, "kev": 1.0, "mev": 1e3}


# --------------------------------------------------------------------------- parameters


def _complete_rows(scan: MdaScan) -> list[MdaScan]:
    return scan.sub_scans[: scan.cpt]


def _first_positioner(scan: MdaScan) -> Positioner | None:
    if not scan.positioners:
        return None
    return min(scan.positioners, key=lambda p: p.number)


def _unit(p: Positioner, default: str | None = None) -> str:
    return p.unit or p.readback_unit or default or ""


def _scale(unit: str, table: dict[str, float]) -> float | None:
    return table.get(unit.strip().lower()) if unit else None


def _median_step(values: np.ndarray | None) -> float | None:
    if values is None or values.shape[-1] < 2:
        return None
    d = np.abs(np.diff(values, axis=-1))
    d = d[np.isfinite(d)]
    return float(np.median(d)) if d.size else None


def _base(name: str) -> str:
    return name[:-4] if name.endswith(".VAL") else name


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(_base(name), _base(pattern))


def _lookup(mda: MdaFile, patterns: list[str]) -> tuple[str, Any, str] | None:
    """First extra PV or detector matching a pattern: (name, value, unit)."""
    for pattern in patterns:
        for pv in mda.extra_pvs:
            if _matches(pv.name, pattern):
                return pv.name, pv.value, pv.unit
        stack = [mda.scan]
        while stack:
            scan = stack.pop(0)
            for det in scan.detectors:
                if _matches(det.name, pattern) and det.data.size:
                    return det.name, float(np.nanmean(det.data)), det.unit
            stack.extend(scan.sub_scans[:1])
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    arr = np.asarray(value)
    if arr.size != 1 or not np.issubdtype(arr.dtype, np.number):
        return None
    return float(arr.reshape(-1)[0])


def scan_parameters(
    mda: MdaFile,
    pv_map: dict[str, list[str]] | None = None,
    default_unit: str | None = None,
) -> dict[str, Any]:
    """Positions, steps and beamline parameters a ptychography reconstruction needs.

    Fast axis = P1 (lowest-numbered positioner) of the innermost scan; slow axis = P1
    of the rank-2 scan (the outermost for a 2-D file; the first outer point for 3-D+).
    For 2-D files only complete rows are used; ``fast_positions`` then has shape
    (rows, points) (NaN-padded if rows differ) and ``slow_positions`` shape (rows,).
    ``pv_map`` maps a parameter name to PV names/glob patterns tried in order (extra
    PVs first, then detector means) and overrides ``DEFAULT_PV_MAP`` per key. Names
    ending in ``_kev`` are converted by their eV/keV unit, names ending in ``_m`` by
    their length unit; a PV whose unit cannot be converted is skipped. Other names
    give the raw value plus ``<name>_unit``. Each found parameter has ``<name>_pv``.
    ``default_unit`` (e.g. "mm" for 2-ID-E fly scans) is used for a positioner
    without a unit, for ``*_positions_m`` and ``*_step_m``.
    """
    out: dict[str, Any] = {}
    scan = mda.scan
    levels = [scan]
    while levels[-1].sub_scans:
        levels.append(levels[-1].sub_scans[0])
    acquired = mda.acquired_dims
    inner = levels[-1]
    slow_scan: MdaScan | None = None
    if mda.rank == 1:
        fast_p = _first_positioner(inner)
        fast = fast_p.data.copy() if fast_p else None
        slow = None
        n_rows = 0
        partial = 0
        scan_dims = (scan.cpt,)
    else:
        slow_scan = levels[-2] if len(levels) >= 2 and levels[-1].rank == 1 else None
        rows = _complete_rows(slow_scan) if slow_scan is not None else []
        n_rows = len(rows)
        partial = len(slow_scan.sub_scans) - n_rows if slow_scan is not None else 0
        fast_p = _first_positioner(rows[0]) if rows else None
        fast = None
        if fast_p is not None:
            width = max(r.cpt for r in rows)
            fast = np.full((n_rows, width), np.nan)
            for i, r in enumerate(rows):
                p = r.positioner(fast_p.name) or _first_positioner(r)
                if p is not None:
                    fast[i, : p.data.size] = p.data
        slow_p = _first_positioner(slow_scan) if slow_scan is not None else None
        slow = slow_p.data[:n_rows].copy() if slow_p is not None else None
        if n_rows:
            width = max(r.cpt for r in rows)
            scan_dims = (*[s.cpt for s in levels[:-2]], n_rows, width)
        else:
            scan_dims = tuple(acquired)
        out["slow_name"] = slow_p.name if slow_p else None
        out["slow_unit"] = _unit(slow_p, default_unit) if slow_p else None
    out["scan_dims"] = tuple(int(d) for d in scan_dims)
    out["requested_dims"] = tuple(mda.dims)
    out["aborted"] = mda.aborted
    out["partial_rows"] = partial
    out["fast_name"] = fast_p.name if fast_p else None
    out["fast_unit"] = _unit(fast_p, default_unit) if fast_p else None
    out["fast_step_mode"] = fast_p.step_mode if fast_p else None
    out.setdefault("slow_name", None)
    out.setdefault("slow_unit", None)
    out["fast_positions"] = fast
    out["slow_positions"] = slow
    out["fast_step"] = _median_step(fast)
    out["slow_step"] = _median_step(slow)
    out["step"] = (out["fast_step"],) if mda.rank == 1 else (out["slow_step"], out["fast_step"])
    for axis, arr in (("fast", fast), ("slow", slow)):
        k = _scale(out[f"{axis}_unit"] or "", LENGTH_TO_M)
        out[f"{axis}_positions_m"] = arr * k if (k is not None and arr is not None) else None
        step = out[f"{axis}_step"]
        out[f"{axis}_step_m"] = step * k if (k is not None and step is not None) else None

    merged = {**DEFAULT_PV_MAP, **(pv_map or {})}
    for param, names in merged.items():
        if isinstance(names, str):
            names = [names]
        out.setdefault(param, None)
        out[f"{param}_pv"] = None
        table = (
            _ENERGY_TO_KEV
            if param.endswith("_kev")
            else LENGTH_TO_M
            if param.endswith("_m")
            else None
        )
        for name in names:
            hit = _lookup(mda, [name])
            if hit is None:
                continue
            pv_name, value, unit = hit
            if table is None:
                out[param], out[f"{param}_unit"], out[f"{param}_pv"] = value, unit, pv_name
                break
            k = _scale(unit, table)
            v = _as_float(value)
            if k is None or v is None:
                continue
            out[param], out[f"{param}_pv"] = v * k, pv_name
            break
    return out
