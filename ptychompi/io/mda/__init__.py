"""Reader for EPICS synApps MDA scan files (sscan record / saveData).

Written from the format description (XDR: big-endian, 4-byte aligned). Pure
Python + numpy; no ``xdrlib``.

Policy for aborted multi-dimensional scans: ``MdaScan.sub_scans`` holds every
child scan reached through the offset table, in order, up to the first 0 offset.
It can therefore hold one more child than ``cpt`` (the row that was in progress
when the scan was aborted). ``scan_parameters`` uses complete rows only.
"""

from __future__ import annotations

from .parameters import DEFAULT_PV_MAP, scan_parameters
from .reader import read_mda
from .records import DBR_TYPES, Detector, ExtraPV, MdaFile, MdaScan, Positioner, Trigger
from .report import summary

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
