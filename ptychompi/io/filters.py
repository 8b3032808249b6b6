"""HDF5 compression filters beyond HDF5's own (LZ4, bitshuffle, zstd, Blosc): hdf5plugin,
imported only when a file needs them.

The package imports without hdf5plugin (a machine without network may lack it); reading a
dataset compressed with a filter that neither HDF5 nor hdf5plugin provides, or writing LZ4,
raises one :class:`DataError` line naming the filter and the fix.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import h5py

from ..errors import DataError

# filters HDF5 always has: deflate (gzip), shuffle, fletcher32, szip, nbit, scaleoffset
BUILT_IN = frozenset({1, 2, 3, 4, 5, 6})
FIX = "pip install hdf5plugin"


@lru_cache(maxsize=1)
def load() -> bool:
    """Register hdf5plugin's filters with h5py once; False when hdf5plugin is missing."""
    try:
        import hdf5plugin  # noqa: F401, PLC0415 - registers the filters on import
    except ImportError:
        return False
    return True


def dataset_filters(ds: h5py.Dataset) -> list[int]:
    """The filter ids of a dataset's pipeline ([] when it has none or they cannot be read)."""
    try:
        plist = ds.id.get_create_plist()
        return [int(plist.get_filter(i)[0]) for i in range(plist.get_nfilters())]
    except Exception:  # noqa: BLE001 - exotic plist: nothing to check
        return []


def require_readable(ds: h5py.Dataset, path: str, names: dict[int, str]) -> None:
    """Raise a one-line DataError when ``ds`` needs a filter this machine cannot decode."""
    extra = [i for i in dataset_filters(ds) if i not in BUILT_IN]
    if not extra:
        return
    load()
    missing = [i for i in extra if not h5py.h5z.filter_avail(i)]
    if missing:
        what = ", ".join(names.get(i, f"filter {i}") for i in missing)
        raise DataError(f"{path}: {ds.name} is compressed with {what}, which this machine "
                        f"cannot decode: {FIX}")


def lz4(path: str) -> dict[str, Any]:
    """h5py dataset options for LZ4 compression (needs hdf5plugin)."""
    if not load():
        raise DataError(f"{path}: LZ4 compression needs hdf5plugin: {FIX}, or use gzip")
    import hdf5plugin  # noqa: PLC0415

    return dict(hdf5plugin.LZ4())


def bitshuffle_lz4(path: str) -> dict[str, Any]:
    """h5py dataset options for bitshuffle + LZ4 compression (needs hdf5plugin)."""
    if not load():
        raise DataError(f"{path}: bitshuffle compression needs hdf5plugin: {FIX}, or use zlib")
    import hdf5plugin  # noqa: PLC0415

    return dict(hdf5plugin.Bitshuffle(cname="lz4"))
