"""A scan being written: the rows of an ``.npz`` of frames as APS row files, one at a time.

``python follow_writer.py FRAMES.npz DIR --rows R [--delay S] [--stop K] [--slow S]
[--preview FILE] [--log FILE]`` writes ``DIR/scan_%03d.h5`` (from 1), row i holding frames
``i*F .. (i+1)*F-1`` (F = frames / R), ``--delay`` seconds apart. ``--stop K``: stop after K
rows (an aborted scan). ``--slow S``: each row file is created with its whole dataset (filled
with NaN) and its frames written one by one, flushed, ``S`` seconds apart, while the file stays
open. ``--preview FILE``: before the last row, wait (up to 60 s) until FILE exists, else exit
3 (the reconstruction showed nothing before the scan ended). ``--log``: one line per row,
``row <i> <time.time() when complete>``.
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
    a = p.parse_args()
    frames = np.load(a.frames)["frames"]
    per = len(frames) // a.rows
    rows = a.rows if a.stop is None else a.stop
    log = open(a.log, "w") if a.log else sys.stdout  # noqa: SIM115
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
