"""Guided fuzzing on one VM: rounds of programs, each round an ordinary campaign, the corpus fed by what each reached.

Every round is a :class:`~avocado_iofuzz.campaign.runner.Campaign` over the
round's batches (its programs' elements, in order) as range plans, written
through a :class:`RoundTrace` into the run's one trace: round *k*'s batches
are ranges ``offset_k ..`` of it. Before a round its composition goes into
the trace (event ``guided_round``, with ``programs``: elements per program),
after it the events each batch reached first (``guided_events``): the trace
alone rebuilds every op, and the corpus as it grew (:mod:`.rebuild`).
Hangs, reboots, crashes, findings, replay and triage work as on a blind run.

The coverage observer stays armed from round to round
(:meth:`RunCoverage.keep_armed`); the events it first sees during a round are
credited to the batch that was running (an event after a round's last mark:
to its last batch); so are the hit counts it makes per batch, as features
(event, hit-count bucket: :mod:`avocado_iofuzz.guided.features`). A batch
that reached an event or a feature the corpus did not hold becomes a corpus
entry -- the whole program it belongs to, cut after its last element that
reached something new (:meth:`Corpus.absorb`); ``guided_events`` records
both, so the rebuild needs nothing else.

Read-backs (:mod:`avocado_iofuzz.guided.readback`, opt-in: ``guided_readback``
other than ``off``) add the device's side: the round's executor reports what
each batch's reads returned, and those classes are features too (``rb:<base>+0xOFF=<class>``), so a step that only
moved the device into a new state -- a register that now reads back
another class -- counts as reaching something. They change no op.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from avocado_iofuzz.campaign.runner import Campaign, CampaignConfig, CampaignResult, Finding, close_quietly
from avocado_iofuzz.campaign.tally import RangeTally
from avocado_iofuzz.campaign.trace import TraceWriter
from avocado_iofuzz.coverage.run import RunCoverage
from avocado_iofuzz.guided import readback
from avocado_iofuzz.guided.batch import Base
from avocado_iofuzz.guided.corpus import Corpus
from avocado_iofuzz.guided.features import exhausted, features_of
from avocado_iofuzz.guided.round_trace import RoundTrace
from avocado_iofuzz.guided.schedule import Round
from avocado_iofuzz.model.program import RangePlan

LOG = logging.getLogger("avocado.test.iofuzz")

# the watch for a late crash after each round's @DONE: short, the next round's ops come right after anyway;
# the last round keeps the campaign's own
ROUND_LINGER = 0.2


class Schedule(Protocol):
    def next_round(self, number: int, corpus: Corpus, ops: int) -> Round: ...


def round_config(config: CampaignConfig, last: bool, read_backs: str) -> CampaignConfig:
    """A round's campaign config: a short linger unless ``last``; ``--readback`` unless ``read_backs`` is off."""
    if not last:
        config = replace(config, done_linger=min(config.done_linger, ROUND_LINGER))
    return replace(config, readback=readback.check_mode(read_backs) != "off")


@dataclass
class RoundRecord:
    """One round as it ran: its batches (ranges ``offset ..`` of the trace), ops done, what each batch reached."""

    round: Round
    offset: int
    ops_asked: int
    result: CampaignResult
    new_events: dict[int, list[str]]  # batch index in the round -> events first seen while it ran
    new_features: dict[int, list[str]] = field(default_factory=dict)  # -> "event#bucket" the corpus lacked

    @property
    def plans(self) -> list[RangePlan]:
        return [batch.plan(self.offset + i) for i, batch in enumerate(self.round.batches)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "round": self.round.number,
            "seed": self.round.seed,
            "parent": self.round.parent,
            "first_range": self.offset,
            "ops_asked": self.ops_asked,
            "ops_done": self.result.total_done,
            "elapsed_s": round(self.result.elapsed, 3),
            "findings": [f.kind for f in self.result.findings],
            "programs": list(self.round.program_lengths),  # elements per program, in batch order
            "batches": [
                {**batch.as_dict(), "origin": origin, "new_events": self.new_events.get(i, []),
                 "new_features": self.new_features.get(i, [])}
                for i, (batch, origin) in enumerate(zip(self.round.batches, self.round.origins, strict=True))
            ],
        }


@dataclass
class GuidedRun:
    """Runs rounds of ``schedule`` on ``vm`` into ``trace``; ``rounds`` keeps every round that ran."""

    vm: Any
    schedule: Schedule
    corpus: Corpus
    coverage: RunCoverage
    config: CampaignConfig
    trace: TraceWriter
    clock: Callable[[], float] = time.monotonic
    rounds: list[RoundRecord] = field(default_factory=list)
    # hit counts per batch (the guided signal); a blind control goes without and pays a blind run's cost
    count_hits: bool = True
    # which batches' read-backs become features (readback.MODES); "off": the executor runs without
    # --readback, the rounds are what they were before read-backs. A blind control keeps "off".
    read_backs: str = readback.DEFAULT_MODE
    # the shell the last round ended with at its prompt (Campaign.handed_back): the next round's campaign
    # goes on in it instead of logging in again; closed by close()
    spare_session: Any = None

    def __post_init__(self) -> None:
        readback.check_mode(self.read_backs)
        if self.read_backs != "off" and not self.count_hits:
            raise ValueError(
                f"read-backs ({self.read_backs}) feed a guided corpus; a blind control (no hit counts) runs without"
            )
        if not self.coverage.enabled:
            raise ValueError(f"guided fuzzing needs coverage, which is off: {self.coverage.off_reason}")
        self.coverage.keep_armed(count_hits=self.count_hits)

    @property
    def events(self) -> set[str]:
        collector = self.coverage.collector
        return set(collector.first_seen) if collector is not None else set()

    @property
    def ops_done(self) -> int:
        return sum(r.result.total_done for r in self.rounds)

    @property
    def next_offset(self) -> int:
        return self.rounds[-1].offset + len(self.rounds[-1].round.batches) if self.rounds else 0

    def run_round(self, ops: int, last: bool = False, session: Any = None) -> RoundRecord:
        """The next round, about ``ops`` ops; ``last``: watch for a late crash as long as a blind run does.

        ``session``: a logged-in shell to run it in; without one, the shell the last round handed back, or a login.
        """
        if session is None:
            session, self.spare_session = self.spare_session, None
        elif self.spare_session is not None:
            self._close_spare()
        number, offset = len(self.rounds), self.next_offset
        planned = self.schedule.next_round(number, self.corpus, ops)
        plans = [batch.plan(i) for i, batch in enumerate(planned.batches)]
        recipes = getattr(self.schedule, "recipes", ()) if number == 0 else ()
        self.trace.event(
            "guided_round", round=number, seed=planned.seed, parent=planned.parent, first_range=offset,
            ops=ops, origins=list(planned.origins), programs=list(planned.program_lengths),
            **({"recipes": [recipe.as_dict() for recipe in recipes]} if recipes else {}),
        )  # fmt: skip
        config = round_config(self.config, last, self.read_backs)
        known = self.events
        campaign = Campaign(self.vm, plans, RoundTrace(self.trace, offset), config, session=session,
                            observer=self.coverage, hand_back=True)  # fmt: skip
        try:
            result = campaign.run()
        finally:
            self.spare_session = campaign.handed_back
            # also when the round could not go on (CampaignError): what it did is part of the run
            new_events = self._attribute(plans, known)
            features = self._features(plans)
            for index, pairs in campaign.result.readbacks.items():
                if 0 <= index < len(planned.batches) and readback.kept(self.read_backs, planned.batches[index]):
                    features.setdefault(index, []).extend(readback.features_of(planned.batches[index], pairs))
            new_features = self.corpus.absorb(planned, new_events, features)
            self._retire_exhausted()
            record = RoundRecord(planned, offset, ops, campaign.result, new_events, new_features)
            self.rounds.append(record)
            done = campaign.result
            ran_to = None
            if not done.crashed and not done.stopped_early and done.total_done and plans:
                ran_to = [offset + len(plans) - 1, plans[-1].op_count]  # triage's history: the round ran whole
            new = {str(offset + i): e for i, e in new_events.items()}
            spelled = {str(offset + i): f for i, f in new_features.items()}
            self.trace.event("guided_events", round=number, new=new, features=spelled, ran_to=ran_to)
        LOG.info(
            "guided round %d: %d batches, %d ops in %.1f s, %d new event(s), %d new feature(s), %d reached, corpus %d",
            number, len(plans), result.total_done, result.elapsed, sum(len(e) for e in new_events.values()),
            sum(len(f) for f in new_features.values()), len(self.events), len(self.corpus.entries),
        )  # fmt: skip
        return record

    def _attribute(self, plans: Sequence[RangePlan], known: set[str]) -> dict[int, list[str]]:
        collector = self.coverage.collector
        if collector is None:
            return {}
        by_batch: dict[int, list[str]] = {}
        for name, seen in sorted(collector.first_seen.items()):
            if name in known:
                continue
            index = seen.range_index if seen.range_index is not None else len(plans) - 1
            by_batch.setdefault(index, []).append(name)
        return by_batch

    def _retire_exhausted(self) -> None:
        """Events whose every hit-count bucket the corpus holds go off in QEMU for the rest of the run.

        Their lines can add no feature and no event (:func:`exhausted`), so the corpus grows
        exactly as with them on, while QEMU writes no more of them: on nvme the invalid-doorbell
        and invalid-register events are half the lines of a guided round.
        """
        collector = self.coverage.collector
        if collector is None or not self.count_hits:
            return
        retired = collector.retire(sorted(exhausted(collector.first_seen, self.corpus.features)))
        if retired:
            LOG.info("guided: %d event(s) have every hit-count bucket in the corpus, off for the run: %s",
                     len(retired), ", ".join(retired))  # fmt: skip

    def _features(self, plans: Sequence[RangePlan]) -> dict[int, list[str]]:
        """Per batch, its hit-count features (hits after the round's last mark: its last batch's)."""
        collector = self.coverage.collector
        if collector is None or not plans:
            return {}
        hits: dict[int, dict[str, int]] = {}
        for index, counts in collector.hits.items():
            batch = index if index is not None and 0 <= index < len(plans) else len(plans) - 1
            merged = hits.setdefault(batch, {})
            for event, count in counts.items():
                merged[event] = merged.get(event, 0) + count
        return {i: sorted(features_of(counts)) for i, counts in sorted(hits.items()) if counts}

    def close(self) -> None:
        self._close_spare()
        self.coverage.close()

    def _close_spare(self) -> None:
        close_quietly(self.spare_session)
        self.spare_session = None

    # -- the run as one campaign, for summary.json -------------------------------------------
    def plans(self) -> list[RangePlan]:
        """Every batch of every round, numbered as in the trace."""
        return [plan for record in self.rounds for plan in record.plans]

    def result(self) -> CampaignResult:
        """The rounds' results as one, ranges numbered as in the trace."""
        merged = CampaignResult()
        for record in self.rounds:
            part, offset = record.result, record.offset
            for name in ("ops_done", "ops_skipped", "ops_unconfirmed"):
                getattr(merged, name).update({i + offset: n for i, n in getattr(part, name).items()})
            merged.tallies.update({i + offset: t for i, t in part.tallies.items()})
            merged.findings += [
                replace(f, range_index=f.range_index + offset, detail=f"guided round {record.round.number}: {f.detail}")
                for f in part.findings
            ]
            merged.qemu_exit = part.qemu_exit or merged.qemu_exit
            merged.stopped_early = part.stopped_early or merged.stopped_early
            merged.elapsed += part.elapsed
            merged.watched_after_done += part.watched_after_done
        for plan in self.plans():  # a round cut short by a crash: its later batches never started
            merged.tallies.setdefault(plan.index, RangeTally())
        return merged

    def summary(self) -> dict[str, Any]:
        return {
            "strategy": "guided",
            "corpus_key": self.corpus.key,
            "qemu_version": self.corpus.qemu_version,
            "corpus_loaded": self.corpus.loaded,
            "corpus_entries": len(self.corpus.entries),
            "ranges": [vars(base) for base in getattr(self.schedule, "bases", [])],
            "recipes": [recipe.as_dict() for recipe in getattr(self.schedule, "recipes", ())],
            "rounds": [r.as_dict() for r in self.rounds],
        }


def bases_of(plans: Sequence[RangePlan]) -> list[Base]:
    return [Base.of(plan) for plan in plans]


__all__ = ["Finding", "GuidedRun", "RoundRecord", "bases_of"]
