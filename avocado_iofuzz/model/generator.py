"""The counter-based generator every op sequence and scratch fill is drawn from.

splitmix64's output function applied to ``seed + (k+1) * GAMMA``: output ``k``
is computed in O(1) without the ones before it. The in-guest executor has the
same three functions (``executor/iofuzz_exec.c``).
"""

from __future__ import annotations

MASK64 = (1 << 64) - 1
# splitmix64's increment (2**64 / golden ratio, odd): consecutive counters map
# to well-spread inputs of the mixing function.
GAMMA = 0x9E3779B97F4A7C15


def mix64(z: int) -> int:
    """splitmix64's finaliser: a bijection on 64-bit words with good avalanche."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def range_seed(seed: int, start: int, end: int) -> int:
    """The generator seed of one range, from the run seed and the range bounds only."""
    h = mix64(seed + GAMMA)
    h = mix64((h ^ start) + GAMMA)
    return mix64((h ^ end) + GAMMA)


def random_word(rseed: int, k: int) -> int:
    """Output ``k`` (0-based) of the counter-based generator seeded with ``rseed``."""
    return mix64(rseed + (k + 1) * GAMMA)
