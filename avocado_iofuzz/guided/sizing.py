"""How many ops the next round gets when rounds are meant to last a given time (the side-by-side benchmark).

A guided round mixes cheap batches (a few ports) and expensive ones (an MMIO
BAR whose every write runs device code, a paced batch that sleeps), so the
op rate of one round says little about the next: sized from the previous
round's rate, a round after a cheap one ran long, and guided ran 23-43
rounds where blind, whose rounds are all alike, ran 50-54 in the same time.
:class:`RoundSizer` divides all the ops a strategy ran by all the wall time
its rounds took, the per-round costs (the login, the executor's start, the
coverage reads) included: at that rate a round of ``ops = rate x target``
lasts the target on average, whatever its mix.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RoundSizer:
    """``next_ops``: ``first_ops`` until a round has run, then the strategy's overall rate times the target."""

    target_seconds: float
    first_ops: int
    min_ops: int = 1000
    ops: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.target_seconds <= 0 or self.first_ops < 1 or self.min_ops < 1:
            raise ValueError(
                f"round sizing: target {self.target_seconds} s, first {self.first_ops} and least {self.min_ops} ops "
                "must all be positive"
            )

    def record(self, ops: int, seconds: float) -> None:
        """A round ran ``ops`` ops in ``seconds`` of wall time (all of it: the round's fixed costs too)."""
        if ops < 0 or seconds < 0:
            raise ValueError(f"round sizing: a round of {ops} ops in {seconds} s is not a round")
        self.ops += ops
        self.seconds += seconds

    @property
    def rate(self) -> float:
        """Ops per second over every round so far (0 before any op ran)."""
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    def next_ops(self, seconds_left: float | None = None) -> int:
        """The next round's ops: ``target_seconds`` of them, or what ``seconds_left`` has room for."""
        if not self.ops:
            return self.first_ops
        seconds = self.target_seconds if seconds_left is None else min(self.target_seconds, seconds_left)
        return max(self.min_ops, int(self.rate * seconds))
