"""APS row-file patterns: a printf pattern (or ptychopy's ``#``, or the first row file) to
the present files and each frame's file."""

from __future__ import annotations

import os
import re

from ..errors import DataError

_CONVERSION = re.compile(r"%(?P<flags>[-+ #0]*)(?P<width>\d*)[diu]")


# --------------------------------------------------------------------------- file patterns


def _count_conversions(name: str) -> list[re.Match]:
    """The %d-style conversions of a file name (``%%`` is a literal percent sign)."""
    return list(_CONVERSION.finditer(name.replace("%%", "\0\0")))


def resolve_pattern(path: str, first_index: int = 1) -> tuple[str, int]:
    """``(printf pattern, first index)`` for ``data.path``.

    A name with ``%d``-style conversion (or ptychopy's ``#`` form) is a pattern and keeps
    ``first_index``. An existing file name without one is the first row file: the last group of
    digits before the extension becomes ``%0Nd`` and its number the first index; a name without
    digits is a single file holding the whole scan.
    """
    directory, name = os.path.split(str(path))
    if "%" not in name and "#" in name:
        name = name.replace("#", "%", 1)  # ptychopy: the first '#' means '%'
    convs = _count_conversions(name)
    if len(convs) > 1:
        raise DataError(f"{path}: the file pattern has {len(convs)} %d conversions; use one")
    if convs:
        return os.path.join(directory, name), first_index
    if not os.path.isfile(path):
        raise DataError(f"{path}: not found; give the first row file or its printf pattern "
                        "(e.g. scan152_data_%06d.h5) as data.path")
    stem = os.path.splitext(name)[0]  # digits in the extension (.h5) are not the index
    digits = list(re.finditer(r"\d+", stem))
    if not digits:
        return os.path.join(directory, name.replace("%", "%%")), first_index
    last = digits[-1]
    number = int(last.group())
    if first_index not in (1, number):
        raise DataError(f"{path}: the file name has index {number} but data.first_index = "
                        f"{first_index}; give a printf pattern or drop data.first_index")
    pattern = (name[: last.start()].replace("%", "%%") + f"%0{len(last.group())}d"
               + name[last.end():].replace("%", "%%"))
    return os.path.join(directory, pattern), number


def _has_index(pattern: str) -> bool:
    return bool(_count_conversions(os.path.basename(pattern)))


def _list_indices(pattern: str, first_index: int) -> list[int]:
    """Indices >= ``first_index`` of the files of ``pattern`` present on disk (sorted)."""
    directory, name = os.path.split(pattern)
    if not _has_index(pattern):
        return [first_index] if os.path.isfile(_file_for(pattern, first_index)) else []
    m = _count_conversions(name)[0]
    head = name[: m.start()].replace("%%", "%")
    tail = name[m.end():].replace("%%", "%")
    regex = re.compile(re.escape(head) + r"\s*(\d+)" + re.escape(tail))
    try:
        entries = os.listdir(directory or ".")
    except OSError as exc:
        raise DataError(f"{directory}: cannot list the scan directory ({exc.strerror})") from None
    found = []
    for entry in entries:
        hit = regex.fullmatch(entry)
        if hit is None:
            continue
        idx = int(hit.group(1))
        if idx >= first_index and name % idx == entry:
            found.append(idx)
    return sorted(found)


def _file_for(pattern: str, index: int) -> str:
    """The file name of row file ``index`` (``pattern``'s directory is taken literally)."""
    directory, name = os.path.split(pattern)
    return os.path.join(directory, name % index if _has_index(pattern) else name % ())
