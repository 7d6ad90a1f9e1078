"""summary.json's rerun commands: each one, applied to the same guest, plans exactly its range again.

The guest is a captured one (``data/*-devices.txt``), the variant a real one
of our cfg, and planning the pipeline the VT test runs (ranges.fuzz_targets,
kinds.choose_targets, kinds.plan_kinds), so "the rerun selects exactly this
range" is checked for every range of whole-machine runs, not for examples.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from avocado_iofuzz.campaign.runner import CampaignResult, Finding
from avocado_iofuzz.model.kinds import Listings, choose_targets, plan_kinds
from avocado_iofuzz.model.program import RangePlan
from avocado_iofuzz.model.ranges import fuzz_targets, parse_extra_ranges
from avocado_iofuzz.plugins.resolver import IofuzzResolver
from avocado_iofuzz.results.report import build_summary, summary_table
from avocado_iofuzz.results.rerun import CMDLINE_PARAM, RerunContext, cmdline_record, rerun_range
from avocado_iofuzz.vt.catalog import TestCatalog
from avocado_iofuzz.vt.iofuzz_params import IofuzzParams, read_kinds, read_rerun_context

DATA = Path(__file__).parent / "data"
CATALOG = TestCatalog()


def plan_run(params: Mapping[str, Any], machine: str) -> list[RangePlan]:
    """The plans the VT test makes from ``params`` in the captured guest (vt/iofuzz_test.run_iofuzz, without I/O)."""
    settings = IofuzzParams.from_params(params)
    kinds = read_kinds(params)
    pio = fuzz_targets(
        (DATA / f"ioports-{machine}-devices.txt").read_text(),
        skip_devices=settings.skip_devices,
        skip_ports=settings.skip_ports,
        extra_ioports=settings.extra_ioports,
        only_devices=settings.only_devices,
    )
    listings = Listings(
        (DATA / f"iomem-{machine}-devices.txt").read_text(), (DATA / f"pci-resources-{machine}-devices.txt").read_text()
    )
    extra = [r.name for r in parse_extra_ranges(settings.extra_ioports)]
    assert settings.seed is not None
    return plan_kinds(settings.seed, settings.fuzz_count, kinds, choose_targets(kinds, listings, pio, extra))


def run_params(variant: str, cmdline: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The test params of ``avocado run VARIANT --vt-extra-params ...``, as the resolver makes them."""
    (params,) = CATALOG.variants(variant, extra_params=[f"{k}={v}" for k, v in cmdline])
    params[CMDLINE_PARAM] = cmdline_record([f"{k}={v}" for k, v in cmdline])
    return params


def key(plan: RangePlan) -> tuple[Any, ...]:
    """Everything a range's op stream depends on."""
    return plan.space, plan.start, plan.end, plan.width, plan.fuzz_count, plan.seed


def parse_command(command: str) -> tuple[str, list[tuple[str, str]]]:
    words = shlex.split(command)
    assert words[:2] == ["avocado", "run"] and words[3::2] == ["--vt-extra-params"] * len(words[4::2])
    return words[2], [tuple(item.split("=", 1)) for item in words[4::2]]  # type: ignore[misc]


RUNS = [
    # every kind over the whole pc machine, weighted, MMIO at two widths, config at two, a BAR split in two
    # by skip_mmio, an extra port range and an extra MMIO range; pc lists "0000:00:01.1" five times
    (
        "iofuzz.quick.platform",
        "pc",
        [
            ("fuzz_seed", "99"),
            ("fuzz_kinds", "pio:1 mmio:2 pci:1"),
            ("mmio_widths", "1 4"),
            ("pci_widths", "2 4"),
            ("skip_mmio", "0xfebc1101-0xfebc11fe"),  # unaligned: the pieces lose bytes at width 4
            ("extra_ioports", "0x0e9-0x0e9:debug"),
            ("extra_iomem", "0xfed1c000-0xfed1c0ff:rcrb"),
            ("hang_timeout", "40"),
        ],
    ),
    # q35: the host bridge's config space is two ranges of one name (default hole 0x60-0x67)
    ("iofuzz.quick.platform.q35", "q35", [("fuzz_seed", "5")]),
    # a device row: only_pci focuses every kind on the e1000, whose ports are a piece of a listed range
    ("iofuzz.quick.nic.e1000", "pc", [("fuzz_seed", "7"), ("fuzz_kinds", "pio:3 mmio:1 pci:2")]),
    # the port-only default run: skip_ports splits PCI conf1, keyboard is listed twice
    ("iofuzz.quick", "pc", [("fuzz_seed", "1"), ("fuzz_count", "3")]),
]


@pytest.mark.parametrize(("variant", "machine", "cmdline"), RUNS, ids=[r[0] for r in RUNS])
def test_every_rerun_plans_exactly_its_range_again(variant, machine, cmdline):
    params = run_params(variant, cmdline)
    plans = plan_run(params, machine)
    assert len(plans) >= 3
    context = read_rerun_context(params)
    assert context.reference == variant
    for plan in plans:
        rerun = rerun_range(plan, context, plans)
        assert rerun.command, (plan, rerun.note)
        reference, items = parse_command(rerun.command)
        assert (reference, items) == (variant, list(rerun.params))
        again = plan_run(run_params(reference, items), machine)
        assert [key(p) for p in again] == [key(plan)], plan
        assert again[0].op(again[0].op_count - 1) == plan.op(plan.op_count - 1)


def test_the_selftest_runs_hold_the_hard_cases():
    plans = plan_run(run_params(*RUNS[0][::2]), "pc")
    names = [p.name for p in plans]
    assert names.count("0000:00:01.1 (1-byte)") == 5 and "debug (1-byte)" in names and "rcrb (4-byte)" in names
    assert len({(p.space, p.fuzz_count) for p in plans}) == 3  # weighted: one fuzz count per kind
    split_bar = [(p.start, p.end) for p in plans if p.name == "0000:00:02.0 8086:100e BAR0 (4-byte)"]
    assert split_bar == [(0xFEBC0000, 0xFEBC10FF), (0xFEBC1200, 0xFEBC3FFF)]
    q35 = plan_run(run_params(*RUNS[1][::2]), "q35")
    assert len([p for p in q35 if p.space == "pci" and p.name.startswith("0000:00:00.0 ")]) == 2
    default = plan_run(run_params(*RUNS[3][::2]), "pc")
    assert [p.name for p in default].count("0000:00:01.1 (1-byte)") == 5
    # PCI conf1, split by the skipped 0xcf9: its address register at 4 bytes, its data window at every width
    conf1 = [(p.width, p.start, p.end) for p in default if p.name.startswith("PCI conf1 ")]
    assert conf1 == [(4, 0xCF8, 0xCFB), (1, 0xCFC, 0xCFF), (2, 0xCFC, 0xCFF), (4, 0xCFC, 0xCFF)]


def test_the_command_per_kind():
    context = RerunContext(reference="iofuzz.quick.nic.e1000e.q35", cmdline=(("extra_params", "-device sb16"),))
    pio = RangePlan(0, 0x60, 0x60, "keyboard", 5, 7)
    assert rerun_range(pio, context).command == (
        "avocado run iofuzz.quick.nic.e1000e.q35 --vt-extra-params 'extra_params=-device sb16' "
        "--vt-extra-params fuzz_seed=5 --vt-extra-params fuzz_count=7 --vt-extra-params fuzz_kinds=pio "
        "--vt-extra-params fuzz_strategy=blind --vt-extra-params only_devices=keyboard --vt-extra-params pio_widths=1 "
        "--vt-extra-params 'skip_ports=0x0-0x5f 0x61-0xffff'"
    )
    word = RangePlan(0, 0x1F0, 0x1F7, "0000:00:01.1 (2-byte)", 5, 7, 2)
    assert dict(rerun_range(word, context).params) | {"skip_ports": "..."} == {
        "extra_params": "-device sb16",
        "fuzz_seed": "5",
        "fuzz_count": "7",
        "fuzz_kinds": "pio",
        "fuzz_strategy": "blind",
        "only_devices": "0000:00:01.1",  # the width's suffix is the plan's, not the range's
        "pio_widths": "2",
        "skip_ports": "...",
    }
    mmio = RangePlan(1, 0xFEBF0000, 0xFEBF00FF, "0000:00:02.0 8086:100e BAR0 (8-byte)", 5, 3, 8, "mmio")
    wide = RerunContext(reference="iofuzz", mmio_widths=(4, 8))
    assert dict(rerun_range(mmio, wide).params) == {
        "fuzz_seed": "5",
        "fuzz_count": "3",
        "fuzz_kinds": "mmio",
        "fuzz_strategy": "blind",
        "only_iomem": "0000:00:02.0 8086:100e BAR0",  # the width's suffix is the plan's, not the range's
        "mmio_widths": "8",
        "skip_mmio": "0x0-0xfebeffff 0xfebf0100-0xffffffffffffffff",
    }
    config = RangePlan(2, 0x10020, 0x100FF, "0000:00:02.0 8086:100e", 5, 11, 2, "pci")
    assert dict(rerun_range(config, context).params)["only_pci"] == "0000:00:02.0"
    assert dict(rerun_range(config, context).params)["skip_pci_config"] == "0000:00:02.0@0x0-0x1f"
    whole = RangePlan(2, 0x10000, 0x100FF, "0000:00:02.0 8086:100e", 5, 11, 4, "pci")
    assert "skip_pci_config" not in dict(rerun_range(whole, context).params)  # the run's holes do not touch it


def test_only_params_that_shape_the_ranges_are_carried():
    cmdline = [
        ("hang_timeout", "40"),
        ("iofuzz_accel", "tcg"),
        ("machine_type", "q35"),
        ("extra_params", "-device edu"),
        ("only_pci", "1234:11e8"),
        ("mmio_max_size", "0x80"),
        ("skip_ports", "0x64"),
        ("fuzz_kinds", "mmio pio"),
        ("only_pci", "1234:*"),  # given twice: the last one counts, as in the run
        ("fuzz_count", "9"),
        ("fuzz_strategy", "guided"),  # the rerun replans one range, blind: a guided one would plan other batches
        ("iofuzz_password", "hunter2"),  # a secret: never written into summary.json
    ]
    params = run_params("iofuzz.quick", cmdline)
    context = read_rerun_context(params)
    mmio = RangePlan(0, 0xFEA00000, 0xFEA0007F, "0000:00:04.0 1234:11e8 BAR0", 1, 4, 4, "mmio")
    carried = [k for k, _ in rerun_range(mmio, context).params][:4]
    assert carried == ["machine_type", "extra_params", "mmio_max_size", "only_pci"]
    assert dict(rerun_range(mmio, context).params)["only_pci"] == "1234:*"
    pio = RangePlan(0, 0x60, 0x60, "keyboard", 1, 4)
    pio_params = dict(rerun_range(pio, context).params)
    assert "mmio_max_size" not in pio_params and pio_params["skip_ports"] == "0x0-0x5f 0x61-0xffff"
    assert pio_params["fuzz_count"] == "4" and "hang_timeout" not in pio_params and "iofuzz_accel" not in pio_params
    assert [v for k, v in rerun_range(pio, context).params if k == "fuzz_strategy"] == ["blind"]
    assert "hunter2" not in rerun_range(pio, context).command and "hunter2" not in rerun_range(mmio, context).command


def test_a_shard_reruns_in_its_variant_with_the_whole_campaign():
    params = run_params("iofuzz.quick", [("fuzz_seed", "3"), ("iofuzz_shard", "2/4")])
    params["shortname"] += ".shard2of4"  # as expand_shards names the shard's test
    context = read_rerun_context(params)
    assert context.reference == "iofuzz.quick"
    rerun = dict(rerun_range(RangePlan(0, 0x70, 0x77, "rtc0", 3, 2), context).params)
    assert rerun["iofuzz_shard"] == "1/1"


def test_an_injected_hang_follows_its_range_to_index_0():
    context = read_rerun_context(run_params("iofuzz.quick", [("iofuzz_debug_hang_at", "1:40")]))
    plans = [RangePlan(0, 0x60, 0x60, "keyboard", 3, 2), RangePlan(1, 0x70, 0x77, "rtc0", 3, 2)]
    assert dict(rerun_range(plans[1], context, plans).params)["iofuzz_debug_hang_at"] == "0:40"
    assert "iofuzz_debug_hang_at" not in dict(rerun_range(plans[0], context, plans).params)


@pytest.mark.parametrize(
    ("plans", "note"),
    [
        # an extra range over a listed one of the same name: a selection keeps both
        (
            [RangePlan(0, 0x60, 0x60, "keyboard", 1, 2), RangePlan(1, 0x60, 0x63, "keyboard", 1, 2)],
            "range(s) 1 keyboard (0x60-0x63) share its name and addresses",
        ),
        # a guided run's batches: hundreds of stretches of one range; the note names three and counts the rest
        (
            [RangePlan(i, 0x60, 0x63, "keyboard", 1, 2) for i in range(300)],
            "range(s) 1 keyboard (0x60-0x63), 2 keyboard (0x60-0x63), 3 keyboard (0x60-0x63) and 296 more share",
        ),
        ([RangePlan(0, 0x2F8, 0x2FF, "com2,com4", 1, 2)], "holds a comma"),
        ([RangePlan(0, 0xFED00000, 0xFED003FF, " HPET", 1, 2, 4, "mmio")], "starts or ends with blanks"),
    ],
)
def test_a_range_params_cannot_single_out_gets_a_note_not_a_command(plans, note):
    rerun = rerun_range(plans[0], RerunContext(), plans)
    assert rerun.command is None and note in rerun.note and "cannot be selected alone" in rerun.note


def test_the_summary_gives_every_range_and_finding_its_rerun():
    params = run_params("iofuzz.quick.platform", [("fuzz_seed", "99"), ("hang_timeout", "40")])
    params[CMDLINE_PARAM] = cmdline_record(["fuzz_seed=99", "hang_timeout=40"])
    plans = [
        RangePlan(0, 0x60, 0x60, "keyboard", 99, 2),
        RangePlan(1, 0x60, 0x63, "keyboard", 99, 2),
        RangePlan(2, 0xFED00000, 0xFED003FF, "HPET 0", 99, 2, 4, "mmio"),
    ]
    crash = Finding("crash", 2, "HPET 0", "0xfed00000-0xfed003ff", (10, 20), "killed", {"signal": 6, "status": None})
    hang = Finding("hang", 1, "keyboard", "0x0060-0x0063", (3, 4), "no progress")
    result = CampaignResult(
        ops_done={p.index: p.op_count for p in plans}, ops_skipped={p.index: 0 for p in plans}, findings=[hang, crash]
    )
    summary = build_summary(
        seed=99,
        fuzz_count=2,
        accel="tcg",
        accel_reason="test",
        plans=plans,
        result=result,
        trace_path=Path("/r/trace.iofuzz"),
        qemu_cmdline="qemu",
        rerun_context=read_rerun_context(params),
    )
    ranges = summary["ranges"]
    assert ranges[2]["rerun"].startswith("avocado run iofuzz.quick.platform ")
    assert (
        ranges[2]["rerun_params"]["only_iomem"] == "HPET 0" and ranges[2]["rerun_reference"] == "iofuzz.quick.platform"
    )
    assert ranges[0]["rerun"] is None and ranges[1]["rerun"] is None
    assert ranges[1]["rerun_note"].endswith("the trace is the exact reproducer: avocado iofuzz replay /r/trace.iofuzz")
    by_kind = {f["kind"]: f["reproducer"] for f in summary["findings"]}
    assert by_kind["crash"]["rerun"] == ranges[2]["rerun"] and "rerun_note" not in by_kind["crash"]
    assert by_kind["hang"]["rerun"] is None and by_kind["hang"]["rerun_note"] == ranges[1]["rerun_note"]
    assert by_kind["hang"]["trace"] == "/r/trace.iofuzz"
    assert f"  rerun: {ranges[2]['rerun']}" in summary_table(summary)
    json.dumps(summary)


def test_unreadable_params_leave_a_note_and_the_summary_intact():
    context = read_rerun_context({"shortname": "iofuzz.quick", CMDLINE_PARAM: "not json"})
    rerun = rerun_range(RangePlan(0, 0x60, 0x60, "keyboard", 1, 2), context)
    assert rerun.command is None and "iofuzz_cmdline_params" in rerun.note and rerun.reference == "iofuzz.quick"


def test_the_resolver_records_the_command_line_params():
    resolver = IofuzzResolver(config={"subcommand": "run", "vt.extra_params": ["fuzz_seed=3", "only_pci=8086:*"]})
    (runnable,) = resolver.resolve("iofuzz.quick").resolutions
    recorded = read_rerun_context(runnable.kwargs)
    assert recorded.cmdline == (("fuzz_seed", "3"), ("only_pci", "8086:*")) and recorded.reference == "iofuzz.quick"


def test_a_variants_shortname_reruns_that_variant_alone():
    every = CATALOG.variants("iofuzz", expand_all=True)
    assert len(every) > 1000
    for params in every[::37] + every[-3:]:
        assert [d["shortname"] for d in CATALOG.variants(params["shortname"])] == [params["shortname"]]


def test_a_guided_step_gets_a_note_naming_it_and_the_replay_a_blind_range_its_command():
    """A fuzz-only or fixed step: no param expresses it, so no command that would run other ops."""
    params = run_params(*RUNS[3][::2])
    plans = plan_run(params, "pc")
    context = read_rerun_context(params)
    blind = next(p for p in plans if p.width == 1 and p.slots >= 2)
    # the blind range: its command, which plans exactly it again (as before steps existed)
    rerun = rerun_range(blind, context, plans)
    assert rerun.command and not rerun.note
    again = plan_run(run_params(*parse_command(rerun.command)), "pc")
    assert [key(p) for p in again] == [key(blind)] and not again[0].fuzz_only
    seeded = replace(blind, fuzz_only=True)
    fixed = replace(blind, fuzz_only=True, fixed=0x3)
    # what that command would run for either step is not the step's ops: it reads first, the step writes
    assert again[0].op(0).kind == "r" and seeded.op(0).kind == fixed.op(0).kind == "w"
    assert {op.value for op in fixed.ops()} == {3} != {op.value for op in again[0].ops(again[0].lead)}
    for step, what in ((seeded, "a fuzz-only step"), (fixed, "a fixed step")):
        note = rerun_range(step, context, [step]).note
        assert rerun_range(step, context, [step]).command is None
        assert note.startswith(f"range {blind.index} {blind.name!r} ({blind.start:#x}-{blind.end:#x}) is {what}")
    assert "writes 0x3" in rerun_range(fixed, context, [fixed]).note
    # in summary.json: the step's entry and its finding's reproducer point to the trace's replay
    crash = Finding("crash", fixed.index, fixed.name, "", (0, 1), "killed", {"signal": 6, "status": None})
    result = CampaignResult(ops_done={fixed.index: 1}, ops_skipped={}, findings=[crash])
    summary = build_summary(
        seed=1, fuzz_count=3, accel="tcg", accel_reason="test", plans=[fixed], result=result,
        trace_path=Path("/r/trace.iofuzz"), qemu_cmdline="qemu", rerun_context=context,
    )  # fmt: skip
    (entry,) = summary["ranges"]
    assert entry["rerun"] is None and entry["fixed"] == 3
    assert entry["rerun_note"].startswith(f"range {fixed.index} ")
    assert entry["rerun_note"].endswith("the trace is the exact reproducer: avocado iofuzz replay /r/trace.iofuzz")
    assert summary["findings"][0]["reproducer"]["rerun_note"] == entry["rerun_note"]
