"""``ptychompi`` with one fault injected, for tests/faults: ``python driver.py run CFG ...``.

``PTYCHOMPI_FAULT`` holds a JSON object; ``rank`` picks the rank it happens on (default 0):

* ``{"kind": "kill", "iteration": k}``: SIGKILL this rank right after iteration k.
* ``{"kind": "signal", "iteration": k, "signum": s}``: send signal s to this rank there.
* ``{"kind": "kill_writing", "where": "state" | "checkpoint", "iteration": k}``: SIGKILL this
  rank halfway through writing its checkpoint state file (or rank 0's checkpoint.h5) of
  iteration k, leaving a half-written temporary.
* ``{"kind": "fill", "event": n, "filler": PATH}``: at this rank's n-th file write
  (checkpoint state, checkpoint.h5, result.h5, each export file), fill the disk by writing
  PATH until it is full, then let the write go on into a real ENOSPC.
* ``{"kind": "enospc", "event": n}``: the same without a disk to fill (no root): the n-th
  write fails with ENOSPC once its temporary is written.
* ``{"kind": "raise", "where": "inputs" | "engine"}``: ``MemoryError`` on this rank only
  while the starting guesses are made (no collectives) or inside the engine's constructor,
  after the other ranks have entered its first collective.

``"trace": PATH`` appends each write's file name to PATH (to count the writes).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from mpi4py import MPI

from ptychompi.app import api, checkpoint
from ptychompi.app.cli import main as cli_main
from ptychompi.io import atomic, export, results


def fill_disk(path: str) -> None:
    """Write ``path`` until the file system is full (smaller and smaller blocks)."""
    with open(path, "ab", buffering=0) as fh:
        for size in (1 << 20, 1 << 16, 4096, 512, 1):
            block = b"\0" * size
            while True:
                try:
                    fh.write(block)
                except OSError:
                    break


def _suicide() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _at_iteration(spec: dict, action: Callable[[], None]) -> None:
    original = api.Reconstruction.step

    def step(self: Any, n: int = 1) -> dict:
        metrics = original(self, n)
        if self.iteration == spec["iteration"]:
            action()
        return metrics

    api.Reconstruction.step = step


def _kill_writing(spec: dict) -> None:
    if spec["where"] == "state":
        real_state = checkpoint._write_state

        def write_state(path: Any, state: dict) -> None:
            if int(state["iteration"]) == spec["iteration"]:
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.is_file():  # as the real writer does first
                    os.replace(path, checkpoint.previous_path(path))
                with atomic.atomic_h5(path) as f:
                    for key, value in list(state.items())[:2]:
                        f.create_dataset(key, data=np.asarray(value))
                    f.flush()
                    _suicide()
            real_state(path, state)

        checkpoint._write_state = write_state
        return
    real_result = results.write_result

    def write_result(path: str, data: Any) -> None:
        if (str(path).endswith("checkpoint.h5")
                and data.provenance.get("checkpoint_iteration") == spec["iteration"]):
            with atomic.atomic_h5(path) as f:
                f.create_dataset("object", data=data.object)
                f.flush()
                _suicide()
        real_result(path, data)

    results.write_result = write_result


def _disk_faults(spec: dict) -> None:
    count = [0]

    def wrap(real: Callable[[Any], Any]) -> Callable[[Any], Any]:
        @contextlib.contextmanager
        def writer(path: Any) -> Iterator[Any]:
            count[0] += 1
            hit = count[0] == spec["event"]
            if spec.get("trace"):
                with open(spec["trace"], "a") as fh:
                    fh.write(f"{os.path.basename(str(path))}\n")
            if hit and spec["kind"] == "fill":
                fill_disk(spec["filler"])
            with real(path) as handle:
                yield handle
                if hit and spec["kind"] == "enospc":
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return writer

    results.atomic_h5 = wrap(atomic.atomic_h5)
    checkpoint.atomic_h5 = wrap(atomic.atomic_h5)
    export.atomic_path = wrap(atomic.atomic_path)


def _raise_in(spec: dict) -> None:
    def fail(*_: Any, **__: Any) -> Any:
        raise MemoryError("injected: out of memory on this rank")

    if spec["where"] == "inputs":
        api.Reconstruction._engine_inputs = fail
        return
    engine_cls = api.ENGINES["lsqml"]
    real_shifts = engine_cls._global_shifts

    def global_shifts(self: Any) -> Any:
        real_shifts(self)  # the first collectives, matched by every rank
        raise MemoryError("injected: out of memory on this rank")

    engine_cls._global_shifts = global_shifts


def main() -> int:
    spec = json.loads(os.environ.get("PTYCHOMPI_FAULT") or "{}")
    kind = spec.get("kind")
    if kind and MPI.COMM_WORLD.Get_rank() == spec.get("rank", 0):
        if kind == "kill":
            _at_iteration(spec, _suicide)
        elif kind == "signal":
            _at_iteration(spec, lambda: os.kill(os.getpid(), spec["signum"]))
        elif kind == "kill_writing":
            _kill_writing(spec)
        elif kind in ("fill", "enospc"):
            _disk_faults(spec)
        elif kind == "raise":
            _raise_in(spec)
        else:
            raise SystemExit(f"driver: unknown fault {kind!r}")
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
