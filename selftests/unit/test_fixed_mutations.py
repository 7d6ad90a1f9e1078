"""Mutations of fixed steps (flip, nudge, redraw, unfix), freezing a seeded step, and rounds built on fixed programs."""

from __future__ import annotations

from dataclasses import replace

import pytest

from avocado_iofuzz.guided.batch import Base, Batch
from avocado_iofuzz.guided.corpus import Corpus
from avocado_iofuzz.guided.fixed_mutate import (
    FIXED_MUTATIONS,
    FREEZE_MOST_OPS,
    KIND_ADDRESS,
    KIND_FRAME,
    KIND_LOW_MASK,
    KIND_OFFSET,
    KIND_PAGE,
    KIND_POWER,
    KIND_SIZE,
    KIND_SMALL,
    KIND_UNIFORM,
    NUDGE_MOST,
    flip,
    freezable,
    frozen,
    nudge,
    redraw,
    unfix,
    value_kind,
)
from avocado_iofuzz.guided.mutate import FIXED_ELEMENT_MUTATIONS, MUTATIONS, mutate
from avocado_iofuzz.guided.program import fixed_step, op_count, step
from avocado_iofuzz.guided.program_mutate import PROGRAM_MUTATIONS, context_for, freeze, mutate_program
from avocado_iofuzz.guided.rng import Stream
from avocado_iofuzz.guided.schedule import GuidedSchedule, _volume
from avocado_iofuzz.model.dma import SCRATCH_BASE, SCRATCH_SIZE, SIZES, VALUES_DMA, scratch_fill

IO = Base("pio", 0xC000, 0xC01F, 1, "0000:00:03.0 BAR0", VALUES_DMA, "virtio")
BAR = Base("mmio", 0xFEB00000, 0xFEB00FFF, 4, "0000:00:03.0 BAR4", VALUES_DMA, "virtio")
BASES = (IO, BAR)


def bring_up() -> tuple[Batch, ...]:
    """virtio legacy: reset, ACKNOWLEDGE, DRIVER, queue 0, its PFN in the scratch memory, DRIVER_OK, notify."""
    return (
        fixed_step(IO, 0xC012, 1, 0),
        fixed_step(IO, 0xC012, 1, 1),
        fixed_step(IO, 0xC012, 1, 3),
        fixed_step(IO, 0xC00E, 2, 0),
        fixed_step(IO, 0xC008, 4, SCRATCH_BASE >> 12, values=VALUES_DMA),
        fixed_step(IO, 0xC012, 1, 7),
        fixed_step(IO, 0xC010, 2, 0),
    )


def writes(program: tuple[Batch, ...]) -> list[tuple[int, int, int]]:
    return [(op.port, op.width, op.value) for element in program for op in element.plan(0).ops()]


@pytest.mark.parametrize(
    ("value", "width", "kind"),
    [
        (SCRATCH_BASE >> 12, 4, KIND_FRAME),
        (SCRATCH_BASE + 0x2000, 4, KIND_PAGE),
        (SCRATCH_BASE + 0x2010, 8, KIND_ADDRESS),
        (0, 1, KIND_SMALL),
        (7, 1, KIND_SMALL),
        (1514, 2, KIND_SIZE),
        (1 << 20, 4, KIND_POWER),
        (0xFFFF, 2, KIND_LOW_MASK),
        (0x123, 2, KIND_OFFSET),
        (0x12345678, 4, KIND_UNIFORM),
    ],
)
def test_value_kind(value, width, kind):
    assert value_kind(value, width) == kind


@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_flip_and_nudge_change_the_value_a_little_and_keep_it_in_the_width(width):
    base = BAR if width == 8 else IO
    for salt in range(100):
        element = fixed_step(base, base.start, width, (salt * 0x9E3779B97F4A7C15) % (1 << 8 * width))
        flipped = flip(element, Stream(salt))
        assert bin(flipped.fixed ^ element.fixed).count("1") == 1 and flipped.fixed < 1 << 8 * width
        nudged = nudge(element, Stream(salt))
        distance = (nudged.fixed - element.fixed) % (1 << 8 * width)
        assert distance in range(1, NUDGE_MOST + 1) or (1 << 8 * width) - distance in range(1, NUDGE_MOST + 1)
        assert replace(flipped, fixed=element.fixed) == element == replace(nudged, fixed=element.fixed)


def test_redraw_draws_another_value_of_the_same_kind():
    cases = {
        SCRATCH_BASE >> 12: lambda v: SCRATCH_BASE >> 12 <= v < (SCRATCH_BASE + SCRATCH_SIZE) >> 12,
        SCRATCH_BASE + 0x1000: lambda v: SCRATCH_BASE <= v < SCRATCH_BASE + SCRATCH_SIZE and v % 0x1000 == 0,
        SCRATCH_BASE + 0x10: lambda v: SCRATCH_BASE <= v < SCRATCH_BASE + SCRATCH_SIZE and v % 0x10 == 0,
        1514: lambda v: v in SIZES,
        3: lambda v: v < 32,
        0: lambda v: v < 32,
        0xFFFFFFFF: lambda v: v & (v + 1) == 0,
    }
    for value, same_kind in cases.items():
        drawn = {redraw(fixed_step(IO, 0xC008, 4, value), Stream(salt)).fixed for salt in range(40)}
        assert value not in drawn and len(drawn) > 1, hex(value)
        assert all(same_kind(v) for v in drawn), (hex(value), sorted(map(hex, drawn)))


def test_unfix_gives_the_seeded_step_back():
    element = fixed_step(IO, 0xC008, 4, 0x7000, count=4, seed=9)
    seeded = unfix(element, Stream(1))
    assert seeded == step(IO, 0xC008, 4, 9, 4, "uniform")
    assert len({op.value for op in seeded.plan(0).ops()}) > 1  # seeded values again


def test_a_fixed_element_gets_its_own_mutations_and_stays_valid():
    names = set()
    for salt in range(300):
        parent = bring_up()[salt % 7]
        name, child = mutate(parent, Stream(salt))
        assert (name, child) == mutate(parent, Stream(salt))  # a pure function of element and stream
        names.add(name)
        assert name in FIXED_ELEMENT_MUTATIONS and child.base == parent.base and child.width == parent.width
        if name in FIXED_MUTATIONS and name != "unfix":
            assert child.fixed != parent.fixed and (child.start, child.fuzz_count) == (parent.start, parent.fuzz_count)
        child.plan(0)  # the op model takes it (a value that fits, fuzz-only kept)
    assert names == set(FIXED_ELEMENT_MUTATIONS)
    assert not {"width", "values", "seed", "narrow", "widen"} & names


def test_a_seeded_batch_draws_from_the_mutations_of_before():
    batch = Batch(BAR, BAR.start, BAR.start + 0x3F, 5, 20)
    assert {mutate(batch, Stream(salt))[0] for salt in range(200)} == set(MUTATIONS)


def test_freezing_a_seeded_step_makes_exactly_its_writes():
    seeded = step(IO, 0xC008, 4, 77, 5, VALUES_DMA)
    steps = frozen(seeded)
    assert len(steps) == 5 and all(s.fixed is not None and s.op_count == 1 for s in steps)
    assert writes(steps) == writes((seeded,))
    # the first keeps the dma fill: the same memory the step's own fill put there; the rest touch none
    assert [s.values for s in steps] == [VALUES_DMA] + ["uniform"] * 4
    first, original = steps[0].plan(0), seeded.plan(0)
    assert scratch_fill(first.range_seed, 0, first.layout) == scratch_fill(original.range_seed, 0, original.layout)
    two_registers = Batch(IO, 0xC010, 0xC013, 3, 3, 2, fuzz_only=True)
    assert writes(frozen(two_registers)) == writes((two_registers,))
    assert not freezable(step(IO, 0xC008, 4, 77, FREEZE_MOST_OPS + 1, "uniform"))
    assert not freezable(Batch(IO, 0xC010, 0xC013, 3, 3, 2)) and not freezable(steps[0])
    with pytest.raises(ValueError, match="only short seeded fuzz-only elements freeze"):
        frozen(steps[0])


def test_the_freeze_mutation_changes_exactly_one_write_of_the_frozen_step():
    program = (fixed_step(IO, 0xC012, 1, 3), step(IO, 0xC008, 4, 21, 4, "uniform"), fixed_step(IO, 0xC010, 2, 0))
    context = context_for(program, BASES, [program])
    for salt in range(50):
        child = freeze(program, context, Stream(salt))
        assert child == freeze(program, context, Stream(salt))
        assert len(child) == len(program) + 3 and all(e.fixed is not None for e in child)
        before, after = writes(program), writes(child)
        assert [(p, w) for p, w, _ in before] == [(p, w) for p, w, _ in after]
        assert sum(x != y for x, y in zip(before, after, strict=True)) == 1
        assert after[0] == before[0] and after[-1] == before[-1]  # only the frozen step's writes may differ
    # nothing to freeze: a step is inserted instead
    only_fixed = bring_up()
    assert len(freeze(only_fixed, context_for(only_fixed, BASES, [only_fixed]), Stream(3))) == len(only_fixed) + 1


def test_the_volume_child_of_a_fixed_stretch_is_seeded():
    wide = Batch(IO, 0xC000, 0xC00F, 3, 2, 4, fuzz_only=True, fixed=0x7000)
    child = _volume(wide, 1000)
    assert (child.fixed, child.fuzz_only) == (None, False) and child.plan(0).op_count == child.op_count


def test_rounds_grow_on_a_fixed_program_deterministically_and_keep_its_writes():
    corpus = Corpus("7.2.15", "pc-virtio-net")
    corpus.add(bring_up(), ["virtio_queue_set_addr", "virtio_notify"])
    corpus.add((step(IO, 0xC008, 4, 5, 2, VALUES_DMA),), ["virtio_set_status"])
    rounds = [GuidedSchedule(BASES, 11).next_round(n, corpus, 50_000) for n in range(1, 9)]
    assert rounds == [GuidedSchedule(BASES, 11).next_round(n, corpus, 50_000) for n in range(1, 9)]
    origins = {name for r in rounds for origin in r.origins for name in origin.split("+")}
    assert {"parent", "change", "freeze"} <= origins
    parents = 0
    for r in rounds:
        for element in r.batches:
            element.plan(0)  # each a valid range
        for first, program in r.spans():
            if r.origins[first] == "parent" and r.parent == 0:
                assert writes(program) == writes(bring_up())  # the parent runs as it is: exact writes kept
                parents += 1
    assert parents >= 1


@pytest.mark.parametrize("name", sorted(PROGRAM_MUTATIONS))
def test_every_program_mutation_takes_a_program_of_fixed_steps(name):
    context = context_for(bring_up(), BASES, [bring_up()])
    for salt in range(30):
        child = PROGRAM_MUTATIONS[name](bring_up(), context, Stream(salt))
        assert op_count(child) >= 1 and all(e.base in BASES for e in child)
        for element in child:
            element.plan(0)
    name, child = mutate_program(bring_up(), context, Stream(5), 3)
    assert name.count("+") == 2 and child != bring_up()
