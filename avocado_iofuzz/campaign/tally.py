"""What became of a range's ops: which ran for sure, which may have run, which were left out.

The executor confirms ops with its progress marks (``@P``) and names the op it
stops at when it hangs on purpose (``@HANG``); between two marks the host
cannot see which op runs. So when a run stops in the middle of a window (QEMU
died, the guest hung or rebooted without saying where), the ops of that
window from the last mark on *may* have run: some did, the one in flight was
running, the rest did not. A tally keeps the three apart, as spans
``[first, stop)`` of op indices:

``confirmed``
    ran: a mark (or ``@HANG``) came after them.
``unconfirmed``
    the window in flight when the run stopped without naming the op; the
    true count of ops that ran lies in ``confirmed .. confirmed + unconfirmed``.
``skipped``
    left out on purpose: the rest of a window after the op the executor
    named (``@HANG``), which the campaign resumed after.

Ops in none of them were not reached (the run ended before them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from avocado_iofuzz.model.program import PHASE_FUZZ, PHASE_READ, PHASE_ZERO, RangePlan

Span = tuple[int, int]


def _add(spans: list[Span], first: int, stop: int) -> None:
    """Append ``[first, stop)`` to ``spans`` (kept in order), joining it to the last span it touches."""
    if stop <= first:
        return
    if spans and spans[-1][1] == first:
        spans[-1] = (spans[-1][0], stop)
    else:
        spans.append((first, stop))


def _length(spans: Iterable[Span]) -> int:
    return sum(stop - first for first, stop in spans)


def _overlap(a: Span, b: Span) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


def phase_spans(plan: RangePlan) -> dict[str, Span]:
    """Op index spans [first, stop) of each phase of a range (a fuzz-only range's read and zero spans are empty)."""
    reads = plan.lead // 2  # a read and a zero write per slot before the fuzz phase, none for a fuzz-only range
    return {PHASE_READ: (0, reads), PHASE_ZERO: (reads, plan.lead), PHASE_FUZZ: (plan.lead, plan.op_count)}


@dataclass
class RangeTally:
    confirmed: list[Span] = field(default_factory=list)
    unconfirmed: list[Span] = field(default_factory=list)
    skipped: list[Span] = field(default_factory=list)

    def confirm(self, first: int, stop: int) -> None:
        _add(self.confirmed, first, stop)

    def leave_unconfirmed(self, first: int, stop: int) -> None:
        _add(self.unconfirmed, first, stop)

    def skip(self, first: int, stop: int) -> None:
        _add(self.skipped, first, stop)

    @property
    def ops_confirmed(self) -> int:
        return _length(self.confirmed)

    @property
    def ops_unconfirmed(self) -> int:
        return _length(self.unconfirmed)

    @property
    def ops_executed(self) -> int:
        """The most ops that can have run: confirmed plus unconfirmed (exact when nothing is unconfirmed)."""
        return self.ops_confirmed + self.ops_unconfirmed

    @property
    def ops_skipped(self) -> int:
        return _length(self.skipped)

    def by_phase(self, plan: RangePlan, executed: bool = False) -> dict[str, int]:
        """Confirmed ops of each phase; with ``executed``, the unconfirmed ones added."""
        spans = self.confirmed + (self.unconfirmed if executed else [])
        return {phase: sum(_overlap(span, s) for s in spans) for phase, span in phase_spans(plan).items()}
