"""A guided run's rounds derived again from its record: the check that its schedule depended on nothing else.

Given the run's seed, its ranges, the corpus as it stood when the run began
and, per round, the op budget asked and the events each batch reached,
:func:`rebuild_rounds` schedules every round again and feeds the corpus as the
run did. Equal rounds mean the same ops (a batch's plan is a pure function of
its fields): same seed, same strategy, same corpus state, same ops.
:func:`rounds_from_trace` reads the same per-round record from the trace
alone (its ``guided_round`` and ``guided_events`` events and range records).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from avocado_iofuzz.guided.batch import UNIFORM, Base, Batch
from avocado_iofuzz.guided.corpus import Corpus
from avocado_iofuzz.guided.recipes import AppliedRecipe
from avocado_iofuzz.guided.schedule import GuidedSchedule, Round
from avocado_iofuzz.model.dma_layouts import LAYOUT_GENERIC


def rebuild_rounds(
    seed: int,
    bases: Sequence[Base],
    corpus: Corpus,
    rounds: Sequence[Mapping[str, Any]],
    recipes: Sequence[AppliedRecipe] = (),
) -> list[Round]:
    """The rounds the schedule makes again; ``rounds``: summary.json's ``guided.rounds`` (ops asked, new events);
    ``recipes``: its ``guided.recipes`` (:func:`recipes_from`)."""
    schedule = GuidedSchedule(bases, seed, recipes=recipes)
    rebuilt = []
    for number, record in enumerate(rounds):
        played = schedule.next_round(number, corpus, int(record["ops_asked"]))
        recorded = record.get("programs")  # absent in records from before programs: one batch each
        if recorded is not None and tuple(recorded) != played.program_lengths:
            raise ValueError(
                f"round {number}: the schedule makes programs of {list(played.program_lengths)} elements, "
                f"the record has {list(recorded)}"
            )
        rebuilt.append(played)
        batches = record["batches"]
        new_events = {i: list(batch["new_events"]) for i, batch in enumerate(batches) if batch["new_events"]}
        # the features the corpus lacked then (absent in records from before the hit-count signal)
        features = {i: list(batch["new_features"]) for i, batch in enumerate(batches) if batch.get("new_features")}
        corpus.absorb(played, new_events, features)
    return rebuilt


def recorded_batches(record: Mapping[str, Any]) -> tuple[Batch, ...]:
    """A round's batches as summary.json's ``guided.rounds[k].batches`` recorded them."""
    return tuple(Batch.from_dict(batch) for batch in record["batches"])


def recipes_from(records: Sequence[Any]) -> list[AppliedRecipe]:
    """summary.json's ``guided.recipes`` (absent before recipes: none)."""
    return [AppliedRecipe.from_dict(record) for record in records]


def recipes_from_trace(events: Sequence[Any]) -> list[AppliedRecipe]:
    """The applied recipes, from round 0's ``guided_round`` trace event (none in traces from before recipes)."""
    for event in events:
        if event.kind == "guided_round" and int(event.data["round"]) == 0:
            return recipes_from(event.data.get("recipes", []))
    return []


def bases_from(records: Sequence[Mapping[str, Any]]) -> list[Base]:
    """summary.json's ``guided.ranges``."""
    return [_base(r) for r in records]


def _base(record: Mapping[str, Any]) -> Base:
    space, name, values = str(record["space"]), str(record["name"]), str(record.get("values", UNIFORM))
    layout = str(record.get("layout", LAYOUT_GENERIC))
    return Base(space, int(record["start"]), int(record["end"]), int(record["width"]), name, values, layout)


def rounds_from_trace(events: Sequence[Any]) -> list[dict[str, Any]]:
    """Per round, what :func:`rebuild_rounds` needs, from a guided run's trace events (``Trace.events``).

    ``guided_round`` gives the op budget asked, how many batches the round
    had and how many of them each program has; ``guided_events`` what each
    batch reached first (ranges numbered as in the trace, from the round's
    ``first_range``).
    """
    rounds: dict[int, dict[str, Any]] = {}
    for event in events:
        data = event.data
        if event.kind == "guided_round":
            blank: list[dict[str, list[str]]] = [{"new_events": [], "new_features": []} for _ in data["origins"]]
            rounds[int(data["round"])] = {"ops_asked": int(data["ops"]), "first_range": data["first_range"],
                                          "batches": blank}  # fmt: skip
            if "programs" in data:  # elements per program (traces from before programs: one batch each)
                rounds[int(data["round"])]["programs"] = [int(n) for n in data["programs"]]
        elif event.kind == "guided_events" and int(data["round"]) in rounds:
            record = rounds[int(data["round"])]
            for field, key in (("new", "new_events"), ("features", "new_features")):
                for index, reached in data.get(field, {}).items():
                    record["batches"][int(index) - record["first_range"]][key] = list(reached)
    return [rounds[number] for number in sorted(rounds)]
