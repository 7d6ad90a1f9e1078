"""What the next round runs: a pure function of the run seed, the round number, the corpus and the op budget.

A round is a list of *programs* (:mod:`avocado_iofuzz.guided.program`:
batches run in order), run back to back as the round's ranges.

Round 0 runs the bring-up recipes that apply to the run
(:mod:`avocado_iofuzz.guided.recipes`: exact register sequences that point a
device's DMA engine at the scratch memory, which feedback cannot find by
itself), then sweeps every range whole (what a blind run does, briefly): the
events any op reaches are found there, and the corpus starts from them
(recipe programs, and sweeps as programs of one element). Each later round is built around one *parent* entry, picked by
energy (entries that found events and features, and whose rounds found more,
are picked more often; each pick lowers it): the parent program runs again
as it is (its ops come back on a device state grown since), then children of
it and of other entries, each made by one to three program mutations
(:mod:`avocado_iofuzz.guided.program_mutate`: insert a step, drop, change or
repeat an element, splice with another program of the device), until the
round's program budget (:data:`PROGRAM_SHARE` of its ops,
:data:`MAX_PROGRAMS` programs, :data:`MAX_ROUND_ELEMENTS` elements) is spent.
Then :data:`STRETCH_CHILDREN` batch mutations (:mod:`avocado_iofuzz.guided.mutate`)
of elements of the parent and other entries (of a step: a fresh stretch of
its range), each a program of one plain batch of a twelfth of the round: programs are short in ops, and what a
device reaches by volume (a random walk over its registers) still needs
volume.
A child's big elements (a sweep it descends from) are cut to
:data:`CHILD_ELEMENT_OPS` ops (a range too wide for that: a stretch of it):
a child is about its sequence. The rest of the
round is fresh random stretches (always some, each its own seed) and, every
few rounds, one range swept whole again with the round's seed. Without a
usable corpus a round is all fresh stretches.

The blind schedule (:class:`BlindSchedule`) is the benchmark's control: every
range whole, seeds run_seed, run_seed+1, ...
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from avocado_iofuzz.guided.batch import Base, Batch
from avocado_iofuzz.guided.corpus import Corpus
from avocado_iofuzz.guided.mutate import MAX_STRETCH_SLOTS, fresh, mutate, stretch, sweep
from avocado_iofuzz.guided.program import Program, op_count
from avocado_iofuzz.guided.program_mutate import context_for, mutate_program
from avocado_iofuzz.guided.recipes import AppliedRecipe
from avocado_iofuzz.guided.rng import Stream
from avocado_iofuzz.model.program import SPACES

BATCHES_PER_ROUND = 12  # sizes a fresh stretch: a twelfth of the round
FRESH_PER_ROUND = 3
SWEEP_EVERY = 5  # rounds
PROGRAM_SHARE = (1, 3)  # of a round's ops, at most, for the parent and its children
MAX_PROGRAMS = 32
# every element is a range: two progress marks on the console, a trace record, a campaign's bookkeeping
# (measured on nic.virtio_net: 512 elements a round halved guided's ops against blind's in the same time)
MAX_ROUND_ELEMENTS = 256
STRETCH_CHILDREN = 5  # batch mutations of an element, a twelfth of the round each: the volume of the batch schedule
CHILD_ELEMENT_OPS = 2048
MAX_STACK = 3  # mutations per child
RECIPE_TRIES = 4  # round 0 runs each bring-up recipe with this many scratch fills
# round 0's recipe programs, all tries of all recipes: a row's recipes are 10-100 steps a try, and a try is one
# scratch fill, the only place its layout's variety comes from; with 128 (session 8) the rows with long
# recipes (virtio-net 98 steps, megasas 81) played one fill of the four, whatever it drew. Round 0 runs once.
MAX_RECIPE_ELEMENTS = 2 * MAX_ROUND_ELEMENTS
RECIPE_SALT = 0x7265636970  # the stream of the recipe fills' seeds, apart from the rounds' (fork(number))


def in_kind_order(bases: Sequence[Base]) -> list[Base]:
    """``bases`` pio, then mmio, then pci, as :func:`~avocado_iofuzz.model.kinds.plan_kinds` plans a run.

    Config writes move and disable BARs: a config-space sweep before the port
    and memory sweeps leaves them fuzzing addresses no device decodes any more
    (the piix3-usb-uhci row: BAR4 moved off 0xc000, not one usb_uhci_* event).
    """
    return sorted(bases, key=lambda base: SPACES.index(base.space))


@dataclass(frozen=True)
class Round:
    """A round's batches in order; ``lengths``: how many of them each program has (none given: one each)."""

    number: int
    seed: int  # the round's: the sweeps'; each batch has its own
    batches: tuple[Batch, ...]
    origins: tuple[str, ...]  # per batch: its program's (sweep, parent, fresh, mutation names: insert+change, ...)
    parent: int | None = None  # the corpus entry the round grew from
    lengths: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.origins) != len(self.batches):
            raise ValueError(f"round {self.number}: {len(self.origins)} origins for {len(self.batches)} batches")
        if self.lengths and (sum(self.lengths) != len(self.batches) or min(self.lengths) < 1):
            raise ValueError(f"round {self.number}: program lengths {self.lengths} do not cover its batches")

    @classmethod
    def of_programs(
        cls, number: int, seed: int, programs: Sequence[tuple[str, Program]], parent: int | None = None
    ) -> Round:
        batches = tuple(element for _, program in programs for element in program)
        origins = tuple(name for name, program in programs for _ in program)
        return cls(number, seed, batches, origins, parent, tuple(len(program) for _, program in programs))

    @property
    def program_lengths(self) -> tuple[int, ...]:
        return self.lengths or (1,) * len(self.batches)

    def spans(self) -> Iterator[tuple[int, Program]]:
        """(index of its first batch, program) per program, in order."""
        first = 0
        for length in self.program_lengths:
            yield first, self.batches[first : first + length]
            first += length

    @property
    def op_count(self) -> int:
        return sum(b.op_count for b in self.batches)


class GuidedSchedule:
    """``recipes``: the bring-up recipes that apply to the run (:func:`~avocado_iofuzz.guided.recipes.applicable`)."""

    def __init__(
        self,
        bases: Sequence[Base],
        seed: int,
        batches_per_round: int = BATCHES_PER_ROUND,
        recipes: Sequence[AppliedRecipe] = (),
    ) -> None:
        if not bases:
            raise ValueError("guided schedule: no range to fuzz")
        if batches_per_round < FRESH_PER_ROUND + 2:
            raise ValueError(f"guided schedule: at least {FRESH_PER_ROUND + 2} batches per round")
        self.bases = sorted(set(bases))
        self.seed = seed
        self.batches_per_round = batches_per_round
        outside = [r.name for r in recipes if any(w.base not in self.bases for w in r.writes)]
        if outside:
            raise ValueError(f"guided schedule: recipes {outside} write to ranges the run does not fuzz")
        self.recipes = tuple(recipes)

    def next_round(self, number: int, corpus: Corpus, ops: int) -> Round:
        """Round ``number`` of about ``ops`` ops, from the corpus as it is now."""
        if number == 0:
            per_base = max(1, ops // len(self.bases))
            sweeps = [("sweep", (sweep(base, self.seed, per_base),)) for base in in_kind_order(self.bases)]
            return Round.of_programs(0, self.seed, [*self.recipe_programs(), *sweeps])
        stream = Stream(self.seed).fork(number)
        per_batch = max(1, ops // self.batches_per_round)
        usable = corpus.usable(self.bases)
        picked: list[tuple[str, Program]] = []
        parent: int | None = None
        seed = stream.word() >> 1
        if usable:
            energies = [corpus.entries[i].energy() for i in usable]
            parent = stream.weighted(usable, energies)
            programs = [corpus.entries[i].program for i in usable]
            budget = ops * PROGRAM_SHARE[0] // PROGRAM_SHARE[1]
            # a parent found by a sweep would take the whole budget: its elements get a quarter of it at most
            picked.append(("parent", tuple(_cut(element, budget // 4) for element in corpus.entries[parent].program)))
            spent, elements = op_count(picked[0][1]), len(picked[0][1])
            while len(picked) < MAX_PROGRAMS and spent < budget:
                source = parent if stream.chance(2, 3) else stream.weighted(usable, energies)
                program = corpus.entries[source].program
                name, child = mutate_program(
                    program, context_for(program, self.bases, programs), stream, stream.between(1, MAX_STACK)
                )
                child = tuple(_cut(_narrowed(element, stream)) for element in child)
                if elements + len(child) > MAX_ROUND_ELEMENTS:
                    break
                picked.append((name, child))
                spent, elements = spent + op_count(child), elements + len(child)
            for _ in range(STRETCH_CHILDREN):
                source = parent if stream.chance(2, 3) else stream.weighted(usable, energies)
                element = stream.choice(corpus.entries[source].program)
                if element.slots > 1:
                    name, batch = mutate(element, stream)
                else:  # a step hammered alone is no walk: a random stretch of its range instead
                    name, batch = "fresh", fresh(element.base, stream.word() >> 1, per_batch, stream)
                picked.append((name, (_volume(batch, per_batch),)))
        if number % SWEEP_EVERY == 0:
            picked.append(("sweep", (sweep(stream.choice(self.bases), seed, per_batch),)))
        left = ops - sum(op_count(program) for _, program in picked)
        per_fresh = max(per_batch // 4, left // FRESH_PER_ROUND)
        for _ in range(FRESH_PER_ROUND):
            picked.append(("fresh", (fresh(stream.choice(self.bases), stream.word() >> 1, per_fresh, stream),)))
        return _fit(Round.of_programs(number, seed, picked, parent), ops)


    def recipe_programs(self) -> list[tuple[str, Program]]:
        """Round 0's recipe programs: each recipe :data:`RECIPE_TRIES` times, each time other scratch fills.

        They run before the sweeps, on the devices as the guest left them
        (a config sweep may move BARs), and each begins with its device's
        reset. A device's DMA engine goes deep only when the memory it walks
        holds well-formed requests (a virtio device stops its queue at the
        first malformed chain, about one ring head in 20), hence several fills. At most :data:`MAX_RECIPE_ELEMENTS`
        elements in all (a run over every device has many functions).
        """
        stream = Stream(self.seed).fork(RECIPE_SALT)
        seeds = [stream.word() >> 1 for _ in range(RECIPE_TRIES)]
        programs: list[tuple[str, Program]] = []
        elements = 0
        for seed in seeds:
            for recipe in self.recipes:
                if elements + len(recipe.writes) > MAX_RECIPE_ELEMENTS:
                    return programs
                programs.append((recipe.origin, recipe.program(seed)))
                elements += len(recipe.writes)
        return programs


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


def _volume(element: Batch, ops: int) -> Batch:
    """A stretch child as the batch schedule ran it: read, zero and fuzz phases, seeded values, about ``ops`` ops."""
    return replace(element, fuzz_only=False, fixed=None, fuzz_count=max(1, ops // element.slots - 2))


def _narrowed(element: Batch, stream: Stream) -> Batch:
    """An element too wide to cut to :data:`CHILD_ELEMENT_OPS` ops: a stretch of it that fits, somewhere in it."""
    lead = 0 if element.fuzz_only else 2
    if element.slots * (lead + 1) <= CHILD_ELEMENT_OPS:
        return element
    return stretch(element, stream.below(element.slots), MAX_STRETCH_SLOTS, CHILD_ELEMENT_OPS)


def _cut(element: Batch, most: int = CHILD_ELEMENT_OPS) -> Batch:
    """``element`` with at most about ``most`` ops (fewer fuzz writes; the stretch and seed kept)."""
    if element.op_count <= most:
        return element
    lead = 0 if element.fuzz_only else 2
    return replace(element, fuzz_count=max(1, most // element.slots - lead))


def _fit(played: Round, round_ops: int) -> Round:
    """``played`` with its batches fitted to about ``round_ops`` (:func:`_fit_batches`), its programs kept."""
    return replace(played, batches=_fit_batches(list(played.batches), round_ops))


def _fit_batches(batches: list[Batch], round_ops: int) -> tuple[Batch, ...]:
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
