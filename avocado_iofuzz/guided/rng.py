"""The scheduler's randomness: a counter-based stream, the same on every Python and platform.

Guided rounds must come out the same for the same seed and corpus state, on
any host; ``random.Random`` keeps no such promise for its derived methods
across Python versions, the op model's splitmix64 stream does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from avocado_iofuzz.model.program import MASK64, mix64, random_word

T = TypeVar("T")


class Stream:
    """Draws from ``mix64(seed) + k * GAMMA``, k = 0, 1, ...; derive independent streams with :meth:`fork`."""

    def __init__(self, seed: int) -> None:
        self.seed = mix64(seed & MASK64)
        self.drawn = 0

    def word(self) -> int:
        value = random_word(self.seed, self.drawn)
        self.drawn += 1
        return value

    def below(self, n: int) -> int:
        """Uniform in ``0 .. n-1`` (multiply-shift)."""
        if n <= 0:
            raise ValueError(f"below({n}): n must be positive")
        return (self.word() * n) >> 64

    def between(self, low: int, high: int) -> int:
        """Uniform in ``low .. high`` (inclusive)."""
        return low + self.below(high - low + 1)

    def chance(self, numerator: int, denominator: int) -> bool:
        return self.below(denominator) < numerator

    def choice(self, items: Sequence[T]) -> T:
        return items[self.below(len(items))]

    def weighted(self, items: Sequence[T], weights: Sequence[int]) -> T:
        total = sum(weights)
        if total <= 0:
            return self.choice(items)
        point = self.below(total)
        for item, weight in zip(items, weights, strict=True):
            if point < weight:
                return item
            point -= weight
        return items[-1]

    def fork(self, salt: int) -> Stream:
        return Stream(self.seed ^ mix64(salt + 1))
