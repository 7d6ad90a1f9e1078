"""summary.json content, crash signatures, the human table and merging shards."""

from __future__ import annotations

from pathlib import Path

import pytest

from avocado_iofuzz.campaign.runner import CampaignResult, Finding
from avocado_iofuzz.campaign.tally import RangeTally
from avocado_iofuzz.model.program import RangePlan, plan_ranges
from avocado_iofuzz.results.report import (
    build_summary,
    finding_signature,
    merge_summaries,
    summary_table,
    whiteboard_line,
)

RANGES = [(0x0, 0x1F, "dma1"), (0x20, 0x21, "pic1"), (0xC000, 0xC0FF, "PCI")]
ABORT = {"status": None, "signal": 6, "stderr_tail": "qemu: hw/x.c:123: f: Assertion `n < 0x10' failed."}


def _summary(seed=7, shard="1/1", ranges=RANGES, findings=(), done=None, tallies=None):
    plans = plan_ranges(seed, ranges, 4)
    result = CampaignResult(
        ops_done=done or {p.index: p.op_count for p in plans},
        tallies=tallies or {},
        findings=list(findings),
        elapsed=2.0,
    )
    summary = build_summary(
        seed=seed,
        fuzz_count=4,
        accel="tcg",
        accel_reason="test",
        plans=plans,
        result=result,
        trace_path=Path("/r/trace.iofuzz"),
        qemu_cmdline="qemu",
        guest="busybox",
        shard=shard,
    )
    return plans, summary


def test_a_clean_run_counts_every_op_by_phase():
    plans, summary = _summary()
    dma = summary["ranges"][0]
    assert dma["ops_by_phase"] == {"read": 32, "zero": 32, "fuzz": 128}
    assert dma["reads"] == 32 and dma["writes"] == 160 and dma["ops_done"] == dma["ops_planned"] == 192
    assert summary["ops_done_total"] == sum(p.op_count for p in plans)
    assert summary["ops_per_s"] == round(summary["ops_done_total"] / 2.0, 1)
    assert summary["hangs"] == summary["reboots"] == 0 and summary["crashes"] == []
    assert summary["seed"] == 7 and summary["guest"] == "busybox" and summary["accelerator"] == "tcg"


def test_hang_and_crash_findings_carry_signature_and_reproducer():
    hang = Finding("hang", 0, "dma1", "0x0000-0x001f", (40, 48), "no progress")
    crash = Finding("crash", 2, "PCI", "0xc000-0xc0ff", (600, 700), "killed", ABORT)
    dma, crashed = RangeTally(), RangeTally()
    dma.confirm(0, 40), dma.skip(40, 48), dma.confirm(48, 192)
    crashed.confirm(0, 600), crashed.leave_unconfirmed(600, 700)
    _, summary = _summary(findings=[hang, crash], tallies={0: dma, 2: crashed}, done={0: 184, 1: 12, 2: 600})
    by_kind = {f["kind"]: f for f in summary["findings"]}
    assert by_kind["hang"]["signature"] == "hang:dma1:zero"
    assert by_kind["crash"]["signature"] == "crash:PCI:fuzz:signal 6:qemu: hw/x.c:N: f: Assertion `n < 0x?' failed."
    assert summary["hangs"] == 1 and len(summary["crashes"]) == 1
    reproducer = summary["crashes"][0]["reproducer"]
    assert reproducer["window"] == [600, 700] and reproducer["trace"] == "/r/trace.iofuzz"
    assert "fuzz_seed=7" in reproducer["rerun"] and "only_devices=PCI" in reproducer["rerun"]
    assert "'skip_ports=0x0-0xbfff 0xc100-0xffff'" in reproducer["rerun"]  # PCI alone, not a namesake
    assert summary["ranges"][0]["ops_by_phase"]["zero"] == 32 - 8


def test_signature_ignores_addresses_and_line_numbers():
    other = dict(ABORT, stderr_tail="noise\nqemu: hw/x.c:999: f: Assertion `n < 0x20' failed.\n")
    one = {"kind": "crash", "range_name": "PCI", "window": [0, 1], "qemu_exit": ABORT}
    two = {"kind": "crash", "range_name": "PCI", "window": [0, 1], "qemu_exit": other}
    assert finding_signature(one) == finding_signature(two)
    killed = {"kind": "crash", "range_name": "PCI", "window": [0, 1], "qemu_exit": dict(ABORT, signal=9)}
    assert finding_signature(one) != finding_signature(killed)


def test_table_lists_every_range_and_the_findings():
    hang = Finding("hang", 1, "pic1", "0x0020-0x0021", (0, 2), "x")
    _, summary = _summary(findings=[hang])
    lines = summary_table(summary).splitlines()
    assert lines[0].startswith("seed 7  accel tcg  shard 1/1") and "hangs 1" in lines[0]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == {"0x0000-0x001f", "0x0020-0x0021", "0xc000-0xc0ff"}
    assert rows["0x0020-0x0021"].endswith("hang") and rows["0x0000-0x001f"].endswith("-")


def test_merging_shards_gives_the_whole_campaign():
    _, whole = _summary()
    _, first = _summary(shard="1/2", ranges=RANGES[:1])
    crash = Finding("crash", 1, "PCI", "0xc000-0xc0ff", (5, 6), "boom", ABORT)
    _, second = _summary(shard="2/2", ranges=RANGES[1:], findings=[crash])
    merged = merge_summaries([first, second], ["a/summary.json", "b/summary.json"])
    assert [r["span"] for r in merged["ranges"]] == [r["span"] for r in whole["ranges"]]
    assert merged["ops_done_total"] == whole["ops_done_total"]
    assert merged["seed"] == 7 and merged["shards"] == ["1/2", "2/2"] and merged["overlaps"] == []
    assert merged["findings"][0]["source"] == "b/summary.json" and len(merged["crashes"]) == 1
    assert merged["elapsed_s"] == 2.0 and merged["ops_per_s"] == first["ops_per_s"] + second["ops_per_s"]
    assert "crash" in summary_table(merged)


def test_merge_reports_overlapping_parts_and_refuses_nothing_to_merge():
    _, one = _summary()
    merged = merge_summaries([one, one], ["x", "y"])
    assert len(merged["overlaps"]) == len(RANGES)
    with pytest.raises(ValueError, match="no summary"):
        merge_summaries([])


def test_whiteboard_is_one_line_with_the_findings():
    hang = Finding("hang", 1, "pic1", "0x0020-0x0021", (0, 2), "x")
    _, summary = _summary(findings=[hang])
    line = whiteboard_line(summary)
    assert "\n" not in line and line.startswith("seed 7  accel tcg") and line.endswith("; hang in pic1 ops [0, 2)")


def test_summary_tells_confirmed_from_possibly_executed_ops():
    crashed = RangeTally()
    crashed.confirm(0, 600), crashed.leave_unconfirmed(600, 700)
    crash = Finding("crash", 2, "PCI", "0xc000-0xc0ff", (600, 700), "killed", ABORT)
    _, summary = _summary(findings=[crash], tallies={2: crashed}, done={0: 192, 1: 12, 2: 600})
    pci = summary["ranges"][2]
    assert (pci["ops_confirmed"], pci["ops_unconfirmed"], pci["ops_executed"]) == (600, 100, 700)
    assert pci["ops_done"] == 600 and pci["writes"] == 600 - 256  # confirmed writes: zero phase and fuzz
    assert sum(pci["ops_executed_by_phase"].values()) == 700
    assert summary["ops_confirmed_total"] == 192 + 12 + 600 == summary["ops_done_total"]
    assert summary["ops_executed_total"] == 192 + 12 + 700
    assert summary["findings"][0]["op"] is None  # a crash the executor did not pin to an op
    table = summary_table(summary)
    assert "804 ops (+100 unconfirmed)" in table.splitlines()[0]
    pci_row = next(line for line in table.splitlines() if line.startswith("0xc000-0xc0ff"))
    assert pci_row.split()[1:7] == ["pio", "PCI", "256", "344", "100", "1536"]


def test_table_has_a_kind_column_and_a_merged_table_prints_scalars():
    _, first = _summary(shard="1/2", ranges=RANGES[:1])
    _, second = _summary(shard="2/2", ranges=RANGES[1:])
    table = summary_table(merge_summaries([first, second], ["a", "b"]))
    head, columns, *rows = table.splitlines()
    assert "accel tcg  shard 1/2, 2/2  " in head and "[" not in head
    assert columns.split()[:3] == ["span", "kind", "range"]
    assert all(row.split()[1] == "pio" for row in rows)


def test_merging_format_3_summaries_counts_their_ops_done():
    _, old = _summary()
    for r in old["ranges"]:
        for key in ("ops_confirmed", "ops_unconfirmed", "ops_executed"):
            del r[key]
    merged = merge_summaries([old], ["old"])
    assert merged["ops_confirmed_total"] == merged["ops_executed_total"] == old["ops_done_total"]


def test_whiteboard_names_the_op_the_executor_stopped_at():
    hang = Finding("hang", 1, "pic1", "0x0020-0x0021", (0, 8), "x", op=3)
    _, summary = _summary(findings=[hang])
    assert whiteboard_line(summary).endswith("; hang in pic1 ops [0, 8) at op 3")


def test_a_guided_programs_steps_show_fuzz_only_and_fixed_and_plan_only_their_writes():
    """ops_planned is the model's op count: (count + 2) x slots for a blind range, count x slots for a step."""
    blind = RangePlan(0, 0xC000, 0xC01F, "virtio BAR0", 7, 4, 2)
    seeded = RangePlan(1, 0xC010, 0xC011, "virtio BAR0", 9, 3, 2, fuzz_only=True)
    status = RangePlan(2, 0xC012, 0xC012, "virtio BAR0", 9, 1, 1, fuzz_only=True, fixed=0x3)
    plans = [blind, seeded, status]
    result = CampaignResult(ops_done={p.index: p.op_count for p in plans}, tallies={}, findings=[], elapsed=1.0)
    summary = build_summary(
        seed=7, fuzz_count=4, accel="tcg", accel_reason="test", plans=plans, result=result,
        trace_path=Path("/r/trace.iofuzz"), qemu_cmdline="qemu",
    )  # fmt: skip
    entries = summary["ranges"]
    assert "fuzz_only" not in entries[0] and "fixed" not in entries[0]  # a blind range's entry is what it was
    assert entries[1]["fuzz_only"] is True and "fixed" not in entries[1]
    assert entries[2]["fuzz_only"] is True and entries[2]["fixed"] == 3
    for plan, entry in zip(plans, entries, strict=True):
        slots = (plan.end - plan.start + 1) // entry["width"]
        lead = 0 if entry.get("fuzz_only") else 2
        assert entry["ops_planned"] == plan.op_count == (entry["range_fuzz_count"] + lead) * slots
        assert sum(entry["ops_by_phase"].values()) == entry["ops_planned"]
    assert [e["ops_planned"] for e in entries] == [96, 3, 1]
    assert entries[1]["ops_by_phase"] == {"read": 0, "zero": 0, "fuzz": 3} and entries[2]["writes"] == 1
    # readers of summaries: the table and the merge take the new keys as they come
    assert "virtio BAR0" in summary_table(summary)
    assert merge_summaries([summary])["ranges"][2]["fixed"] == 3
