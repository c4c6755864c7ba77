"""Deterministic randomness.

Two tools, both independent of PYTHONHASHSEED and of processing order:

* ``Hasher``: a keyed SplitMix64 hash of integer tuples, for per-entity decisions that must be
  answerable in O(1) for any entity at any time ("has person 81723 been seen by institution 4
  before?", "which digit of this identity is mistyped?"). About a microsecond per call.
* ``rng(seed, *parts)``: a ``random.Random`` seeded from the seed and a tuple of parts, for
  generating one entity (a household block, an institution's staff, one day's visits).
"""

from __future__ import annotations

import bisect
import itertools
import random
import zlib

MASK64 = (1 << 64) - 1
TWO64 = float(1 << 64)


def tag(name: str) -> int:
    """A stable integer for a string label (for use inside hashes)."""
    return zlib.crc32(name.encode("utf-8"))


def _mix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


class Hasher:
    def __init__(self, seed: int):
        self.key = _mix64(seed & MASK64)

    def h(self, *parts: int) -> int:
        acc = self.key
        for p in parts:  # _mix64 inlined: this is the generator's hottest loop
            x = ((acc ^ (p & MASK64)) + 0x9E3779B97F4A7C15) & MASK64
            x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
            x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
            acc = x ^ (x >> 31)
        return acc

    def u(self, *parts: int) -> float:
        """Uniform in [0, 1)."""
        return self.h(*parts) / TWO64

    def below(self, n: int, *parts: int) -> int:
        return self.h(*parts) % n


def rng(seed: int, *parts) -> random.Random:
    return random.Random("|".join(str(p) for p in (seed, *parts)))


class Weighted:
    """A fixed weighted choice: ``pick(r)`` with ``r`` a ``random.Random`` or ``pick_u(u)`` with u in [0,1)."""

    __slots__ = ("items", "cum", "total")

    def __init__(self, pairs):
        pairs = list(pairs)
        self.items = [p[0] for p in pairs]
        self.cum = list(itertools.accumulate(float(p[1]) for p in pairs))
        self.total = self.cum[-1]

    def pick(self, r: random.Random):
        return self.items[min(bisect.bisect_right(self.cum, r.random() * self.total), len(self.items) - 1)]

    def pick_u(self, u: float):
        return self.items[min(bisect.bisect_right(self.cum, u * self.total), len(self.items) - 1)]
