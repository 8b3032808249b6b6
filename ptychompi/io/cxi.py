"""CXI files (Coherent X-ray Imaging format, cxi_version 160): a lazy reader and a writer.

Layout read and written (SI units, DESIGN.md section 7)::

    /entry_1/instrument_1/detector_1/{data, mask, distance, x_pixel_size, y_pixel_size,
                                       basis_vectors}
    /entry_1/instrument_1/source_1/{energy (J), wavelength (m), illumination}
    /entry_1/sample_1/geometry_1/translation      (N, 3) sample motion x, y, z in metres
    /entry_1/data_1/{data, translation}          soft links to the two above

Positions (DESIGN.md section 3): CXI translations are *sample* motion, so the beam's position
on the sample is ``-t``; its coordinate along a detector array axis is the projection of
``-t`` on that axis' unit basis vector. With the default basis vectors (rows along -y,
columns along -x) this gives ``row = +y``, ``col = +x``. A file whose basis vectors differ
(flipped or transposed axes, even rotated ones) is handled by the same projection.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..data.scan import ScanGeometry, ScanSource
from ..errors import DataError, squash
from ..model.geometry import ELECTRON_VOLT_J, HC_KEV_M
from . import filters
from .atomic import atomic_h5

DETECTOR = "/entry_1/instrument_1/detector_1"
SOURCE = "/entry_1/instrument_1/source_1"
TRANSLATION = "/entry_1/sample_1/geometry_1/translation"
DATA_LINKS = "/entry_1/data_1"

HC_J_M = HC_KEV_M * 1e3 * ELECTRON_VOLT_J  # h c in joule metres

# HDF5 filter ids of common plugin compressors (h5py names only gzip/lzf/szip itself).
_FILTER_NAMES = {1: "gzip", 2: "shuffle", 3: "fletcher32", 4: "szip", 32000: "lzf",
                 307: "bzip2", 32001: "blosc", 32004: "lz4", 32008: "bitshuffle",
                 32015: "zstd", 32017: "sz", 32026: "blosc2"}

_READ_SPAN_BYTES = 256 << 20  # merge nearby index runs into one read up to this size


def _default_basis(pixel_row_m: float, pixel_col_m: float) -> np.ndarray:
    """CXI default basis vectors (2, 3): rows along -y, columns along -x."""
    return np.array([[0.0, -pixel_row_m, 0.0], [-pixel_col_m, 0.0, 0.0]])


def _basis_2x3(raw: np.ndarray | None) -> np.ndarray | None:
    """Basis vectors as (2, 3) (one lab-frame vector per array axis), from (2,3) or (3,2)."""
    if raw is None:
        return None
    b = np.asarray(raw, dtype=np.float64)
    if b.shape == (3, 2):
        b = b.T
    elif b.ndim == 3 and b.shape[-2:] == (2, 3):  # per-frame basis: take the first
        b = b[0]
    if b.shape != (2, 3) or not np.all(np.isfinite(b)):
        return None
    if np.any(np.linalg.norm(b, axis=1) == 0):
        return None
    return b


def translation_to_positions(translation: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """Sample translations (N, 3) x,y,z to beam positions (N, 2) (row, col) in metres."""
    t = np.asarray(translation, dtype=np.float64)
    b = _basis_2x3(basis)
    if b is None:
        b = _default_basis(1.0, 1.0)
    unit = b / np.linalg.norm(b, axis=1, keepdims=True)
    return -(t @ unit.T)


def positions_to_translation(positions_m: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """Inverse of :func:`translation_to_positions` (least squares for a non-orthogonal basis)."""
    pos = np.asarray(positions_m, dtype=np.float64).reshape(-1, 2)
    b = _basis_2x3(basis)
    if b is None:
        b = _default_basis(1.0, 1.0)
    unit = b / np.linalg.norm(b, axis=1, keepdims=True)
    return -(pos @ np.linalg.pinv(unit).T)


def _compression_name(ds: h5py.Dataset) -> str:
    """Name of the compression filter(s) of a dataset, ``"none"`` if uncompressed."""
    try:
        plist = ds.id.get_create_plist()
        ids = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    except Exception:  # noqa: BLE001 - exotic plist: fall back to h5py's own view
        return ds.compression or "none"
    names = [_FILTER_NAMES.get(i, f"filter {i}") for i in ids
             if i not in (2, 3)]  # shuffle and checksum are not compressors
    return "+".join(names) if names else "none"


def _scalar(f: h5py.File, path: str) -> float | None:
    obj = f.get(path)
    if not isinstance(obj, h5py.Dataset):
        return None
    val = np.asarray(obj[()], dtype=np.float64).reshape(-1)
    if val.size == 0 or not np.isfinite(val[0]) or val[0] <= 0:
        return None
    return float(val[0])


def _first_dataset(f: h5py.File, paths: list[str]) -> h5py.Dataset | None:
    for p in paths:
        try:
            obj = f.get(p)
        except (KeyError, RuntimeError, OSError):  # dangling soft link
            obj = None
        if isinstance(obj, h5py.Dataset):
            return obj
    return None


def _runs(indices: np.ndarray, chunk_rows: int, row_bytes: int) -> list[tuple[int, int]]:
    """Split sorted unique indices into [start, stop) spans to read as slices.

    Consecutive indices form a run; runs closer than one chunk along the frame axis are
    merged (they share HDF5 chunks, so reading the gap costs no extra decompression), as long
    as a span stays under ``_READ_SPAN_BYTES``.
    """
    spans: list[tuple[int, int]] = []
    start = prev = int(indices[0])
    for i in indices[1:]:
        i = int(i)
        gap_ok = i - prev == 1 or (i // chunk_rows == prev // chunk_rows)
        if gap_ok and (i + 1 - start) * row_bytes <= _READ_SPAN_BYTES:
            prev = i
            continue
        spans.append((start, prev + 1))
        start = prev = i
    spans.append((start, prev + 1))
    return spans


@dataclass
class CXIScan(ScanSource):
    """A CXI scan on disk. Frames are read on demand; the file opens on the first read."""

    data_path: str = DETECTOR + "/data"
    swmr: bool = False  # a file still written under HDF5 SWMR (run --follow)
    _file: Any = field(default=None, repr=False, compare=False)

    def _dataset(self) -> h5py.Dataset:
        if self._file is None:
            if self.compression != "none":
                filters.load()  # LZ4/bitshuffle/zstd through hdf5plugin
            try:
                self._file = h5py.File(self.path, "r", rdcc_nbytes=64 << 20,
                                       **_swmr_options(self.swmr))
            except OSError as exc:
                raise DataError(f"{self.path}: cannot open ({squash(exc)}); check the "
                                "file is complete and readable") from None
        return self._file[self.data_path]

    def _read_sorted(self, indices: np.ndarray) -> np.ndarray:
        ds = self._dataset()
        if self.swmr:
            ds.refresh()  # the frames the writer has flushed since
        idx = np.asarray(indices, dtype=np.int64)
        chunk_rows = ds.chunks[0] if ds.chunks else 1
        row_bytes = int(np.prod(ds.shape[1:])) * ds.dtype.itemsize
        out = np.empty((len(idx), *ds.shape[1:]), dtype=ds.dtype)
        k = 0
        for a, b in _runs(idx, chunk_rows, row_bytes):
            sel = idx[(idx >= a) & (idx < b)]
            block = ds[a:b]
            if len(sel) == b - a:
                out[k:k + len(sel)] = block
            else:
                out[k:k + len(sel)] = block[sel - a]
            k += len(sel)
        return out

    def close(self) -> None:
        """Close the HDF5 file if a read opened it."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None  # h5py handles do not pickle; reopen on demand
        return state


def _swmr_options(swmr: bool) -> dict[str, Any]:
    return {"libver": "latest", "swmr": True} if swmr else {}


def read_cxi(path: str | os.PathLike, swmr: bool = False) -> CXIScan:
    """Open a CXI scan lazily: metadata and positions now, frames on :meth:`CXIScan.read`.

    Raises a one-line :class:`DataError` naming the file, the dataset and the fix for a
    missing file, a non-HDF5 file, missing frames or translations, frames that are not 3-D
    and frame/translation counts that differ. ``swmr``: the file is still being written
    under HDF5 SWMR (``run --follow``); the scan is its translations (the planned scan,
    written first) and frames may still be missing.
    """
    p = str(path)
    if not Path(p).is_file():
        raise DataError(f"{p}: no such file; check data.path")
    if not h5py.is_hdf5(p):
        raise DataError(f"{p}: not an HDF5 file; a CXI scan (HDF5, /entry_1/...) is expected")
    try:
        f = h5py.File(p, "r", **_swmr_options(swmr))
    except OSError as exc:
        raise DataError(f"{p}: cannot open as HDF5 ({squash(exc)}); check the file is "
                        "complete") from None
    with f:
        ds = _first_dataset(f, [DATA_LINKS + "/data", DETECTOR + "/data"])
        if ds is None:
            raise DataError(f"{p}: no frames at {DETECTOR}/data (or {DATA_LINKS}/data); "
                            "is this a CXI file? set data.format for other layouts")
        if ds.ndim != 3:
            raise DataError(f"{p}: {ds.name} has shape {ds.shape}; frames must be 3-D "
                            "(N, rows, cols)")
        filters.require_readable(ds, p, _FILTER_NAMES)
        n, m_r, m_c = (int(s) for s in ds.shape)
        tr = _first_dataset(f, [DATA_LINKS + "/translation", TRANSLATION])
        if tr is None:
            raise DataError(f"{p}: no positions at {TRANSLATION} (or {DATA_LINKS}/translation);"
                            " a CXI scan needs the sample translations in metres")
        translation = np.asarray(tr[()], dtype=np.float64)
        if translation.ndim == 1:
            translation = translation[:, None]
        if translation.ndim != 2 or translation.shape[1] not in (2, 3):
            raise DataError(f"{p}: {tr.name} has shape {tr.shape}; expected (N, 3) x, y, z")
        if translation.shape[1] == 2:
            translation = np.column_stack([translation, np.zeros(len(translation))])
        if swmr and n <= len(translation):
            n = len(translation)  # frames still to come
        if len(translation) != n:
            raise DataError(f"{p}: {n} frames in {ds.name} but {len(translation)} "
                            f"translations in {tr.name}; they must have the same length")

        det = f.get(DETECTOR)
        det = det if isinstance(det, h5py.Group) else {}
        raw_basis = det["basis_vectors"][()] if "basis_vectors" in det else None
        basis = _basis_2x3(raw_basis)
        positions = translation_to_positions(translation, basis)

        mask = None
        if isinstance(det.get("mask"), h5py.Dataset):
            bits = np.asarray(det["mask"][()])
            if bits.ndim == 3:  # per-frame masks: a pixel is valid only if valid everywhere
                bits = np.bitwise_or.reduce(bits.astype(np.uint32), axis=0)
            mask = bits == 0  # a shape that differs from the frames fails validate()

        energy_j = _scalar(f, SOURCE + "/energy")
        wl_file = _scalar(f, SOURCE + "/wavelength")
        wavelength = HC_J_M / energy_j if energy_j else wl_file
        x_pix = _scalar(f, DETECTOR + "/x_pixel_size")
        y_pix = _scalar(f, DETECTOR + "/y_pixel_size")
        geometry = ScanGeometry(wavelength_m=wavelength,
                                distance_m=_scalar(f, DETECTOR + "/distance"),
                                detector_pixel_m=x_pix or y_pix)

        illumination = None
        ill = _first_dataset(f, [SOURCE + "/illumination", SOURCE + "/probe"])
        if ill is not None and ill.ndim in (2, 3) and ill.shape[-2:] == (m_r, m_c):
            illumination = np.asarray(ill[()]).astype(np.complex64)

        metadata = {"energy_j": energy_j, "wavelength_file_m": wl_file,
                    "x_pixel_size_m": x_pix, "y_pixel_size_m": y_pix,
                    "basis_vectors": basis, "translation_m": translation,
                    "chunks": ds.chunks, "data_path": ds.name,
                    "cxi_version": _scalar(f, "/cxi_version")}
        scan = CXIScan(path=p, n_frames=n, frame_shape=(m_r, m_c), dtype=ds.dtype,
                       positions_m=positions, mask=mask, geometry=geometry,
                       illumination=illumination, compression=_compression_name(ds),
                       metadata=metadata, data_path=ds.name, swmr=swmr)
    scan.validate()
    return scan


def write_cxi(path: str | os.PathLike, frames: np.ndarray, positions_m: np.ndarray, *,
              distance_m: float, pixel_size_m: float, energy_j: float | None = None,
              wavelength_m: float | None = None, mask: np.ndarray | None = None,
              illumination: np.ndarray | None = None, compression: str | None = "gzip",
              basis_vectors: np.ndarray | None = None) -> str:
    """Write a CXI scan atomically (temporary name, then rename); returns the path.

    ``positions_m`` are (row, col) beam positions in metres, converted back to sample
    translations so that :func:`read_cxi` returns them unchanged. ``mask`` is True on valid
    pixels and is stored as the CXI bit field (1 = invalid). ``compression`` is ``"gzip"``,
    ``"lz4"`` or ``None``. ``basis_vectors`` (2, 3) default to rows along -y, columns -x.
    """
    p = str(path)
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise DataError(f"{p}: frames have shape {frames.shape}; expected (N, rows, cols)")
    n, m_r, m_c = frames.shape
    pos = np.asarray(positions_m, dtype=np.float64).reshape(-1, 2)
    if len(pos) != n:
        raise DataError(f"{p}: {n} frames but {len(pos)} positions; they must match")
    if energy_j is None and wavelength_m is None:
        raise DataError(f"{p}: give energy_j or wavelength_m to write a CXI file")
    if energy_j is None:
        energy_j = HC_J_M / wavelength_m
    if wavelength_m is None:
        wavelength_m = HC_J_M / energy_j
    basis = (_default_basis(pixel_size_m, pixel_size_m) if basis_vectors is None
             else _basis_2x3(basis_vectors))
    if basis is None:
        raise DataError(f"{p}: basis_vectors must be (2, 3) non-zero lab-frame vectors")
    translation = positions_to_translation(pos, basis)

    if compression == "gzip":
        comp: dict[str, Any] = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    elif compression == "lz4":
        comp = filters.lz4(p)
    elif compression in (None, "none"):
        comp = {}
    else:
        raise DataError(f"{p}: unknown compression {compression!r}; use gzip, lz4 or None")

    Path(p).parent.mkdir(parents=True, exist_ok=True)
    with atomic_h5(p) as f:
        f.create_dataset("cxi_version", data=160)
        f.create_dataset("number_of_entries", data=1)
        det = f.create_group(DETECTOR)
        data = det.create_dataset("data", data=frames, chunks=(1, m_r, m_c), **comp)
        data.attrs["axes"] = "translation:y:x"
        det.create_dataset("distance", data=float(distance_m))
        det.create_dataset("x_pixel_size", data=float(pixel_size_m))
        det.create_dataset("y_pixel_size", data=float(pixel_size_m))
        det.create_dataset("basis_vectors", data=basis)
        if mask is not None:
            valid = np.asarray(mask, dtype=bool)
            if valid.shape != (m_r, m_c):
                raise DataError(f"{p}: mask shape {valid.shape} does not match frames "
                                f"{(m_r, m_c)}")
            det.create_dataset("mask", data=(~valid).astype(np.uint32))
        src = f.create_group(SOURCE)
        src.create_dataset("energy", data=float(energy_j))
        src.create_dataset("wavelength", data=float(wavelength_m))
        if illumination is not None:
            src.create_dataset("illumination", data=np.asarray(illumination))
        geo = f.create_group("/entry_1/sample_1/geometry_1")
        geo.create_dataset("translation", data=translation)
        links = f.create_group(DATA_LINKS)
        links["data"] = h5py.SoftLink(DETECTOR + "/data")
        links["translation"] = h5py.SoftLink(TRANSLATION)
    return p
