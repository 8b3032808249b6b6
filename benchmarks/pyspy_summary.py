"""Summarise a py-spy ``--format raw`` (collapsed stacks) profile of an engine's iterations.

Only samples inside ``Engine.step`` are counted (simulation and set-up are left out). Prints
the top functions by own time (the leaf frame) and by inclusive time, as shares.

    python benchmarks/pyspy_summary.py dm.raw --top 15
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

FRAME = re.compile(r"^(?P<func>[^ ]+) \((?P<file>[^:]+)(?::(?P<line>\d+))?\)$")


def short(frame: str, line: bool = False) -> str:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "ptychompi/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    where = f"{path}:{m.group('line')}" if line and m.group("line") else path
    return f"{m.group('func')} ({where})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--lines", action="store_true", help="time per ptychompi source line")
    ap.add_argument("--within", default="step (", help="keep stacks containing this frame")
    args = ap.parse_args(argv)
    own: collections.Counter = collections.Counter()
    own_lines: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    with open(args.raw) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            frames = stack.split(";")
            if not any(args.within in fr for fr in frames):
                continue
            n = int(count)
            total += n
            names = [short(fr) for fr in frames]
            own[names[-1]] += n
            # the innermost ptychompi line: where numpy/scipy time is spent from
            for fr in reversed(frames):
                if "ptychompi/" in fr:
                    own_lines[short(fr, True)] += n
                    break
            for name in set(names):
                incl[name] += n
    if not total:
        print("no samples inside the engine step", file=sys.stderr)
        return 1
    print(f"{total} samples inside {args.within!r}")
    print("own time:")
    for name, n in own.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {name}")
    if args.lines:
        print("innermost ptychompi line (numpy/scipy time charged to its caller):")
        for name, n in own_lines.most_common(args.top):
            print(f"  {100 * n / total:5.1f}%  {name}")
    print("inclusive:")
    for name, n in incl.most_common(args.top + 10):
        print(f"  {100 * n / total:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
