"""Guided fuzzing's pure parts: batches, the corpus file, mutations, the schedule, attribution to batches."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from avocado_iofuzz.campaign.trace import generator_fingerprint
from avocado_iofuzz.coverage.collector import FirstSeen
from avocado_iofuzz.guided.batch import Base, Batch, BatchError, value_modes
from avocado_iofuzz.guided.corpus import Corpus, corpus_key, corpus_path, load_corpus, save_corpus
from avocado_iofuzz.guided.mutate import MUTATIONS, fresh, mutate, sweep
from avocado_iofuzz.guided.program import MAX_ELEMENTS
from avocado_iofuzz.guided.program_mutate import PROGRAM_MUTATIONS
from avocado_iofuzz.guided.rng import Stream
from avocado_iofuzz.guided.rounds import GuidedRun
from avocado_iofuzz.guided.schedule import (
    CHILD_ELEMENT_OPS,
    FRESH_PER_ROUND,
    MAX_ROUND_ELEMENTS,
    STRETCH_CHILDREN,
    BlindSchedule,
    GuidedSchedule,
    Round,
)
from avocado_iofuzz.model.program import RangePlan

BAR = Base("mmio", 0xFEB80000, 0xFEB9FFFF, 4, "0000:00:02.0 BAR0")
IO = Base("pio", 0xC000, 0xC01F, 1, "0000:00:02.0 BAR2")
CONFIG = Base("pci", 0x10000, 0x100FF, 4, "0000:00:02.0 config")
BASES = [BAR, IO, CONFIG]


def corpus_with(*programs: Batch | tuple[Batch, ...]) -> Corpus:
    corpus = Corpus("7.2.15", "pc-e1000e")
    for i, program in enumerate(programs):
        corpus.add(program, [f"e1000e_event_{i}"])
    return corpus


# -- batches ------------------------------------------------------------------------------


def test_a_batch_is_an_ordinary_range_plan_of_its_stretch():
    batch = Batch(BAR, 0xFEB80400, 0xFEB8041F, 7, 5)
    assert batch.plan(3) == RangePlan(3, 0xFEB80400, 0xFEB8041F, BAR.name, 7, 5, 4, "mmio")
    assert (batch.slots, batch.op_count, batch.whole) == (8, 56, False)
    assert Batch.from_dict(json.loads(json.dumps(batch.as_dict()))) == batch


@pytest.mark.parametrize(
    "change, message",
    [
        ({"start": BAR.start - 4}, "not within its base range"),
        ({"start": BAR.start + 2}, "whole aligned 4-byte slots"),
        ({"width": 3}, "width 3 is not one of mmio's"),
        ({"values": "dictionary-of-dreams"}, "value mode 'dictionary-of-dreams' is not one the op model offers"),
        ({"seed": "7"}, "seed must be an int"),
    ],
)
def test_a_bad_batch_is_refused_naming_what_is_wrong(change, message):
    fields = {"base": BAR, "start": BAR.start, "end": BAR.start + 15, "seed": 1, "fuzz_count": 1, **change}
    with pytest.raises(BatchError, match=message):
        Batch(**fields)


def test_the_value_modes_are_the_op_models():
    assert "uniform" in value_modes() and "dma" in value_modes()


def test_a_batch_uses_only_the_value_mode_its_run_planned_or_uniform():
    dma_bar = replace(BAR, values="dma")
    assert Batch(dma_bar, BAR.start, BAR.start + 15, 1, 1, values="dma").plan(0).values == "dma"
    assert Batch(dma_bar, BAR.start, BAR.start + 15, 1, 1).plan(0).values == "uniform"
    with pytest.raises(BatchError, match="value mode 'dma' was not planned for its range"):
        Batch(BAR, BAR.start, BAR.start + 15, 1, 1, values="dma")
    assert dma_bar.key() != BAR.key()  # a dma run's corpus entries are not a uniform run's


def test_only_a_batch_naming_its_own_scratch_layout_has_dma_values_on_a_uniform_range():
    """A bring-up recipe's pointer step in a uniform run: dma values with its family's layout, in plan and record."""
    pointer = Batch(BAR, BAR.start, BAR.start + 3, 1, 1, 4, "dma", fuzz_only=True, fixed=0x7000, layout="nvme")
    assert (pointer.plan(0).values, pointer.plan(0).layout) == ("dma", "nvme")
    assert Batch.from_dict(pointer.as_dict()) == pointer and pointer.as_dict()["layout"] == "nvme"
    with pytest.raises(BatchError, match=r"'dma' was not planned for its range .* names no scratch layout of its own"):
        Batch(BAR, BAR.start, BAR.start + 3, 1, 1, 4, "dma")
    with pytest.raises(BatchError, match="scratch layout 'floppy' is not one of"):
        Batch(BAR, BAR.start, BAR.start + 3, 1, 1, 4, "dma", layout="floppy")
    # toggled back to uniform values (the values mutation), the layout goes: the batch is an ordinary one
    assert replace(pointer, values="uniform") == Batch(BAR, BAR.start, BAR.start + 3, 1, 1, 4, fuzz_only=True,
                                                       fixed=0x7000)  # fmt: skip
    assert "layout" not in replace(pointer, values="uniform").as_dict()


def test_the_values_mutation_toggles_between_uniform_and_the_runs_mode_only():
    from avocado_iofuzz.guided.mutate import sweep, values

    uniform_only = sweep(BAR, 1, 1000)
    dma_run = sweep(replace(BAR, values="dma"), 1, 1000)
    assert dma_run.values == "dma"  # a sweep fuzzes as the run planned
    for n in range(20):
        assert values(uniform_only, Stream(n)).values == "uniform"  # nothing else was asked for
        assert values(dma_run, Stream(n)).values == "uniform"
        assert values(values(dma_run, Stream(n)), Stream(n)).values == "dma"


# -- the corpus file --------------------------------------------------------------------


def test_the_corpus_persists_and_loads_per_device_and_qemu_version(tmp_path):
    path = corpus_path(tmp_path, "7.2.15", corpus_key(["e1000e"], "pc"))
    assert path == tmp_path / "corpus" / "qemu-7.2.15" / "pc-e1000e.json"
    corpus = corpus_with(Batch(BAR, BAR.start, BAR.start + 63, 5, 9), Batch(IO, IO.start, IO.end, 6, 2))
    corpus.credit(0, 3)
    save_corpus(corpus, path)
    loaded, message = load_corpus(path, "7.2.15", "pc-e1000e")
    assert loaded.entries == corpus.entries
    assert loaded.loaded == 2
    assert message.startswith(f"loaded 2 program(s) reaching 2 event(s) (0 hit-count feature(s)) from {path}")
    assert not list(path.parent.glob("*.tmp"))  # written through a temporary file, renamed into place


def test_no_corpus_yet_starts_empty(tmp_path):
    corpus, message = load_corpus(tmp_path / "none.json", "7.2.15", "pc-e1000e")
    assert corpus.entries == [] and "no corpus" in message


def _unusable(tmp_path: Path, text: str | bytes) -> tuple[Corpus, str, Path]:
    path = tmp_path / "pc-e1000e.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    corpus, message = load_corpus(path, "7.2.15", "pc-e1000e")
    return corpus, message, path


def good_record(**change) -> str:
    record = corpus_with(Batch(BAR, BAR.start, BAR.start + 3, 1, 1)).as_dict()
    return json.dumps({**record, **change})


@pytest.mark.parametrize(
    "text, reason",
    [
        ('{"format": 1, "entries": [', "Expecting value"),
        (b'{"format": 1, "key": "\xff"}', "can't decode byte 0xff"),
        ("[]", "expected a JSON object, got list"),
        (good_record(format=9), "format 9, this avocado-iofuzz reads formats (1, 2)"),
        (good_record(qemu_version="8.2.0"), "found with QEMU '8.2.0', this is QEMU 7.2.15"),
        (good_record(generator="0123", generator_parts=None), "written with op generator '0123'"),
        # another running hash with known parts: refused only for a part its programs need, named
        (good_record(generator="0123", generator_parts={"ops": "0123"}), "need the op generator's ops"),
        (good_record(key="q35-nvme"), "the corpus of 'q35-nvme', not of 'pc-e1000e'"),
        (good_record(entries=[{"batch": {"base": {}}}]), "lacks the field"),
        (good_record(entries=[{"batch": None}]), "must be an object with a 'base' object"),
        (good_record(entries=[{"batch": Batch(BAR, BAR.start, BAR.start + 3, 1, 1).as_dict(), "picks": -1}]), "counts"),
    ],
)
def test_an_unusable_corpus_file_is_set_aside_with_the_reason_and_the_run_starts_empty(tmp_path, text, reason):
    corpus, message, path = _unusable(tmp_path, text)
    assert corpus.entries == [] and corpus.loaded == 0
    assert reason in message
    assert f"set aside as {path}.unusable" in message
    raw = text if isinstance(text, bytes) else text.encode()
    assert not path.exists() and Path(f"{path}.unusable").read_bytes() == raw


def test_the_corpus_records_the_generator_that_gives_its_batches_their_ops(tmp_path):
    assert corpus_with().as_dict()["generator"] == generator_fingerprint()


def test_entries_of_ranges_this_run_lacks_are_kept_but_not_scheduled():
    other = Base("mmio", 0xF0000000, 0xF0000FFF, 4, "0000:00:05.0 BAR0")
    corpus = corpus_with(Batch(other, other.start, other.start + 3, 1, 1), Batch(IO, IO.start, IO.end, 1, 1))
    assert corpus.usable(BASES) == [1]


# -- mutations and the schedule ------------------------------------------------------------


def test_mutations_stay_inside_the_device_range_in_whole_slots_and_are_deterministic():
    for name, mutation in MUTATIONS.items():
        for salt in range(200):
            parent = fresh(BASES[salt % 3], 11, 5000, Stream(salt))
            child = mutation(parent, Stream(salt))
            assert child == mutation(parent, Stream(salt)), name
            assert child.base == parent.base, name
            if name == "seed":  # the same stretch, a neighbouring seed
                assert (child.start, child.end) == (parent.start, parent.end) and 1 <= abs(child.seed - 11) <= 8
            else:  # one thing at a time: the seed stays the parent's
                assert child.seed == parent.seed, name
            # __post_init__ checked the stretch; the op budget stays near the parent's for stretch changes
            if name in ("narrow", "widen", "shift", "width"):
                assert child.op_count <= parent.op_count + 3 * child.slots, name


def test_the_width_mutation_realigns_the_stretch_to_a_width_the_space_allows():
    parent = Batch(IO, IO.start + 1, IO.start + 6, 3, 10)  # ports: 1-byte slots, any alignment
    widths = set()
    for salt in range(40):
        child = MUTATIONS["width"](parent, Stream(salt))
        widths.add(child.width)
        assert child.plan(0).width == child.width and IO.start <= child.start <= child.end <= IO.end
    assert widths == {2, 4}
    config = MUTATIONS["width"](Batch(CONFIG, CONFIG.start + 4, CONFIG.start + 11, 3, 10), Stream(1))
    assert config.width in (1, 2) and config.start % config.width == 0


def test_a_stretch_mutation_moves_the_stretch():
    parent = Batch(BAR, BAR.start + 0x400, BAR.start + 0x43F, 3, 10)
    moved = {mutate(parent, Stream(salt))[1].start for salt in range(50)}
    assert len(moved) > 5


def test_the_same_seed_and_corpus_state_give_the_same_rounds():
    corpus = corpus_with(Batch(BAR, BAR.start + 0x100, BAR.start + 0x10F, 42, 30), Batch(IO, IO.start, IO.end, 9, 4))
    first = [GuidedSchedule(BASES, 5).next_round(n, corpus, 100_000) for n in range(8)]
    again = [GuidedSchedule(BASES, 5).next_round(n, corpus, 100_000) for n in range(8)]
    assert first == again
    plans = [[b.plan(i) for i, b in enumerate(r.batches)] for r in first]
    assert plans == [[b.plan(i) for i, b in enumerate(r.batches)] for r in again]
    assert [list(p.ops()) for p in plans[3]] == [list(b.plan(i).ops()) for i, b in enumerate(again[3].batches)]
    other_seed = [GuidedSchedule(BASES, 6).next_round(n, corpus, 100_000) for n in range(1, 8)]
    assert other_seed != first[1:]
    corpus.credit(0, 5)  # another corpus state
    assert [GuidedSchedule(BASES, 5).next_round(n, corpus, 100_000) for n in range(1, 8)] != first[1:]


def test_round_zero_sweeps_every_range_and_later_rounds_grow_programs_from_the_corpus():
    parent = (Batch(BAR, BAR.start + 0x100, BAR.start + 0x10F, 42, 30),)
    corpus = corpus_with(parent)
    schedule = GuidedSchedule(BASES, 5)
    zero = schedule.next_round(0, corpus, 90_000)
    assert {b.base for b in zero.batches} == set(BASES) and all(b.whole for b in zero.batches)
    assert zero.program_lengths == (1, 1, 1)
    origins: set[str] = set()
    longest = 0
    for n in range(1, 20):
        r = schedule.next_round(n, corpus, 90_000)
        programs = list(r.spans())
        assert programs[0] == (0, parent) and r.parent == 0 and r.origins[0] == "parent"
        fresh_seeds = {b.seed for b, o in zip(r.batches, r.origins, strict=True) if o == "fresh"}
        assert len(fresh_seeds) == r.origins.count("fresh") == FRESH_PER_ROUND  # each fresh stretch its own seed
        assert r.op_count <= 90_000 * 5 // 4 or any(b.whole and b.fuzz_count == 1 for b in r.batches)
        assert len(r.batches) <= MAX_ROUND_ELEMENTS + STRETCH_CHILDREN + FRESH_PER_ROUND + 1
        for first, program in programs:
            assert set(r.origins[first : first + len(program)]) == {r.origins[first]}  # one origin per program
            assert len(program) <= MAX_ELEMENTS
        longest = max(longest, *(len(p) for _, p in programs))
        origins |= {name for o in r.origins for name in o.split("+")}
    assert {"parent", "fresh", "sweep", "insert", "change"} <= origins
    assert longest > 2  # children stack insertions on the parent


def test_a_child_program_is_cut_to_its_sequence_not_its_parents_sweep():
    corpus = corpus_with((sweep(BAR, 1, 1_000_000),))
    r = GuidedSchedule(BASES, 5).next_round(1, corpus, 1_000_000)
    children = [p for first, p in r.spans() if set(r.origins[first].split("+")) <= set(PROGRAM_MUTATIONS)]
    assert children and all(e.op_count <= CHILD_ELEMENT_OPS for p in children for e in p)


def test_without_a_corpus_a_round_is_fresh_stretches():
    r = GuidedSchedule(BASES, 5).next_round(1, Corpus("7.2.15", "k"), 10_000)
    assert set(r.origins) == {"fresh"} and r.parent is None


def test_the_blind_schedule_sweeps_every_range_with_successive_seeds():
    rounds = [BlindSchedule(BASES, 100).next_round(n, Corpus("7.2.15", "k"), 30_000) for n in range(3)]
    assert [r.seed for r in rounds] == [100, 101, 102]
    assert all(b.whole for r in rounds for b in r.batches)


def test_sweeps_run_the_kinds_as_a_run_plans_them_config_space_last():
    # config writes move and disable BARs: a config sweep before the port and memory sweeps left them
    # fuzzing addresses no device decodes any more (usb.piix3_uhci: BAR4 moved off 0xc000, no usb_uhci_* event)
    kinds = ["pio", "mmio", "pci"]
    zero = GuidedSchedule(BASES, 5).next_round(0, Corpus("7.2.15", "k"), 30_000)
    assert [b.base.space for b in zero.batches] == kinds
    blind = [BlindSchedule(BASES, 100).next_round(n, Corpus("7.2.15", "k"), 30_000) for n in range(2)]
    assert all([b.base.space for b in r.batches] == kinds for r in blind)


# -- attribution to batches ---------------------------------------------------------------


def test_new_events_go_to_the_batch_that_ran_and_after_the_last_mark_to_the_last_batch(tmp_path):
    collector = SimpleNamespace(
        first_seen={
            "old": FirstSeen(0, 4, 4, 0.1),
            "a": FirstSeen(0, 8, 8, 0.2),
            "b": FirstSeen(2, 4, 40, 0.3),
            "late": FirstSeen(None, 0, 99, 0.4),
        }
    )
    run = GuidedRun.__new__(GuidedRun)
    run.coverage = SimpleNamespace(collector=collector)  # type: ignore[assignment]
    plans = [replace(Batch(IO, IO.start, IO.end, 1, 1)).plan(i) for i in range(3)]
    assert run._attribute(plans, {"old"}) == {0: ["a"], 2: ["b", "late"]}


def test_a_runs_record_rebuilds_its_rounds_from_the_corpus_it_started_with():
    from avocado_iofuzz.guided.rebuild import bases_from, rebuild_rounds, recorded_batches

    start = corpus_with(Batch(BAR, BAR.start + 0x100, BAR.start + 0x10F, 42, 30))
    live = corpus_with(Batch(BAR, BAR.start + 0x100, BAR.start + 0x10F, 42, 30))
    schedule = GuidedSchedule(BASES, 9)
    records = []
    for number in range(6):  # a run: each round reaches an event with one of its batches
        played = schedule.next_round(number, live, 20_000)
        new = {number % len(played.batches): [f"event_{number}"]}
        live.absorb(played, new)
        records.append(
            {
                "ops_asked": 20_000,
                "batches": [{**b.as_dict(), "new_events": new.get(i, [])} for i, b in enumerate(played.batches)],
            }
        )
    bases = bases_from([vars(b) for b in BASES])
    rebuilt = rebuild_rounds(9, bases, start, records)
    assert [r.batches for r in rebuilt] == [recorded_batches(r) for r in records]
    assert start.entries == live.entries
    tampered = [dict(records[0], ops_asked=30_000), *records[1:]]
    other = rebuild_rounds(9, bases, corpus_with(Batch(BAR, BAR.start + 0x100, BAR.start + 0x10F, 42, 30)), tampered)
    assert [r.batches for r in other] != [recorded_batches(r) for r in records]


def test_rounds_write_one_trace_with_their_ranges_renumbered(tmp_path):
    from avocado_iofuzz.campaign.trace import TraceWriter, read_trace
    from avocado_iofuzz.guided.round_trace import RoundTrace

    # one round, each batch its own seed: the range records carry them
    first = [Batch(IO, IO.start, IO.start + 3, 5, 2, 2).plan(0), Batch(BAR, BAR.start, BAR.start + 7, 8, 1).plan(1)]
    second = [Batch(IO, IO.start + 4, IO.start + 7, 6, 3, 4).plan(0)]
    with TraceWriter(tmp_path / "t.iofuzz", {"seed": 5}) as writer:
        for offset, plans in ((0, first), (2, second)):
            view = RoundTrace(writer, offset)
            view.write_batches((p, 0, p.op_count) for p in plans)
            view.event("start", range=0, op=0)
            view.progress(len(plans) - 1, plans[-1].op_count)
            view.event("reset")
    trace = read_trace(tmp_path / "t.iofuzz")
    assert sorted(trace.plans) == [0, 1, 2]
    assert trace.plans[2] == replace(second[0], index=2) and trace.plans[1] == first[1] and trace.plans[1].seed == 8
    assert list(trace.ops[2]) == list(enumerate(second[0].ops()))
    assert [e.data.get("range") for e in trace.events if e.kind == "start"] == [0, 2]
    assert [(m.range_index, m.ops_done) for m in trace.progress] == [(1, first[1].op_count), (2, second[0].op_count)]


def test_triage_sees_the_rounds_before_a_crash_as_the_devices_history(tmp_path):
    from avocado_iofuzz.campaign.trace import TraceWriter
    from avocado_iofuzz.guided.round_trace import RoundTrace
    from avocado_iofuzz.repro.extract import executed_spans, find_finding, load_trace

    first = [Batch(IO, IO.start, IO.start + 3, 5, 2).plan(i) for i in range(2)]
    second = [Batch(IO, IO.start + 4, IO.start + 7, 6, 3).plan(0), Batch(IO, IO.start, IO.start + 1, 6, 3).plan(1)]
    with TraceWriter(tmp_path / "t.iofuzz", {"seed": 5}) as writer:
        view = RoundTrace(writer, 0)
        view.write_batches((p, 0, p.op_count) for p in first)
        view.event("start", range=0, op=0)
        writer.event("guided_events", round=0, new={}, ran_to=[1, first[1].op_count])
        view = RoundTrace(writer, 2)
        view.write_batches((p, 0, p.op_count) for p in second)
        view.event("start", range=0, op=0)
        view.event("crash", range=1, window=[0, 4], qemu_exit={"status": None, "signal": 6, "stderr_tail": ""})
    trace = load_trace(tmp_path / "t.iofuzz")
    finding, event = find_finding(trace, "crash")
    assert (finding.range_index, finding.window) == (3, (0, 4))
    assert trace.plans[3] == replace(second[1], index=3)
    assert executed_spans(trace, event) == [
        (0, 0, first[0].op_count), (1, 0, first[1].op_count), (2, 0, second[0].op_count), (3, 0, 4),
    ]  # fmt: skip


def test_a_guided_batch_reruns_blind_with_the_same_ops():
    from avocado_iofuzz.results.rerun import RerunContext, rerun_range

    batch = Batch(CONFIG, CONFIG.start + 8, CONFIG.start + 15, 77, 40)
    cmdline = (("fuzz_strategy", "guided"), ("guided_round_ops", "5000"), ("fuzz_strategy", "blind"))
    rerun = rerun_range(batch.plan(17), RerunContext("iofuzz.quick.nic.e1000e", cmdline=cmdline))
    params = dict(rerun.params)
    assert params["fuzz_strategy"] == "blind" and [k for k, _ in rerun.params].count("fuzz_strategy") == 1
    assert (params["fuzz_seed"], params["fuzz_count"], params["pci_widths"]) == ("77", "40", "4")


# -- the hit-count signal ------------------------------------------------------------------


def test_hit_counts_fall_in_afl_buckets_and_spell_features():
    from avocado_iofuzz.guided.features import bucket, event_of, features_of

    assert [bucket(n) for n in (1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 127, 128, 10**6)] == [
        1, 2, 3, 4, 4, 8, 8, 16, 16, 32, 32, 128, 128,
    ]  # fmt: skip
    hits = {"ehci_qh_fetch": 9, "ehci_port_reset": 1, "idle": 0}
    assert features_of(hits) == {"ehci_qh_fetch#8", "ehci_port_reset#1"}
    assert event_of("ehci_qh_fetch#8") == "ehci_qh_fetch"
    with pytest.raises(ValueError, match="at least one hit"):
        bucket(0)


def test_a_batch_that_only_drives_a_known_event_further_joins_the_corpus_and_names_weigh_more():
    a, b, c = (Batch(BAR, BAR.start + 16 * i, BAR.start + 16 * i + 15, i, 4) for i in range(3))
    corpus = Corpus("7.2.15", "pc-e1000e")
    played = Round(1, 0, (a, b, c), ("fresh",) * 3)  # three programs of one batch
    new = corpus.absorb(played, {0: ["e1000e_tx_descr"]}, {0: ["e1000e_tx_descr#1"], 1: ["e1000e_tx_descr#1"]})
    assert new == {0: ["e1000e_tx_descr#1"]} and len(corpus.entries) == 1  # b reached nothing a had not
    new = corpus.absorb(played, {}, {1: ["e1000e_tx_descr#1"], 2: ["e1000e_tx_descr#16", "e1000e_tx_descr#1"]})
    assert new == {2: ["e1000e_tx_descr#16"]}  # more descriptors walked: a new bucket, no new name
    assert [(e.batch, e.events, e.features) for e in corpus.entries][1] == (c, (), ("e1000e_tx_descr#16",))
    assert corpus.entries[0].energy() > corpus.entries[1].energy()  # a new name beats a new bucket


def test_a_corpus_file_from_before_features_loads_and_features_round_trip(tmp_path):
    batch = Batch(BAR, BAR.start, BAR.start + 15, 3, 4)
    corpus = corpus_with(batch)
    corpus.entries[0].features = ("e1000e_event_0#4",)
    path = tmp_path / "c.json"
    save_corpus(corpus, path)
    loaded, _ = load_corpus(path, "7.2.15", "pc-e1000e")
    assert loaded.entries == corpus.entries
    record = json.loads(path.read_text())
    del record["entries"][0]["features"]  # as written before the hit-count signal
    path.write_text(json.dumps(record))
    old, message = load_corpus(path, "7.2.15", "pc-e1000e")
    assert old.entries[0].features == () and "loaded 1 program(s)" in message
    record["entries"][0]["features"] = ["no bucket"]
    path.write_text(json.dumps(record))
    bad, message = load_corpus(path, "7.2.15", "pc-e1000e")
    assert bad.entries == [] and "'features' must be a list of 'event#bucket' strings" in message


def test_the_trace_alone_rebuilds_a_runs_rounds_and_corpus(tmp_path):
    from avocado_iofuzz.campaign.trace import TraceWriter, read_trace
    from avocado_iofuzz.guided.rebuild import rebuild_rounds, rounds_from_trace

    start = corpus_with(Batch(BAR, BAR.start + 0x100, BAR.start + 0x10F, 42, 30))
    live = corpus_with(Batch(BAR, BAR.start + 0x100, BAR.start + 0x10F, 42, 30))
    schedule = GuidedSchedule(BASES, 9)
    offset = 0
    with TraceWriter(tmp_path / "t.iofuzz", {"seed": 9}) as writer:
        for number in range(6):
            played = schedule.next_round(number, live, 20_000)
            writer.event("guided_round", round=number, seed=played.seed, parent=played.parent, first_range=offset,
                         ops=20_000, origins=list(played.origins), programs=list(played.program_lengths))  # fmt: skip
            names = {number % len(played.batches): [f"event_{number}"]}
            hits = {i: [f"e1000e_event_0#{1 << (number % 4)}"] for i in range(2)}
            new = live.absorb(played, names, hits)
            writer.event("guided_events", round=number, new={str(offset + i): e for i, e in names.items()},
                         features={str(offset + i): f for i, f in new.items()}, ran_to=None)  # fmt: skip
            offset += len(played.batches)
    rounds = rounds_from_trace(read_trace(tmp_path / "t.iofuzz").events)
    rebuilt = rebuild_rounds(9, BASES, start, rounds)
    assert start.entries == live.entries and any(e.features and not e.events for e in live.entries)
    assert [r["programs"] for r in rounds] == [list(r.program_lengths) for r in rebuilt]
    assert any(length > 1 for r in rebuilt for length in r.program_lengths)  # programs, not batches
    assert any(len(e.program) > 1 for e in live.entries)  # and the corpus grew programs
    rounds[3]["programs"] = [len(rounds[3]["batches"])]
    with pytest.raises(ValueError, match="round 3: the schedule makes programs of"):
        rebuild_rounds(9, BASES, corpus_with(Batch(BAR, BAR.start + 0x100, BAR.start + 0x10F, 42, 30)), rounds)


# -- round sizing --------------------------------------------------------------------------


def test_rounds_of_mixed_cost_are_sized_from_the_overall_rate_and_stay_near_the_target():
    """Rounds alternate cheap and expensive batches (1e6 vs 1e5 ops/s) plus 0.3 s per round: sized from the
    previous round's rate they swing; from the overall rate their mean length is the target."""
    from avocado_iofuzz.guided.sizing import RoundSizer

    def duration(number: int, ops: int) -> float:
        return 0.3 + ops / (1e6 if number % 2 else 1e5)

    sizer = RoundSizer(2.0, 200_000)
    assert sizer.next_ops() == 200_000  # nothing measured yet
    lengths = []
    for number in range(40):
        ops = sizer.next_ops()
        lengths.append(duration(number, ops))
        sizer.record(ops, lengths[-1])
    assert abs(sum(lengths[10:]) / 30 - 2.0) < 0.15
    assert sizer.next_ops(seconds_left=0.5) < sizer.next_ops() and sizer.next_ops(seconds_left=0.0) == 1000
    previous, swings = 200_000 / duration(0, 200_000), []
    for number in range(1, 40):  # the old way, for contrast: the previous round's rate
        ops = int(previous * 2.0)
        swings.append(duration(number, ops))
        previous = ops / swings[-1]
    assert max(swings[10:]) > 2 * max(lengths[10:])
    with pytest.raises(ValueError, match="must all be positive"):
        RoundSizer(0, 1)


def test_the_first_rounds_one_time_costs_do_not_shrink_the_rounds_after_it():
    """Round 0 pays the first login and the coverage baseline (3 s here); later rounds 0.3 s + ops at 3e6/s."""
    from avocado_iofuzz.guided.sizing import RoundSizer

    sizer = RoundSizer(2.0, 200_000)
    sizer.record(200_000, 3.0 + 200_000 / 3e6)
    lengths = []
    for _ in range(12):
        ops = sizer.next_ops()
        lengths.append(0.3 + ops / 3e6)
        sizer.record(ops, lengths[-1])
    assert all(abs(length - 2.0) < 0.1 for length in lengths[3:]), lengths


def test_an_event_is_exhausted_once_the_corpus_holds_every_bucket_of_it():
    from avocado_iofuzz.guided.features import BUCKET_FLOORS, exhausted

    every = {f"e1000e_core_write#{floor}" for floor in BUCKET_FLOORS}
    assert exhausted(["e1000e_core_write", "e1000e_irq_set"], every) == {"e1000e_core_write"}
    for floor in BUCKET_FLOORS:  # one bucket missing: a batch may still land in it
        assert exhausted(["e1000e_core_write"], every - {f"e1000e_core_write#{floor}"}) == set()
    # argument-qualified keys are not the name's buckets
    assert exhausted(["e1000e_core_write"], {f"e1000e_core_write(index=0x1)#{f}" for f in BUCKET_FLOORS}) == set()
