"""The parsed MDA file as data classes (scans, positioners, detectors, triggers, extra
PVs) and the EPICS DBR type codes of the extra-PV section."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: EPICS DBR type codes that occur in the extra-PV section.
DBR_TYPES: dict[int, str] = {
    0: "DBR_STRING",
    29: "DBR_CTRL_SHORT",
    30: "DBR_CTRL_FLOAT",
    32: "DBR_CTRL_CHAR",
    33: "DBR_CTRL_LONG",
    34: "DBR_CTRL_DOUBLE",
}


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
