"""Guided programs: steps, the program mutations, the corpus cutting a program after what it reached, format 1."""

from __future__ import annotations

import json

import pytest

from avocado_iofuzz.campaign.trace import generator_fingerprint
from avocado_iofuzz.guided.batch import Base, Batch, BatchError
from avocado_iofuzz.guided.corpus import Corpus, load_corpus, save_corpus
from avocado_iofuzz.guided.program import MAX_ELEMENTS, Program, program_from_list, step
from avocado_iofuzz.guided.program_mutate import (
    PROGRAM_MUTATIONS,
    Context,
    change,
    context_for,
    drop,
    insert,
    mutate_program,
    repeat,
    splice,
)
from avocado_iofuzz.guided.rng import Stream
from avocado_iofuzz.guided.schedule import GuidedSchedule, Round

IO = Base("pio", 0xC000, 0xC01F, 1, "0000:00:03.0 BAR0", "dma", "virtio")
BAR = Base("mmio", 0xFEB00000, 0xFEB00FFF, 4, "0000:00:03.0 BAR4", "dma", "virtio")
OTHER = Base("mmio", 0xFEB80000, 0xFEB9FFFF, 4, "0000:00:02.0 BAR0")
BASES = (IO, BAR, OTHER)


def virtio_setup() -> Program:
    """Queue select, queue PFN, status, notify: one write each, at virtio legacy's offsets."""
    return (
        step(IO, 0xC00E, 2, 1, 1, "dma"),
        step(IO, 0xC008, 4, 2, 1, "dma"),
        step(IO, 0xC012, 1, 3, 1, "dma"),
        step(IO, 0xC010, 2, 4, 2, "dma"),
    )


def test_a_step_is_a_fuzz_only_batch_on_one_register():
    element = step(IO, 0xC008, 4, 7, 3, "dma")
    assert (element.slots, element.op_count, element.fuzz_only) == (1, 3, True)
    plan = element.plan(5)
    assert plan.fuzz_only and [op.kind for op in plan.ops()] == ["w"] * 3
    assert {op.port for op in plan.ops()} == {0xC008}
    assert Batch.from_dict(json.loads(json.dumps(element.as_dict()))) == element
    with pytest.raises(BatchError, match="fuzz-only batch needs fuzz_count >= 1"):
        Batch(IO, 0xC008, 0xC00B, 1, 0, 4, fuzz_only=True)


def _context(program: Program, mates: tuple[Program, ...] = ()) -> Context:
    return context_for(program, BASES, (program, *mates))


def test_the_context_is_the_programs_device():
    other = (step(OTHER, OTHER.start, 4, 1, 1, "uniform"),)
    mate = (step(BAR, BAR.start + 0x14, 4, 9, 1, "dma"),)
    context = _context(virtio_setup(), (other, mate))
    assert set(context.bases) == {IO, BAR} and context.mates == (mate,)
    assert (BAR, BAR.start + 0x14, 4) in context.known and (IO, 0xC008, 4) in context.known
    assert all(base != OTHER for base, _, _ in context.known)


def test_insert_adds_one_step_on_a_register_of_the_device_and_keeps_the_rest_in_order():
    program = virtio_setup()
    context = _context(program)
    seen_known = seen_neighbour = 0
    for salt in range(200):
        child = insert(program, context, Stream(salt))
        assert len(child) == len(program) + 1
        new = [e for e in child if e not in program]
        assert len(new) == 1 and new[0].fuzz_only and new[0].slots == 1 and new[0].base in (IO, BAR)
        assert tuple(e for e in child if e is not new[0]) == program  # the parent's steps, in order
        seen_known += (new[0].base, new[0].start, new[0].width) in context.known
        seen_neighbour += any(abs(new[0].start - e.start) == e.width for e in program)
    assert seen_known > 40 and seen_neighbour > 20
    assert insert(program, context, Stream(3)) == insert(program, context, Stream(3))  # a pure function


def test_drop_removes_one_element_and_change_alters_exactly_one():
    program = virtio_setup()
    context = _context(program)
    for salt in range(50):
        dropped = drop(program, context, Stream(salt))
        assert len(dropped) == 3 and all(e in program for e in dropped)
        changed = change(program, context, Stream(salt))
        assert len(changed) == 4 and sum(a != b for a, b in zip(changed, program, strict=True)) <= 1
    assert any(change(program, context, Stream(s)) != program for s in range(10))
    assert len(drop(program[:1], context, Stream(1))) == 2  # never empty: a lone element gets a step instead


def test_repeat_runs_an_element_twice_in_a_row():
    program = virtio_setup()
    for salt in range(50):
        child = repeat(program, _context(program), Stream(salt))
        at = next(i for i in range(len(program)) if child[i + 1].start == child[i].start and child[i] == program[i])
        assert child[: at + 1] == program[: at + 1] and child[at + 2 :] == program[at + 1 :]
        distance = (child[at + 1].seed - child[at].seed) % (1 << 63)  # seeds wrap at 2**63
        assert min(distance, (1 << 63) - distance) <= 8


def test_splice_joins_a_prefix_with_a_suffix_of_another_program_of_the_device():
    program, mate = virtio_setup(), tuple(step(BAR, BAR.start + 4 * i, 4, 10 + i, 1, "dma") for i in range(5))
    context = _context(program, (mate,))
    for salt in range(50):
        child = splice(program, context, Stream(salt))
        cut = next(i for i, e in enumerate(child) if e.base == BAR)
        assert 1 <= cut <= len(program) and child[:cut] == program[:cut]
        assert child[cut:] == mate[len(mate) - (len(child) - cut) :]


def test_programs_stay_bounded():
    long = tuple(step(IO, 0xC000 + i % 32, 1, i, 1, "dma") for i in range(MAX_ELEMENTS))
    context = _context(long, (long,))
    for name, mutation in PROGRAM_MUTATIONS.items():
        assert all(len(mutation(long, context, Stream(s))) <= MAX_ELEMENTS for s in range(20)), name
    name, child = mutate_program(virtio_setup(), context, Stream(4), stack=3)
    assert child != virtio_setup() and name.count("+") == 2 and set(name.split("+")) <= set(PROGRAM_MUTATIONS)
    with pytest.raises(BatchError, match="at most 64"):
        program_from_list([e.as_dict() for e in (*long, long[0])])


def test_a_program_joins_the_corpus_cut_after_its_last_element_that_reached_something_new():
    program = virtio_setup()
    lone = (Batch(OTHER, OTHER.start, OTHER.start + 15, 5, 2),)
    played = Round.of_programs(3, 0, [("insert", program), ("fresh", lone)], parent=None)
    assert played.program_lengths == (4, 1) and [first for first, _ in played.spans()] == [0, 4]
    corpus = Corpus("7.2.15", "pc-virtio-net")
    new = corpus.absorb(played, {1: ["virtio_queue_set_addr"]}, {2: ["virtio_set_status#1"], 4: ["e1000e_x#2"]})
    assert new == {2: ["virtio_set_status#1"], 4: ["e1000e_x#2"]}
    assert [e.program for e in corpus.entries] == [program[:3], lone]  # the notify step bought nothing: cut
    assert corpus.entries[0].events == ("virtio_queue_set_addr",)
    assert corpus.entries[0].features == ("virtio_set_status#1",)
    corpus.absorb(played, {}, {0: ["virtio_set_status#1"]})
    assert len(corpus.entries) == 2  # what the corpus holds adds nothing


def test_the_same_corpus_state_gives_the_same_program_rounds():
    corpus = Corpus("7.2.15", "pc-virtio-net")
    corpus.add(virtio_setup(), ["virtio_queue_set_addr"])
    corpus.add((Batch(OTHER, OTHER.start, OTHER.start + 63, 3, 4),), ["e1000e_x"])
    first = [GuidedSchedule(BASES, 11).next_round(n, corpus, 50_000) for n in range(1, 8)]
    assert first == [GuidedSchedule(BASES, 11).next_round(n, corpus, 50_000) for n in range(1, 8)]
    assert any(len(p) > 4 for r in first for _, p in r.spans())  # programs grow on the four-step one


def test_corpus_format_2_round_trips_and_format_1_loads_as_one_element_programs(tmp_path):
    corpus = Corpus("7.2.15", "pc-virtio-net")
    corpus.add(virtio_setup(), ["virtio_queue_set_addr"], ["virtio_set_status#1"])
    path = tmp_path / "pc-virtio-net.json"
    save_corpus(corpus, path)
    record = json.loads(path.read_text())
    assert record["format"] == 2 and len(record["entries"][0]["program"]) == 4
    loaded, message = load_corpus(path, "7.2.15", "pc-virtio-net")
    assert loaded.entries == corpus.entries and message.startswith("loaded 1 program(s)")
    batch = Batch(OTHER, OTHER.start, OTHER.start + 15, 5, 2)
    old = {"format": 1, "generator": generator_fingerprint(), "qemu_version": "7.2.15", "key": "pc-virtio-net",
           "entries": [{"batch": batch.as_dict(), "events": ["e1000e_x"], "picks": 2, "finds": 1}]}  # fmt: skip
    path.write_text(json.dumps(old))
    loaded, _ = load_corpus(path, "7.2.15", "pc-virtio-net")
    assert [(e.program, e.events, e.picks) for e in loaded.entries] == [((batch,), ("e1000e_x",), 2)]
