"""How many ops the next round gets when rounds are meant to last a given time (the side-by-side benchmark).

A guided round mixes cheap batches (a few ports) and expensive ones (an MMIO
BAR whose every write runs device code, a paced batch that sleeps), so the
op rate of one round says little about the next: sized from the previous
round's rate, a round after a cheap one ran long, and guided ran 23-43
rounds where blind, whose rounds are all alike, ran 50-54 in the same time.
:class:`RoundSizer` divides the ops of the strategy's last :data:`WINDOW`
rounds by the wall time they took, the per-round costs (the login, the
executor's start, the coverage reads) included: at that rate a round of
``ops = rate x target`` lasts the target on average, whatever its mix. The
first round is left out once another has run: it carries one-time costs (the
first login, the coverage baseline) that made a cumulative rate undersize
every later round (blind rounds of 1.0 s for a 2 s target in 20 s runs).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

WINDOW = 8  # rounds: enough to average a mix of cheap and expensive rounds, short enough to forget the start


@dataclass
class RoundSizer:
    """``next_ops``: ``first_ops`` until a round has run, then the strategy's recent rate times the target."""

    target_seconds: float
    first_ops: int
    min_ops: int = 1000
    rounds: list[tuple[int, float]] = field(default_factory=list)  # (ops, seconds) of every round so far

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
        self.rounds.append((ops, seconds))

    @property
    def rate(self) -> float:
        """Ops per second over the last WINDOW rounds, the first left out once there are others (0: none ran)."""
        recent = self.rounds[1:][-WINDOW:] or self.rounds
        ops, seconds = sum(o for o, _ in recent), sum(s for _, s in recent)
        return ops / seconds if seconds > 0 else 0.0

    def next_ops(self, seconds_left: float | None = None) -> int:
        """The next round's ops: ``target_seconds`` of them, or what ``seconds_left`` has room for.

        At the plain rate, rounds that start small stay small for long: their
        fixed cost is a big share of their time. So when the recent rounds
        fit ``seconds = fixed + ops / speed`` (a least-squares line with a
        positive slope and no negative fixed cost), the round gets the ops
        that line puts at the target, kept within half to four times what
        the plain rate gives (one odd round must not make a huge one).
        """
        if not self.rate:
            return self.first_ops
        seconds = self.target_seconds if seconds_left is None else min(self.target_seconds, seconds_left)
        plain = self.rate * seconds
        line = self._line()
        if line is not None:
            fixed, per_op = line
            plain = min(max((seconds - fixed) / per_op, plain / 2), plain * 4)
        return max(self.min_ops, int(plain))

    def _line(self) -> tuple[float, float] | None:
        """(fixed seconds, seconds per op) of the recent rounds, or None if they fit no such line."""
        recent = self.rounds[1:][-WINDOW:]
        if len(recent) < 2:
            return None
        try:
            per_op, fixed = statistics.linear_regression([o for o, _ in recent], [s for _, s in recent])
        except statistics.StatisticsError:  # all rounds of one size: no slope to fit
            return None
        return (fixed, per_op) if per_op > 0 and fixed >= 0 else None
