"""MDA files decoded into :class:`~.records.MdaFile` (scans, offset tables, extra PVs),
with one-line errors for truncated, corrupt or unsupported files."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ptychompi.errors import DataError, squash

from .records import DBR_TYPES, Detector, ExtraPV, MdaFile, MdaScan, Positioner, Trigger
from .xdr import _Corrupt, _Truncated, _Xdr

# On-disk numpy dtype of one element of each numeric DBR type (chars take 4 bytes).
_DBR_DTYPES: dict[int, str] = {29: ">i4", 30: ">f4", 32: ">i4", 33: ">i4", 34: ">f8"}

_SUPPORTED_VERSIONS = (1.3, 1.4)
_MAX_RANK = 20  # mdaviz treats a larger rank as corrupt
_MAX_POSITIONERS = 100
_MAX_DETECTORS = 1000
_MAX_TRIGGERS = 100


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
