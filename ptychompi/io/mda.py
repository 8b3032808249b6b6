"""Reader for EPICS synApps MDA scan files (sscan record / saveData).

Written from the format description (XDR: big-endian, 4-byte aligned). Pure
Python + numpy; no ``xdrlib``.

Policy for aborted multi-dimensional scans: ``MdaScan.sub_scans`` holds every
child scan reached through the offset table, in order, up to the first 0 offset.
It can therefore hold one more child than ``cpt`` (the row that was in progress
when the scan was aborted). ``scan_parameters`` uses complete rows only.
"""

from __future__ import annotations

import fnmatch
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptychompi.errors import DataError, squash
from ptychompi.geometry import LENGTH_TO_M

__all__ = [
    "DBR_TYPES",
    "DEFAULT_PV_MAP",
    "Detector",
    "ExtraPV",
    "MdaFile",
    "MdaScan",
    "Positioner",
    "Trigger",
    "read_mda",
    "scan_parameters",
    "summary",
]

#: EPICS DBR type codes that occur in the extra-PV section.
DBR_TYPES: dict[int, str] = {
    0: "DBR_STRING",
    29: "DBR_CTRL_SHORT",
    30: "DBR_CTRL_FLOAT",
    32: "DBR_CTRL_CHAR",
    33: "DBR_CTRL_LONG",
    34: "DBR_CTRL_DOUBLE",
}
# On-disk numpy dtype of one element of each numeric DBR type (chars take 4 bytes).
_DBR_DTYPES: dict[int, str] = {29: ">i4", 30: ">f4", 32: ">i4", 33: ">i4", 34: ">f8"}

_SUPPORTED_VERSIONS = (1.3, 1.4)
_MAX_RANK = 20  # mdaviz treats a larger rank as corrupt
_MAX_POSITIONERS = 100
_MAX_DETECTORS = 1000
_MAX_TRIGGERS = 100

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


# --------------------------------------------------------------------------- data


@dataclass
class Positioner:
    """One scan positioner (P1-P4); ``data`` is float64, ``cpt`` long."""

    number: int
    name: str
    description: str
    step_mode: str
    unit: str
    readback_name: str
    readback_description: str
    readback_unit: str
    data: np.ndarray


@dataclass
class Detector:
    """One detector column (D01-D70); ``data`` is float32 as stored, ``cpt`` long."""

    number: int
    name: str
    description: str
    unit: str
    data: np.ndarray


@dataclass
class Trigger:
    """One detector trigger (T1-T4) and the value it writes."""

    number: int
    name: str
    command: float


@dataclass
class MdaScan:
    """One execution of an sscan record; ``sub_scans`` are the inner rows."""

    rank: int
    npts: int
    cpt: int
    name: str
    time_stamp: str
    positioners: list[Positioner] = field(default_factory=list)
    detectors: list[Detector] = field(default_factory=list)
    triggers: list[Trigger] = field(default_factory=list)
    sub_scans: list[MdaScan] = field(default_factory=list)

    def positioner(self, name: str) -> Positioner | None:
        """Return the positioner with this PV or readback name, if any."""
        for p in self.positioners:
            if name in (p.name, p.readback_name):
                return p
        return None

    def detector(self, name: str) -> Detector | None:
        """Return the detector with this PV name, if any."""
        for d in self.detectors:
            if d.name == name:
                return d
        return None


@dataclass
class ExtraPV:
    """One entry of the extra-PV (environment) section."""

    name: str
    description: str
    type: str
    count: int
    unit: str
    value: Any


@dataclass
class MdaFile:
    """A parsed MDA file. ``dims`` are the requested NPTS, outer -> inner."""

    path: Path
    version: float
    scan_number: int
    rank: int
    dims: list[int]
    regular: bool
    scan: MdaScan
    extra_pvs: list[ExtraPV] = field(default_factory=list)
    extra_pv_dict: dict[str, ExtraPV] = field(default_factory=dict)
    extra_pv_offset: int = 0

    @property
    def acquired_dims(self) -> list[int]:
        """Points acquired per level, outer -> inner (first-child CPT below the top)."""
        out: list[int] = []
        scan: MdaScan | None = self.scan
        while scan is not None:
            out.append(scan.cpt)
            scan = scan.sub_scans[0] if scan.sub_scans else None
        return out + [0] * (self.rank - len(out))

    @property
    def aborted(self) -> bool:
        """True if any level stopped before NPTS or the file was never finished."""
        if self.extra_pv_offset == 0:
            return True

        def _short(scan: MdaScan) -> bool:
            if scan.cpt < scan.npts:
                return True
            return any(_short(s) for s in scan.sub_scans[: scan.cpt])

        return _short(self.scan)


# --------------------------------------------------------------------------- XDR


class _Truncated(Exception):
    def __init__(self, pos: int, need: int) -> None:
        super().__init__(pos, need)
        self.pos = pos
        self.need = need


class _Corrupt(Exception):
    def __init__(self, pos: int, what: str) -> None:
        super().__init__(pos, what)
        self.pos = pos
        self.what = what


class _Xdr:
    """A tiny big-endian XDR cursor over an in-memory file."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.size = len(buf)
        self.pos = 0

    def _need(self, n: int) -> int:
        if n < 0 or self.pos + n > self.size:
            raise _Truncated(self.pos, n)
        p = self.pos
        self.pos += n
        return p

    def seek(self, offset: int) -> None:
        if offset < 0:
            raise _Corrupt(self.pos, f"negative offset {offset}")
        if offset >= self.size:
            raise _Truncated(offset, 4)
        self.pos = offset

    def i32(self) -> int:
        return struct.unpack_from(">i", self.buf, self._need(4))[0]

    def f32(self) -> float:
        return struct.unpack_from(">f", self.buf, self._need(4))[0]

    def count(self, what: str, limit: int | None = None, item_bytes: int = 4) -> int:
        """A non-negative int32 count; without ``limit``, bounded by the bytes left."""
        pos = self.pos
        n = self.i32()
        if n < 0 or (limit is not None and n > limit):
            raise _Corrupt(pos, f"{what} = {n} (expected 0..{limit})")
        if limit is None and n * item_bytes > self.size - self.pos:
            raise _Truncated(self.pos, n * item_bytes)
        return n

    def array(self, dtype: str, n: int) -> np.ndarray:
        dt = np.dtype(dtype)
        p = self._need(n * dt.itemsize)
        return np.frombuffer(self.buf, dtype=dt, count=n, offset=p)

    def string(self) -> str:
        """An MDA counted string: int32 n, then (if n > 0) an XDR string."""
        pos = self.pos
        n = self.i32()
        if n < 0:
            raise _Corrupt(pos, f"negative string length {n}")
        if n == 0:
            return ""
        n = self.i32()
        if n < 0:
            raise _Corrupt(pos, f"negative string length {n}")
        p = self._need((n + 3) & ~3)
        return _decode(self.buf[p : p + n])


def _decode(raw: bytes) -> str:
    raw = raw.split(b"\0", 1)[0]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


# --------------------------------------------------------------------------- parse


def _read_scan(x: _Xdr, expect_rank: int, visited: set[int]) -> MdaScan:
    start = x.pos
    rank = x.i32()
    if rank != expect_rank:
        raise _Corrupt(start, f"scan rank {rank} where {expect_rank} was expected")
    npts = x.count("NPTS")
    cpt_pos = x.pos
    cpt = x.i32()
    if not 0 <= cpt <= npts:
        raise _Corrupt(cpt_pos, f"CPT = {cpt} outside 0..NPTS ({npts})")
    offsets = x.array(">i4", npts).tolist() if rank > 1 else []
    name = x.string()
    time_stamp = x.string()
    n_pos = x.count("number of positioners", _MAX_POSITIONERS)
    n_det = x.count("number of detectors", _MAX_DETECTORS)
    n_trg = x.count("number of triggers", _MAX_TRIGGERS)

    pos_hdr = []
    for _ in range(n_pos):
        number = x.i32()
        strings = [x.string() for _ in range(7)]
        pos_hdr.append((number, strings))
    det_hdr = []
    for _ in range(n_det):
        number = x.i32()
        det_hdr.append((number, [x.string() for _ in range(3)]))
    triggers = []
    for _ in range(n_trg):
        number = x.i32()
        tname = x.string()
        triggers.append(Trigger(number, tname, float(x.f32())))

    positioners = [
        Positioner(number, *strings, data=x.array(">f8", npts)[:cpt].astype(np.float64))
        for number, strings in pos_hdr
    ]
    detectors = [
        Detector(number, *strings, data=x.array(">f4", npts)[:cpt].astype(np.float32))
        for number, strings in det_hdr
    ]
    scan = MdaScan(rank, npts, cpt, name, time_stamp, positioners, detectors, triggers)

    for i, off in enumerate(offsets):
        if off == 0:
            break
        if off in visited or off <= start:
            raise _Corrupt(start, f"child scan offset {off} repeats or points backwards")
        visited.add(off)
        try:
            x.seek(off)
            scan.sub_scans.append(_read_scan(x, rank - 1, visited))
        except (_Truncated, _Corrupt):
            if i < cpt:
                raise
            # The row that was running when the scan stopped may be incomplete.
            warnings.warn(
                f"MDA scan {name}: dropped unreadable in-progress row {i + 1}", stacklevel=2
            )
            break
    return scan


def _read_extra_value(x: _Xdr, code: int, count: int) -> Any:
    if code == 0:
        return x.string()
    values = x.array(_DBR_DTYPES[code], count)
    if code == 32:
        values = values & 0xFF
        if count > 1:
            text = bytes(values.astype(np.uint8)).split(b"\0", 1)[0]
            if all(32 <= b < 127 or b in (9, 10, 13) for b in text):
                return text.decode("ascii")
        values = values.astype(np.uint8)
    else:
        values = values.astype(values.dtype.newbyteorder("="))
    if count == 1:
        return values[0].item()
    return values


def _read_extras(x: _Xdr, offset: int) -> list[ExtraPV]:
    x.seek(offset)
    n = x.count("number of extra PVs")
    pvs: list[ExtraPV] = []
    for _ in range(n):
        name = x.string()
        desc = x.string()
        code_pos = x.pos
        code = x.i32()
        if code not in DBR_TYPES:
            raise _Corrupt(code_pos, f"extra PV {name!r} has unknown DBR type {code}")
        count, unit = 1, ""
        if code != 0:
            count = x.count(f"element count of extra PV {name!r}")
            unit = x.string()
        value = _read_extra_value(x, code, count)
        pvs.append(ExtraPV(name, desc, DBR_TYPES[code], count, unit, value))
    return pvs


def read_mda(path: str | Path) -> MdaFile:
    """Read an MDA file; raise ``DataError`` (one line) if it is missing or bad."""
    path = Path(path)
    where = squash(path)
    try:
        buf = path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            f"MDA file {where} does not exist; check the path and the scan number"
        ) from None
    except IsADirectoryError:
        raise DataError(f"MDA file {where} is a directory; give the path of a .mda file") from None
    except OSError as exc:
        raise DataError(
            f"cannot read MDA file {where}: {squash(exc.strerror or exc)}; "
            "check the path and its permissions"
        ) from None

    x = _Xdr(buf)
    if len(buf) < 12:
        raise DataError(
            f"{where} is not an MDA file: only {len(buf)} bytes, truncated at byte {len(buf)}; "
            "copy the complete .mda file again"
        )
    version_raw = buf[:4].hex()
    version = x.f32()
    if not any(abs(version - v) < 0.01 for v in _SUPPORTED_VERSIONS):
        hint = (
            "format 1.2 (1999) is not supported; convert it with mda-utils"
            if abs(version - 1.2) < 0.01
            else "give an EPICS saveData .mda file"
        )
        raise DataError(
            f"{where} is not an MDA file version 1.3/1.4 (first 4 bytes 0x{version_raw}); {hint}"
        )
    try:
        scan_number = x.i32()
        rank = x.i32()
        if not 1 <= rank <= _MAX_RANK:
            raise DataError(
                f"{where} is not a valid MDA file: rank {rank} outside 1..{_MAX_RANK}; "
                "give an EPICS saveData .mda file"
            )
        dims = [int(d) for d in x.array(">i4", rank)]
        if any(d < -1 for d in dims):
            raise _Corrupt(16, f"dimensions {dims}")
        regular = x.i32() != 0
        extra_offset = x.i32()
        if extra_offset < 0:
            raise _Corrupt(x.pos - 4, f"extra-PV offset {extra_offset}")
        scan = _read_scan(x, rank, set())
        extras = _read_extras(x, extra_offset) if extra_offset else []
    except _Truncated as exc:
        raise DataError(
            f"MDA file {where} is truncated at byte {len(buf)} (needed {exc.need} bytes at "
            f"byte {exc.pos}); copy the complete file again or wait until the scan has finished"
        ) from None
    except _Corrupt as exc:
        raise DataError(
            f"MDA file {where} is corrupt at byte {exc.pos}: {squash(exc.what)}; "
            "copy the file again from the beamline"
        ) from None
    except (struct.error, IndexError, ValueError, OverflowError) as exc:
        raise DataError(
            f"MDA file {where} could not be parsed ({type(exc).__name__}: {squash(exc)}); "
            "copy the file again from the beamline"
        ) from None

    extra_dict: dict[str, ExtraPV] = {}
    for pv in extras:
        extra_dict.setdefault(pv.name, pv)
    return MdaFile(
        path=path,
        version=round(version, 2),
        scan_number=scan_number,
        rank=rank,
        dims=dims,
        regular=regular,
        scan=scan,
        extra_pvs=extras,
        extra_pv_dict=extra_dict,
        extra_pv_offset=extra_offset,
    )


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


# --------------------------------------------------------------------------- summary


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def summary(mda: MdaFile) -> str:
    """A one-screen, human-readable description of an MDA file."""
    lines = [
        f"MDA file   {mda.path.name}",
        f"version    {mda.version:.1f}   scan number {mda.scan_number}   rank {mda.rank}"
        f"   regular {'yes' if mda.regular else 'no'}",
        f"dims       requested {' x '.join(map(str, mda.dims))}"
        f"   acquired {' x '.join(map(str, mda.acquired_dims))}   (outer -> inner)",
    ]
    if mda.aborted:
        why = "no extra-PV section (unfinished)" if mda.extra_pv_offset == 0 else "stopped early"
        lines.append(f"status     ABORTED/PARTIAL: {why}")
    else:
        lines.append("status     complete")
    level = mda.scan
    while True:
        lines.append(
            f"level {level.rank}    {level.name}  npts {level.npts}  cpt {level.cpt}"
            f"  ({level.time_stamp})"
        )
        if not level.positioners:
            lines.append("             no positioners")
        for p in level.positioners:
            rng = (
                f"{_fmt(float(np.nanmin(p.data)))} .. {_fmt(float(np.nanmax(p.data)))}"
                if p.data.size
                else "no points"
            )
            desc = f' "{p.description}"' if p.description else ""
            lines.append(
                f"             P{p.number + 1} {p.name}{desc} [{_unit(p) or '-'}] "
                f"{p.step_mode or '-'}  {rng}"
            )
        lines.append(
            f"             {len(level.detectors)} detectors, {len(level.triggers)} triggers"
            + (f" ({', '.join(t.name for t in level.triggers)})" if level.triggers else "")
        )
        if not level.sub_scans:
            break
        if level is mda.scan:
            lines[-1] += f", {len(level.sub_scans)} inner scans stored"
        level = level.sub_scans[0]
    n_dup = len(mda.extra_pvs) - len(mda.extra_pv_dict)
    lines.append(
        f"extra PVs  {len(mda.extra_pvs)}" + (f" ({n_dup} duplicate names)" if n_dup else "")
        if mda.extra_pv_offset
        else "extra PVs  none (section missing)"
    )
    params = scan_parameters(mda)
    if params.get("energy_kev") is not None:
        lines.append(f"energy     {params['energy_kev']:.5g} keV  (from {params['energy_kev_pv']})")
    else:
        lines.append("energy     unknown")
    return "\n".join(lines)
