"""What the next round runs: a pure function of the run seed, the round number, the corpus and the op budget.

Round 0 sweeps every range whole (what a blind run does, briefly): the events
any op reaches are found there, and the corpus starts from them. Each later
round is built around one *parent* entry, picked by energy (entries that
found events and features, and whose rounds found more, are picked more
often; each pick lowers it). Every batch carries its own seed (the executor
takes one per range): the parent runs with its own seed (its ops come back
on a device state grown since) or a neighbour of it (the round's seed),
another entry of the same device runs right after it with *its* seed
(*splicing*), mutations of the parent and of other entries
(:mod:`avocado_iofuzz.guided.mutate`) keep their source's seed unless the
``seed`` mutation moves it, and fresh random stretches (always some) draw
seeds of their own; every few rounds one range is swept whole again, with
the round's seed. Without a usable corpus a round is all fresh stretches.

The blind schedule (:class:`BlindSchedule`) is the benchmark's control: every
range whole, seeds run_seed, run_seed+1, ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from avocado_iofuzz.guided.batch import Base, Batch
from avocado_iofuzz.guided.corpus import Corpus
from avocado_iofuzz.guided.mutate import fresh, mutate, neighbour_seed, sweep, with_seed
from avocado_iofuzz.guided.rng import Stream
from avocado_iofuzz.model.program import SPACES

BATCHES_PER_ROUND = 12
FRESH_PER_ROUND = 3
SWEEP_EVERY = 5  # rounds


def in_kind_order(bases: Sequence[Base]) -> list[Base]:
    """``bases`` pio, then mmio, then pci, as :func:`~avocado_iofuzz.model.kinds.plan_kinds` plans a run.

    Config writes move and disable BARs: a config-space sweep before the port
    and memory sweeps leaves them fuzzing addresses no device decodes any more
    (the piix3-usb-uhci row: BAR4 moved off 0xc000, not one usb_uhci_* event).
    """
    return sorted(bases, key=lambda base: SPACES.index(base.space))


@dataclass(frozen=True)
class Round:
    number: int
    seed: int  # the round's: the parent's (or a neighbour), the sweeps'; each batch has its own
    batches: tuple[Batch, ...]
    origins: tuple[str, ...]  # per batch: sweep, parent, splice, fresh, mutation names (narrow, ...)
    parent: int | None = None  # the corpus entry the round grew from

    @property
    def op_count(self) -> int:
        return sum(b.op_count for b in self.batches)


class GuidedSchedule:
    def __init__(self, bases: Sequence[Base], seed: int, batches_per_round: int = BATCHES_PER_ROUND) -> None:
        if not bases:
            raise ValueError("guided schedule: no range to fuzz")
        if batches_per_round < FRESH_PER_ROUND + 2:
            raise ValueError(f"guided schedule: at least {FRESH_PER_ROUND + 2} batches per round")
        self.bases = sorted(set(bases))
        self.seed = seed
        self.batches_per_round = batches_per_round

    def next_round(self, number: int, corpus: Corpus, ops: int) -> Round:
        """Round ``number`` of about ``ops`` ops, from the corpus as it is now."""
        if number == 0:
            per_base = max(1, ops // len(self.bases))
            batches = tuple(sweep(base, self.seed, per_base) for base in in_kind_order(self.bases))
            return Round(0, self.seed, batches, ("sweep",) * len(batches))
        stream = Stream(self.seed).fork(number)
        per_batch = max(1, ops // self.batches_per_round)
        usable = corpus.usable(self.bases)
        picked: list[tuple[str, Batch]] = []
        parent: int | None = None
        if usable:
            parent = stream.weighted(usable, [corpus.entries[i].energy() for i in usable])
            parent_batch = corpus.entries[parent].batch
            mates = [i for i in usable if i != parent and _same_device(corpus.entries[i].batch, parent_batch)]
            seed = parent_batch.seed if stream.chance(1, 2) else neighbour_seed(parent_batch.seed, stream)
            picked.append(("parent", with_seed(parent_batch, seed)))
            if mates and stream.chance(1, 4):
                picked.append(("splice", corpus.entries[stream.choice(mates)].batch))  # with its own seed
            while len(picked) < self.batches_per_round - FRESH_PER_ROUND:
                if stream.chance(2, 3):
                    source = parent_batch
                else:
                    source = corpus.entries[stream.weighted(usable, [corpus.entries[i].energy() for i in usable])].batch
                name, child = mutate(source, stream)
                picked.append((name, child))
        else:
            seed = stream.word() >> 1
        if number % SWEEP_EVERY == 0:
            picked.append(("sweep", sweep(stream.choice(self.bases), seed, per_batch)))
        while len(picked) < self.batches_per_round:
            picked.append(("fresh", fresh(stream.choice(self.bases), stream.word() >> 1, per_batch, stream)))
        batches = _fit([batch for _, batch in picked], ops)
        return Round(number, seed, batches, tuple(name for name, _ in picked), parent)


class BlindSchedule:
    """Every range whole with seed ``seed + number``: blind fuzzing, in rounds the guided one is compared with.

    ``pace`` (pause_every, pause_us) paces every sweep: the control that
    measures pacing alone, the same ops with pauses in between.
    """

    def __init__(self, bases: Sequence[Base], seed: int, pace: tuple[int, int] = (0, 0)) -> None:
        self.bases = sorted(set(bases))
        self.seed = seed
        self.pace = pace

    def next_round(self, number: int, corpus: Corpus, ops: int) -> Round:
        per_base = max(1, ops // len(self.bases))
        seed = self.seed + number
        every, us = self.pace
        batches = tuple(
            replace(sweep(base, seed, per_base), pause_every=every, pause_us=us) for base in in_kind_order(self.bases)
        )
        return Round(number, seed, batches, ("sweep",) * len(batches))


def _same_device(a: Batch, b: Batch) -> bool:
    """Ranges of one device: the same name's first word (``e1000e``, ``0000:00:03.0``) -- or the same range."""
    return a.base == b.base or a.base.name.split()[:1] == b.base.name.split()[:1]


def _fit(batches: list[Batch], round_ops: int) -> tuple[Batch, ...]:
    """The round about as long as asked: the largest batch's fuzz count halved until the round fits (or cannot shrink).

    Mutations multiply counts and a parent may come from a run with bigger
    rounds; a round much longer than asked means fewer rounds, hence less feedback.
    """
    limit = round_ops + round_ops // 4
    for _ in range(64 * len(batches)):
        if sum(b.op_count for b in batches) <= limit:
            break
        largest = max(range(len(batches)), key=lambda i: (batches[i].op_count, -i))
        batch = batches[largest]
        if batch.fuzz_count <= 1:
            break
        batches[largest] = replace(batch, fuzz_count=batch.fuzz_count // 2)
    return tuple(batches)
