"""Fixed-value ranges in the trace, replay, qtest export and the corpus; files of the version before them still read."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from test_trace_generator_parts import header_line, with_header

from avocado_iofuzz.campaign.generator_parts import (
    PART_FIXED,
    PART_FUZZ_ONLY,
    generator_fingerprint,
    part_fingerprints,
    plan_parts,
)
from avocado_iofuzz.campaign.trace import TraceError, TraceWriter, read_trace
from avocado_iofuzz.guided.batch import Base
from avocado_iofuzz.guided.corpus import Corpus, load_corpus, save_corpus
from avocado_iofuzz.guided.program import fixed_step, step
from avocado_iofuzz.model.dma import SCRATCH_BASE, SCRATCH_SIZE, VALUES_DMA, scratch_fill
from avocado_iofuzz.model.dma_layouts import LAYOUTS
from avocado_iofuzz.model.program import RangePlan

DATA = Path(__file__).parent / "data"
BEFORE_FIXED = DATA / "trace-before-fixed.iofuzz"  # written by the version before fixed values (see data/README)
CORPUS_BEFORE_FIXED = DATA / "corpus-before-fixed.json"
VIRTIO = Base("pio", 0xC000, 0xC01F, 1, "0000:00:03.0 virtio-net BAR0", VALUES_DMA, "virtio")
UNIFORM = RangePlan(0, 0x3F8, 0x3FF, "serial port", 7, 8)
STATUS = RangePlan(1, 0xC012, 0xC012, "status", 7, 1, 1, fuzz_only=True, fixed=0x3)
PFN = RangePlan(2, 0xC008, 0xC00B, "pfn", 7, 2, 4, fuzz_only=True, fixed=0x7000, values=VALUES_DMA, layout="virtio")


def write_trace(path: Path, plans: list[RangePlan], listed: bool = False) -> Path:
    """Each plan's ops, its range record with its first batch (a guided round's ranges differ in seed and count)."""
    with TraceWriter(path, {"machine_type": "pc"}, mark_interval=0) as writer:
        for plan in plans:
            writer.write_ops(plan, 0, plan.op_count, listed=listed)
    return path


def test_a_trace_of_the_version_before_fixed_values_is_refused_for_its_virtio_layout_alone():
    """Its virtio-net range has the virtio layout, which issue 13 shaped into requests: that part, and only it."""
    header = header_line(BEFORE_FIXED)
    assert PART_FIXED not in header["generator_parts"] and header["generator"] != generator_fingerprint()
    with pytest.raises(TraceError, match="layout:virtio") as refused:
        read_trace(BEFORE_FIXED)
    assert "part dma" not in str(refused.value) and "part ops" not in str(refused.value)


def test_the_older_parts_are_what_they_were_but_the_virtio_layout():
    """A new part of its own: traces and corpora of the version before keep their fingerprints (virtio: issue 13)."""
    before = header_line(BEFORE_FIXED)["generator_parts"]
    changed = {part for part in before if part_fingerprints()[part] != before[part]}
    assert changed == {"layout:virtio"}
    # layouts appended since (each its own part) are new parts too, and change none of the older ones
    later_layouts = {f"layout:{name}" for name in LAYOUTS} - set(before) - {"layout:generic"}
    assert set(part_fingerprints()) - set(before) == {PART_FIXED, *later_layouts}
    assert plan_parts(STATUS) == ("ops", PART_FUZZ_ONLY, PART_FIXED)
    assert plan_parts(PFN) == ("ops", "dma", "layout:virtio", PART_FUZZ_ONLY, PART_FIXED)


def test_a_fixed_range_is_rebuilt_from_its_record(tmp_path):
    plans = [UNIFORM, STATUS, PFN]
    path = write_trace(tmp_path / "t.iofuzz", plans)
    write_trace(tmp_path / "listed.iofuzz", plans, listed=True)  # listed: checked op by op against the generator
    assert read_trace(tmp_path / "listed.iofuzz").plans == read_trace(path).plans
    records = [json.loads(line[2:]) for line in path.read_text().splitlines() if line.startswith("R ")]
    assert [r.get("fixed") for r in records] == [None, 3, 0x7000] and "fixed" not in records[0]
    trace = read_trace(path)
    assert [trace.plans[i] for i in range(3)] == plans
    assert [op.value for _, op in trace.ops[2]] == [0x7000] * 2
    assert [(op.port, op.value) for _, op in trace.ops[1]] == [(0xC012, 3)]


def test_a_listed_op_that_is_not_the_fixed_value_is_refused(tmp_path):
    path = tmp_path / "t.iofuzz"
    write_trace(path, [STATUS], listed=True)
    path.write_text(path.read_text().replace("wc012 3\n", "wc012 4\n"))
    with pytest.raises(TraceError, match=r"op 0 of range 1 is 'wc012 4', but the generator gives 'wc012 3'"):
        read_trace(path)


def test_a_changed_fixed_part_refuses_only_fixed_ranges(tmp_path):
    changed = {**part_fingerprints(), PART_FIXED: "feedfacefeedface"}
    seeded = write_trace(tmp_path / "seeded.iofuzz", [UNIFORM, RangePlan(1, 0xC012, 0xC012, "s", 7, 2, fuzz_only=True)])
    assert len(read_trace(with_header(seeded, generator_parts=changed)).plans) == 2
    fixed = write_trace(tmp_path / "fixed.iofuzz", [UNIFORM, STATUS])
    with pytest.raises(TraceError, match=r":4: range 1 needs the op generator's fixed,"):
        read_trace(with_header(fixed, generator_parts=changed))
    # a header with the running hash alone vouches for the parts that hash covers, not for fixed values
    with pytest.raises(TraceError, match=r":4: range 1 needs the op generator's fixed,"):
        read_trace(with_header(tmp_path.joinpath("fixed.iofuzz"), generator_parts=None))
    assert len(read_trace(with_header(seeded, generator_parts=None)).plans) == 2


def test_qtest_export_and_triage_candidates_of_a_fixed_dma_range(tmp_path):
    from avocado_iofuzz.repro.extract import extract
    from avocado_iofuzz.repro.qtest_ops import format_script

    plan = replace(PFN, index=0, seed=5, fuzz_count=3)
    crash = {"range": 0, "window": [0, 3], "qemu_exit": {"status": None, "signal": 6, "stderr_tail": "x"}}
    with TraceWriter(tmp_path / "t", {"qemu_cmdline": "/usr/bin/qemu-system-x86_64 -machine pc"}, [plan]) as trace:
        trace.write_ops(plan, 0, plan.op_count)
        trace.event("start", range=0, op=0)
        trace.event("crash", **crash)
    window = {c.name: c.ops for c in extract(tmp_path / "t").candidates}["window"]
    assert window == list(plan.ops_with_memory(0, 3))
    script = format_script(window).splitlines()
    memory = [line for line in script if line.startswith("write ")]
    assert bytes.fromhex("".join(line.split()[3][2:] for line in memory)) == scratch_fill(plan.range_seed, 0, "virtio")
    assert script[len(memory) :] == ["outl 0xc008 0x7000"] * 3
    assert memory[0].split()[1] == f"{SCRATCH_BASE:#x}" and len(memory) == SCRATCH_SIZE // 4096


def test_a_corpus_of_the_version_before_fixed_values_is_refused_naming_the_virtio_layout(tmp_path):
    path = tmp_path / "pc-virtio-net-pci.json"
    shutil.copy(CORPUS_BEFORE_FIXED, path)
    record = json.loads(path.read_text())
    assert "generator_parts" not in record and record["format"] == 2
    corpus, message = load_corpus(path, "7.2.15", "pc-virtio-net-pci")
    assert corpus.entries == [] and "layout:virtio" in message, message


def test_a_corpus_of_the_version_before_fixed_values_loads_where_it_needs_no_virtio_layout(tmp_path):
    """Its running hash is another, but stands for known parts: programs on the generic layout still load."""
    path = tmp_path / "pc-virtio-net-pci.json"
    record = json.loads(CORPUS_BEFORE_FIXED.read_text())
    for entry in record["entries"]:
        for element in entry["program"]:
            element["base"]["layout"] = "generic"
    path.write_text(json.dumps(record))
    corpus, message = load_corpus(path, "7.2.15", "pc-virtio-net-pci")
    assert message.startswith("loaded 2 program(s)"), message
    assert [len(e.program) for e in corpus.entries] == [1, 2]
    assert all(element.fixed is None for e in corpus.entries for element in e.program)
    assert [[element.seed for element in e.program] for e in corpus.entries] == [[3], [5, 9]]



def test_a_corpus_of_fixed_steps_round_trips_and_a_changed_fixed_part_sets_it_aside(tmp_path):
    corpus = Corpus("7.2.15", "pc-virtio-net-pci")
    bring_up = (
        fixed_step(VIRTIO, 0xC012, 1, 1),
        fixed_step(VIRTIO, 0xC012, 1, 3),
        fixed_step(VIRTIO, 0xC008, 4, 0x7000, values=VALUES_DMA, seed=4),
        step(VIRTIO, 0xC010, 2, 9, 4, "uniform"),
    )
    corpus.add(bring_up, ["virtio_queue_set_addr"])
    path = tmp_path / "pc-virtio-net-pci.json"
    save_corpus(corpus, path)
    record = json.loads(path.read_text())
    assert record["format"] == 2 and record["generator_parts"] == part_fingerprints()
    loaded, _ = load_corpus(path, "7.2.15", "pc-virtio-net-pci")
    assert loaded.entries == corpus.entries
    path.write_text(json.dumps({**record, "generator_parts": {**record["generator_parts"], PART_FIXED: "0" * 16}}))
    empty, message = load_corpus(path, "7.2.15", "pc-virtio-net-pci")
    assert not empty.entries and "need the op generator's fixed" in message and "set aside" in message
    # without fixed steps, a changed fixed part is none of the file's business
    seeded = Corpus("7.2.15", "pc-virtio-net-pci")
    seeded.add(bring_up[3:], ["virtio_x"])
    save_corpus(seeded, path)
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "generator_parts": {**record["generator_parts"], PART_FIXED: "0" * 16}}))
    assert load_corpus(path, "7.2.15", "pc-virtio-net-pci")[0].entries == seeded.entries


def test_an_in_guest_replay_regenerates_a_fixed_range_from_the_trace(tmp_path, executor):
    """The replay's executor command, rebuilt from the trace's records, makes the fixed writes the run made."""
    import subprocess

    from avocado_iofuzz.executor.protocol import parse_dry_run_op
    from avocado_iofuzz.repro.guest_replay import regenerating_command

    trace = read_trace(write_trace(tmp_path / "t.iofuzz", [UNIFORM, STATUS, PFN]))

    def replayed(spans: list[tuple[int, int, int]]) -> list[tuple[int, int, int, int]]:
        command = regenerating_command(trace.plans, spans, executor=str(executor))
        assert command is not None
        dry = command.replace(str(executor), f"{executor} --dry-run", 1)
        out = subprocess.run(dry, shell=True, capture_output=True, text=True, timeout=60).stdout
        ops = [parse_dry_run_op(line) for line in out.splitlines() if line[:1].isdigit()]
        return [(i, j, op.port, op.value) for i, j, op in ops]

    assert replayed([(1, 0, 1), (2, 0, 2)]) == [(1, 0, 0xC012, 3), (2, 0, 0xC008, 0x7000), (2, 1, 0xC008, 0x7000)]
    assert replayed([(2, 1, 2)]) == [(2, 1, 0xC008, 0x7000)]  # resumed in the middle of the fixed range
