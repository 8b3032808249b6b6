"""A scan being written: the rows of an ``.npz`` of frames as APS row files, one at a time.

``python follow_writer.py FRAMES.npz DIR --rows R [--delay S] [--stop K] [--slow S]
[--preview FILE] [--log FILE]`` writes ``DIR/scan_%03d.h5`` (from 1), row i holding frames
``i*F .. (i+1)*F-1`` (F = frames / R), ``--delay`` seconds apart. ``--stop K``: stop after K
rows (an aborted scan). ``--slow S``: each row file is created with its whole dataset (filled
with NaN) and its frames written one by one, flushed, ``S`` seconds apart, while the file stays
open. ``--preview FILE``: before the last row, wait (up to 60 s) until FILE exists, else exit
3 (the reconstruction showed nothing before the scan ended). ``--log``: one line per row,
``row <i> <time.time() when complete>``. ``--cxi``: OUT is one CXI file written under HDF5
SWMR instead (the npz also holds ``positions_m``, ``energy_j``, ``distance_m``,
``pixel_m``): the translations of the whole scan first, then each row's frames appended and
flushed (with ``--slow``, frame by frame, each frame's extent flushed before its data).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import h5py
import numpy as np

DATASET = "/entry/data/data"


def write_row(path: str, block: np.ndarray, slow: float) -> None:
    with h5py.File(path, "w") as f:
        if slow <= 0:
            f.create_dataset(DATASET, data=block)
            return
        ds = f.create_dataset(DATASET, shape=block.shape, dtype=np.float32,
                              fillvalue=np.nan)
        for k in range(len(block)):
            ds[k] = block[k]
            f.flush()
            time.sleep(slow)


def write_cxi_swmr(out: str, npz: dict, rows: int, per: int, delay: float,
                   slow: float, log: object) -> None:
    from ptychompi.io import cxi  # noqa: PLC0415

    DATA_LINKS, DETECTOR, SOURCE, TRANSLATION = (
        cxi.DATA_LINKS, cxi.DETECTOR, cxi.SOURCE, cxi.TRANSLATION)
    _default_basis, positions_to_translation = cxi._default_basis, cxi.positions_to_translation

    frames = npz["frames"]
    pixel = float(npz["pixel_m"])
    basis = _default_basis(pixel, pixel)
    m = frames.shape[1:]
    with h5py.File(out, "w", libver="latest") as f:
        f.create_dataset("cxi_version", data=160)
        det = f.create_group(DETECTOR)
        data = det.create_dataset("data", shape=(0, *m), maxshape=(None, *m),
                                  dtype=np.float32, chunks=(1, *m), fillvalue=np.nan)
        det.create_dataset("distance", data=float(npz["distance_m"]))
        det.create_dataset("x_pixel_size", data=pixel)
        det.create_dataset("y_pixel_size", data=pixel)
        det.create_dataset("basis_vectors", data=basis)
        f.create_group(SOURCE).create_dataset("energy", data=float(npz["energy_j"]))
        f.create_dataset(TRANSLATION, data=positions_to_translation(npz["positions_m"], basis))
        links = f.create_group(DATA_LINKS)
        links["data"] = h5py.SoftLink(DETECTOR + "/data")
        links["translation"] = h5py.SoftLink(TRANSLATION)
        f.swmr_mode = True
        for i in range(rows):
            block = frames[i * per:(i + 1) * per]
            if slow <= 0:
                data.resize(len(data) + len(block), axis=0)
                data[-len(block):] = block
                data.flush()
            for frame in block if slow > 0 else ():
                data.resize(len(data) + 1, axis=0)
                data.flush()  # the extent first: a reader may see a NaN frame for a moment
                time.sleep(slow / 3)
                data[-1] = frame
                data.flush()
                time.sleep(slow)
            print(f"row {i} {time.time():.3f}", file=log, flush=True)
            if i < rows - 1:
                time.sleep(delay)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("frames")
    p.add_argument("out")
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--delay", type=float, default=0.3)
    p.add_argument("--stop", type=int, default=None)
    p.add_argument("--slow", type=float, default=0.0)
    p.add_argument("--preview", default=None)
    p.add_argument("--log", default=None)
    p.add_argument("--cxi", action="store_true")
    a = p.parse_args()
    npz = dict(np.load(a.frames))
    frames = npz["frames"]
    per = len(frames) // a.rows
    rows = a.rows if a.stop is None else a.stop
    log = open(a.log, "w") if a.log else sys.stdout
    if a.cxi:
        write_cxi_swmr(a.out, npz, rows, per, a.delay, a.slow, log)
        return 0
    for i in range(rows):
        if a.preview and i == a.rows - 1:
            t0 = time.monotonic()
            while not os.path.exists(a.preview):
                if time.monotonic() - t0 > 60:
                    return 3
                time.sleep(0.05)
        write_row(os.path.join(a.out, f"scan_{i + 1:03d}.h5"), frames[i * per:(i + 1) * per],
                  a.slow)
        print(f"row {i} {time.time():.3f}", file=log, flush=True)
        if i < rows - 1:
            time.sleep(a.delay)
    return 0


if __name__ == "__main__":
    sys.exit(main())
