"""Trim hdf5plugin's wheel to the HDF5 filters ptychompi reads, so the GPU check's wheels fit.

hdf5plugin's manylinux wheel holds a dozen compiled filters (about 45 MB zipped, most of it
SZ3, Blosc2, SZ and SPERR). ptychompi reads LZ4, bitshuffle, zstd, Blosc and bzip2 data; the
trimmed wheel keeps those plugin libraries, lists only them as embedded (so importing
hdf5plugin does not complain about the missing ones) and gets a matching RECORD.

    python benchmarks/wheel_trim.py .whl/hdf5plugin-7.1.0-*.whl   # rewrites it in place
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import sys
import zipfile
from pathlib import Path

KEEP = ("lz4", "bshuf", "zstd", "blosc", "bzip2")
_PLUGIN = re.compile(r"^hdf5plugin/plugins/libh5(?P<name>[a-z0-9]+?)(?:[-_.].*)?\.(so|dll|dylib)"
                     r"(\.\d+)*$")
_EMBEDDED = re.compile(r"'embedded_filters': \((?P<names>[^)]*)\)")


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode("ascii")


def plugin_name(member: str) -> str | None:
    """``hdf5plugin/plugins/libh5sz3.so`` -> ``sz3``; None for other members."""
    m = _PLUGIN.match(member)
    return m.group("name") if m else None


def trim(src: Path, dst: Path, keep: tuple[str, ...] = KEEP) -> list[str]:
    """Write ``src`` to ``dst`` without the filters outside ``keep``; return the names dropped.

    Raises ``ValueError`` when ``src`` is not an hdf5plugin wheel or lacks a kept filter.
    """
    dropped: list[str] = []
    with zipfile.ZipFile(src) as zin:
        names = zin.namelist()
        config = next((n for n in names if n == "hdf5plugin/_config.py"), None)
        record = next((n for n in names if n.endswith(".dist-info/RECORD")), None)
        if config is None or record is None:
            raise ValueError(f"{src}: not an hdf5plugin wheel (no _config.py or RECORD)")
        present = {plugin_name(n) for n in names} - {None}
        missing = sorted(set(keep) - present)
        if missing:
            raise ValueError(f"{src}: has no {', '.join(missing)} filter")
        text = zin.read(config).decode("utf-8")
        match = _EMBEDDED.search(text)
        if match is None:
            raise ValueError(f"{src}: _config.py lists no embedded_filters")
        listed = re.findall(r"'([^']+)'", match.group("names"))
        kept = tuple(n for n in listed if n in keep)
        new_config = text.replace(match.group(0),
                                  f"'embedded_filters': ({''.join(repr(n) + ', ' for n in kept)})")
        new_config_bytes = new_config.encode("utf-8")
        out_files: dict[str, bytes] = {}
        for info in zin.infolist():
            name = info.filename
            plugin = plugin_name(name)
            if plugin is not None and plugin not in keep:
                dropped.append(plugin)
                continue
            if name in (config, record):
                continue
            out_files[name] = zin.read(info)
        out_files[config] = new_config_bytes
        lines = []
        for line in zin.read(record).decode("utf-8").splitlines():
            path = line.split(",", 1)[0]
            if not path:
                continue
            if path == record:
                lines.append(f"{record},,")
            elif path in out_files:
                data = out_files[path]
                lines.append(f"{path},{_record_hash(data)},{len(data)}")
        out_files[record] = ("\n".join(lines) + "\n").encode("utf-8")
    tmp = dst.with_name(dst.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        for name, data in out_files.items():
            zout.writestr(name, data)
    tmp.replace(dst)
    return sorted(dropped)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wheel", type=Path)
    ap.add_argument("--keep", default=",".join(KEEP), help="filters to keep (comma list)")
    args = ap.parse_args(argv)
    keep = tuple(k.strip() for k in args.keep.split(",") if k.strip())
    before = args.wheel.stat().st_size
    try:
        dropped = trim(args.wheel, args.wheel, keep)
    except (ValueError, zipfile.BadZipFile, OSError) as exc:
        print(f"wheel_trim: error: {exc}", file=sys.stderr)
        return 2
    after = args.wheel.stat().st_size
    print(f"{args.wheel.name}: kept {', '.join(keep)}; dropped {', '.join(dropped) or 'none'}; "
          f"{before / 2**20:.1f} -> {after / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
