"""What a :class:`~ptychompi.backends.Backend` owns and must release: its CPU worker threads
(:class:`WorkerPool`) and the error that any of its resources raises once closed
(:class:`ResourceClosed`). The FFT plans live in :mod:`ptychompi.backends.cpu.fftw`, the compiled
GPU
kernels in :mod:`ptychompi.backends.gpu.kernels`; the backend closes all of them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")

THREAD_PREFIX = "ptychompi"  # the worker threads' names start with this


class ResourceClosed(RuntimeError):
    """A backend (or one of its thread pools, plan or kernel caches) used after close()."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is closed (Backend.close() was called); build a new backend "
                         "with select_backend")


class WorkerPool:
    """``threads`` CPU threads for independent tasks: the calling thread and ``threads - 1``
    pool threads (started on first use, stopped and joined by :meth:`close`).

    One pool serves a backend's chunk loops and its multi-threaded FFTs. A task that itself
    calls :meth:`run` from a pool thread runs its tasks one after another on that thread (no
    task ever waits for a pool thread, so the pool cannot deadlock)."""

    def __init__(self, threads: int, name: str = THREAD_PREFIX) -> None:
        self.threads = max(1, int(threads))
        self._name = name
        self._executor: ThreadPoolExecutor | None = None
        self._idents: set[int] = set()  # the pool threads' identities
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _enter(self) -> None:  # runs first in every pool thread
        self._idents.add(threading.get_ident())

    def _pool(self) -> ThreadPoolExecutor:
        executor = self._executor
        if executor is None:
            with self._lock:
                if self._closed:
                    raise ResourceClosed("the backend's thread pool")
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(
                        self.threads - 1, thread_name_prefix=self._name,
                        initializer=self._enter)
                executor = self._executor
        return executor

    def run(self, tasks: Sequence[Callable[[], T]]) -> list[T]:
        """``[task() for task in tasks]``, ``tasks[0]`` on the calling thread and the others
        on the pool threads at the same time; results in task order. A failure is raised
        once every task has finished (none still writes into shared buffers)."""
        if self._closed:
            raise ResourceClosed("the backend's thread pool")
        if len(tasks) <= 1 or threading.get_ident() in self._idents:
            return [task() for task in tasks]
        pool = self._pool()
        others = [pool.submit(task) for task in tasks[1:]]
        try:
            out = [tasks[0]()]
            for future in others:
                out.append(future.result())
        except BaseException:
            wait(others)
            raise
        return out

    def close(self) -> None:
        """Stop the pool threads (waits for them; idempotent)."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            inside = threading.get_ident() in self._idents  # never join oneself
            executor.shutdown(wait=not inside)
        self._idents.clear()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("started" if self._executor else "idle")
        return f"WorkerPool(threads={self.threads}, {state})"
