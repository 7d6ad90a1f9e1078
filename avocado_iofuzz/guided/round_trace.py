"""One trace for a whole guided run: each round's campaign writes through a view that renumbers its ranges.

A campaign numbers its ranges 0..n-1 (the executor's positions); a guided
run runs many campaigns. :class:`RoundTrace` adds the round's offset to every
range index the campaign writes (range records, batches, progress marks,
the ``range`` of events), so the run's trace holds every batch of every
round under its own index, and the trace reader, replay and triage see an
ordinary trace whose ranges happen to be many.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from avocado_iofuzz.campaign.trace import TraceWriter
from avocado_iofuzz.model.program import RangePlan


class RoundTrace:
    """What :class:`~avocado_iofuzz.campaign.runner.Campaign` calls on a trace, shifted by ``offset``."""

    def __init__(self, trace: TraceWriter, offset: int) -> None:
        self.trace = trace
        self.offset = offset

    def global_plan(self, plan: RangePlan) -> RangePlan:
        return replace(plan, index=plan.index + self.offset)

    def write_batches(self, batches: Iterable[tuple[RangePlan, int, int]], *, listed: bool = False) -> None:
        self.trace.write_batches(((self.global_plan(p), first, stop) for p, first, stop in batches), listed=listed)

    def write_ops(self, plan: RangePlan, first: int, stop: int, *, listed: bool = False) -> None:
        self.write_batches([(plan, first, stop)], listed=listed)

    def progress(self, range_index: int, ops_done: int) -> None:
        self.trace.progress(range_index + self.offset, ops_done)

    def event(self, kind: str, /, **data: Any) -> None:
        if isinstance(data.get("range"), int):
            data["range"] += self.offset
        self.trace.event(kind, **data)
