"""A guided run's rounds derived again from its record: the check that its schedule depended on nothing else.

Given the run's seed, its ranges, the corpus as it stood when the run began
and, per round, the op budget asked and the events each batch reached,
:func:`rebuild_rounds` schedules every round again and feeds the corpus as the
run did. Equal rounds mean the same ops (a batch's plan is a pure function of
its fields): same seed, same strategy, same corpus state, same ops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from avocado_iofuzz.guided.batch import UNIFORM, Base, Batch
from avocado_iofuzz.guided.corpus import Corpus
from avocado_iofuzz.guided.schedule import GuidedSchedule, Round
from avocado_iofuzz.model.dma_layouts import LAYOUT_GENERIC


def rebuild_rounds(
    seed: int, bases: Sequence[Base], corpus: Corpus, rounds: Sequence[Mapping[str, Any]]
) -> list[Round]:
    """The rounds the schedule makes again; ``rounds``: summary.json's ``guided.rounds`` (ops asked, new events)."""
    schedule = GuidedSchedule(bases, seed)
    rebuilt = []
    for number, record in enumerate(rounds):
        played = schedule.next_round(number, corpus, int(record["ops_asked"]))
        rebuilt.append(played)
        new_events = {i: list(batch["new_events"]) for i, batch in enumerate(record["batches"]) if batch["new_events"]}
        corpus.absorb(played, new_events)
    return rebuilt


def recorded_batches(record: Mapping[str, Any]) -> tuple[Batch, ...]:
    """A round's batches as summary.json's ``guided.rounds[k].batches`` recorded them."""
    return tuple(Batch.from_dict(batch) for batch in record["batches"])


def bases_from(records: Sequence[Mapping[str, Any]]) -> list[Base]:
    """summary.json's ``guided.ranges``."""
    return [_base(r) for r in records]


def _base(record: Mapping[str, Any]) -> Base:
    space, name, values = str(record["space"]), str(record["name"]), str(record.get("values", UNIFORM))
    layout = str(record.get("layout", LAYOUT_GENERIC))
    return Base(space, int(record["start"]), int(record["end"]), int(record["width"]), name, values, layout)
