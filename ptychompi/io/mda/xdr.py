"""Bounded big-endian XDR reads (4-byte aligned) with precise truncation and corruption
errors."""

from __future__ import annotations

import struct

import numpy as np

# --------------------------------------------------------------------------- XDR


class _Truncated(Exception):
    def __init__(self, pos: int, need: int) -> None:
        super().__init__(pos, need)
        self.pos = pos
        self.need = need


class _Corrupt(Exception):
    def __init__(self, pos: int, what: str) -> None:
        super().__init__(pos, what)
        self.pos = pos
        self.what = what


class _Xdr:
    """A tiny big-endian XDR cursor over an in-memory file."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.size = len(buf)
        self.pos = 0

    def _need(self, n: int) -> int:
        if n < 0 or self.pos + n > self.size:
            raise _Truncated(self.pos, n)
        p = self.pos
        self.pos += n
        return p

    def seek(self, offset: int) -> None:
        if offset < 0:
            raise _Corrupt(self.pos, f"negative offset {offset}")
        if offset >= self.size:
            raise _Truncated(offset, 4)
        self.pos = offset

    def i32(self) -> int:
        return struct.unpack_from(">i", self.buf, self._need(4))[0]

    def f32(self) -> float:
        return struct.unpack_from(">f", self.buf, self._need(4))[0]

    def count(self, what: str, limit: int | None = None, item_bytes: int = 4) -> int:
        """A non-negative int32 count; without ``limit``, bounded by the bytes left."""
        pos = self.pos
        n = self.i32()
        if n < 0 or (limit is not None and n > limit):
            raise _Corrupt(pos, f"{what} = {n} (expected 0..{limit})")
        if limit is None and n * item_bytes > self.size - self.pos:
            raise _Truncated(self.pos, n * item_bytes)
        return n

    def array(self, dtype: str, n: int) -> np.ndarray:
        dt = np.dtype(dtype)
        p = self._need(n * dt.itemsize)
        return np.frombuffer(self.buf, dtype=dt, count=n, offset=p)

    def string(self) -> str:
        """An MDA counted string: int32 n, then (if n > 0) an XDR string."""
        pos = self.pos
        n = self.i32()
        if n < 0:
            raise _Corrupt(pos, f"negative string length {n}")
        if n == 0:
            return ""
        n = self.i32()
        if n < 0:
            raise _Corrupt(pos, f"negative string length {n}")
        p = self._need((n + 3) & ~3)
        return _decode(self.buf[p : p + n])


def _decode(raw: bytes) -> str:
    raw = raw.split(b"\0", 1)[0]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
