"""The numerator of LSQML's halo sums to the precision the object holds (issue 20).

A batch's object update is ``O += α ΔO`` with ``ΔO = N / sqrt(D² + λ)`` (D the batch's
illumination, λ = (δ max D)²): a numerator value at a pixel moves the object there by
``α N / sqrt(D² + λ)``, so digits of ``N`` below ``2^-k |O| sqrt(D² + λ)`` move ``O`` by less
than ``2^-k`` of itself (α, the step, is about 1). float32 rounds ``O`` itself at ``2^-24``;
:data:`OBJECT_BITS` = 21 keeps n ranks as close to one rank as the rounding of the sums did
(``tests/mpi/test_invariance.py``; BENCHMARKS.md has the figures for 20 to 24).

The sender rounds each value it sends to a multiple of ``2^e``, ``e = floor(log2(|O|
sqrt(D² + λ'))) - k`` with λ' ≤ λ (from its own largest D), in its own copy too, so every
rank sharing the pixel adds the same numbers. It writes blocks of :data:`BLOCK` pixels as
integers on the block's smallest ``e``: a 2-byte header (a Rice parameter ``r``, the change
of ``e`` from the block before; 4 bytes where it changes by more than 127), then the values
zigzag- and Rice-coded (``z >> r`` in unary, the low ``r`` bits as they are). Values too large
for the scale, or with a zero or not finite scale, travel as float32 (a raw block). The
receiver needs only the pixel count (both sides know the runs); the length varies, so the
messages go point to point.
"""

from __future__ import annotations

import math

import numpy as np

from ..backends.cpu.jit import JIT, jit

BLOCK = 16  # pixels per block (two float32 values each)
RAW = 255  # the Rice parameter of a block sent as float32 (a 1-byte header)
ESCAPE = 128  # exponent change byte: a full int16 exponent follows
NONE = -32768  # exponent of a pixel sent as it is (no scale)
POW0 = 1100  # POW2[POW0 + i] = 2^i (0 or inf beyond float64's range)
POW2 = np.array([math.ldexp(1.0, i - POW0) if i - POW0 < 1024 else math.inf
                 for i in range(2 * POW0 + 1)])
TRAILING = np.array([0] + [(i & -i).bit_length() - 1 for i in range(1, 256)], np.int64)
OBJECT_BITS = 21  # k: the numerator's digits kept below the object's (complex64)


@jit(JIT)
def gather_quantized(src: np.ndarray, y0: int, x0: int, runs: np.ndarray, obj: np.ndarray,
                     illum: np.ndarray, floor: float, bits: int, out: np.ndarray,
                     exps: np.ndarray) -> int:
    """Round the pixels of ``runs`` (``[y, x0, x1)``, offset by (y0, x0) in the box arrays)
    of ``src`` (complex64) to multiples of ``2^e(p)``, ``e = floor(log2(|obj| sqrt(illum² +
    floor))) - bits``, in place, and gather them into ``out`` (float32 pairs) with ``exps``;
    the count. Rounding twice gives the same value."""
    k = 0
    word = np.empty(1, np.float64)
    word_bits = word.view(np.int64)
    for r in range(runs.shape[0]):
        y = y0 + runs[r, 0]
        for x in range(x0 + runs[r, 1], x0 + runs[r, 2]):
            v = src[y, x]
            re, im = float(v.real), float(v.imag)
            d = float(illum[y, x])
            o = obj[y, x]
            s2 = (float(o.real) ** 2 + float(o.imag) ** 2) * (d * d + floor)  # the scale²
            e = NONE
            if s2 > 1e-300 and s2 < 1e300:  # normal: floor(log2 s) from s²'s exponent bits
                word[0] = s2
                e = ((((word_bits[0] >> 52) & 2047) - 1023) >> 1) - bits
                down, up = POW2[POW0 - e], POW2[POW0 + e]  # exact powers of two
                a, b = re * down, im * down
                if abs(a) < 4194304.0 and abs(b) < 4194304.0:  # 2^22: fits a block's int
                    src[y, x] = complex(math.floor(a + 0.5) * up, math.floor(b + 0.5) * up)
                    re, im = float(src[y, x].real), float(src[y, x].imag)
                else:
                    e = NONE  # already coarser than the scale: sent as it is
            out[2 * k], out[2 * k + 1] = re, im
            exps[k] = e
            k += 1
    return k


@jit(JIT)
def encode(vals: np.ndarray, words: np.ndarray, exps: np.ndarray, n: int,
           buf: np.ndarray) -> int:
    """Write ``n`` pixels (``vals``: float32 pairs rounded by :func:`gather_quantized`;
    ``words``: the same memory as uint32) into ``buf`` in blocks: per block the smallest
    exponent, then the values as integers on it, zigzag- and Rice-coded with the block's
    best parameter ``r`` (``z >> r`` in unary, then ``r`` low bits); the bytes written (at
    most :func:`max_bytes`)."""
    pos, last = 0, 0
    zs = np.empty(2 * BLOCK, np.int64)
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        nv = 2 * (stop - start)
        emin, raw = 32767, False
        for p in range(start, stop):
            if exps[p] == NONE:
                raw = True
            emin = min(emin, exps[p])
        if not raw:
            down = POW2[POW0 - int(emin)]
            for t in range(nv):
                q = float(vals[2 * start + t]) * down
                if abs(q) >= 2147483648.0:
                    raw = True
                    break
                iq = int(q)
                zs[t] = (iq << 1) ^ (iq >> 63)
        best, cost = RAW, 32 * nv  # bits; no better than float32: raw
        if not raw:
            mean = 0.0
            for t in range(nv):
                mean += float(zs[t])
            mean /= nv
            r0 = math.frexp(mean)[1] - 1 if mean >= 1.0 else 0  # near the best Rice parameter
            for r in range(max(r0 - 2, 0), min(r0 + 2, 31) + 1):
                c = 0
                for t in range(nv):
                    c += (zs[t] >> r) + 1 + r
                if c < cost:
                    best, cost = r, c
        if best == RAW:
            buf[pos] = RAW
            pos += 1
            for i in range(2 * start, 2 * stop):
                b = words[i]
                for j in range(4):
                    buf[pos + j] = (b >> (8 * j)) & 255
                pos += 4
            continue
        buf[pos] = best
        delta = emin - last
        if -127 <= delta <= 127:  # the exponent as a change from the block before
            buf[pos + 1] = delta & 255
            pos += 2
        else:
            u = emin & 65535
            buf[pos + 1], buf[pos + 2], buf[pos + 3] = ESCAPE, u & 255, u >> 8
            pos += 4
        last = emin
        acc, filled = 0, 0  # bits not yet written (at most 8 + 1 + 31: int64)
        mask = (1 << best) - 1
        for t in range(nv):
            filled += zs[t] >> best  # unary: zeros, then a one
            while filled >= 8:
                buf[pos] = acc & 255
                acc >>= 8
                pos += 1
                filled -= 8
            acc |= ((((zs[t] & mask) << 1) | 1) << filled)
            filled += best + 1
            while filled >= 8:
                buf[pos] = acc & 255
                acc >>= 8
                pos += 1
                filled -= 8
        if filled > 0:
            buf[pos] = acc & 255
            pos += 1
    return pos


@jit(JIT)
def decode(buf: np.ndarray, n: int, out: np.ndarray, words: np.ndarray) -> int:
    """Read ``n`` pixels written by :func:`encode` into ``out`` (float32 pairs; ``words``:
    the same memory as uint32); the bytes read."""
    pos, emin = 0, 0
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        r = int(buf[pos])
        pos += 1
        if r != RAW:
            delta = int(buf[pos])
            if delta == ESCAPE:
                emin = int(buf[pos + 1]) | (int(buf[pos + 2]) << 8)
                emin = emin - 65536 if emin >= 32768 else emin
                pos += 3
            else:
                emin += delta - 256 if delta >= 128 else delta
                pos += 1
        if r == RAW:
            for i in range(2 * start, 2 * stop):
                b = np.uint32(0)
                for j in range(4):
                    b |= np.uint32(buf[pos + j]) << np.uint32(8 * j)
                words[i] = b
                pos += 4
            continue
        acc, filled = 0, 0
        mask = (1 << r) - 1
        up = POW2[POW0 + int(emin)]
        for i in range(2 * start, 2 * stop):
            high = 0
            while acc == 0:  # unary: the zeros up to the next one
                high += filled
                acc = int(buf[pos])
                pos += 1
                filled = 8
            t = 0
            while acc & (255 << t) == 0:
                t += 8
            t += TRAILING[(acc >> t) & 255]
            high += t
            acc >>= t + 1
            filled -= t + 1
            while filled < r:
                acc |= int(buf[pos]) << filled
                pos += 1
                filled += 8
            z = (high << r) | (acc & mask)
            acc >>= r
            filled -= r
            q = (z >> 1) ^ -(z & 1)
            out[i] = float(q) * up
    return pos


def max_bytes(n: int) -> int:
    """The most bytes :func:`encode` writes for ``n`` pixels (every block raw)."""
    return -(-n // BLOCK) * 4 + 8 * n
