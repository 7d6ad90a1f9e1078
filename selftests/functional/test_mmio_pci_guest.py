"""MMIO and PCI config fuzzing in a real guest: QEMU sees exactly the accesses the trace names.

One busybox guest on ``pc`` with an ``edu`` (8-byte MMIO registers), an
``i6300esb`` (byte-wide MMIO registers) and an ``e1000``. The ranges are
chosen from the guest's own listings, as ``avocado run iofuzz`` chooses
them; a campaign runs them and writes its trace; QEMU's trace events are the
observer outside the guest: ``memory_region_ops_read/write`` log every MMIO
access with its absolute address, size and value, ``pci_cfg_read/write``
every config access with its function and register. Each kind's ops, as
read back from the trace, must be the last accesses QEMU saw in that range.

A second guest boots with ``lockdown=integrity``: the executor's access
check reports every kind refused, which the test turns into a CANCEL.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from qtest_feed import feed_qtest

from avocado_iofuzz.campaign.guest_access import check_access, read_listings
from avocado_iofuzz.campaign.runner import Campaign, CampaignConfig
from avocado_iofuzz.campaign.trace import TraceWriter, read_trace
from avocado_iofuzz.executor.protocol import DEFAULT_BINARY, executor_command
from avocado_iofuzz.guest.build import default_guest
from avocado_iofuzz.model.kinds import (
    AccessRefused,
    KindParams,
    check_output,
    choose_targets,
    drop_refused,
    plan_kinds,
    renumber,
)
from avocado_iofuzz.model.pci import parse_pci_listing, split_config_address
from avocado_iofuzz.model.program import Op, RangePlan
from avocado_iofuzz.repro.qtest_ops import format_script, pci_setup_commands
from avocado_iofuzz.vm.bare import BareQemu
from avocado_iofuzz.vt.iofuzz_params import read_kinds

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]

SEED = 0x5EED0007
DEVICES = ["-device", "edu", "-device", "i6300esb", "-device", "e1000,romfile="]
MMIO_EVENT = re.compile(
    r"memory_region_ops_(read|write) cpu -?\d+ mr 0x[0-9a-f]+ addr 0x([0-9a-f]+) value 0x([0-9a-f]+) size (\d+)"
)
PCI_EVENT = re.compile(
    r"pci_cfg_(read|write) (\S+) ([0-9a-f]{2}):([0-9a-f]{2})\.([0-7]) @0x([0-9a-f]+) (?:->|<-) 0x([0-9a-f]+)"
)


def kind_params(**params: str) -> KindParams:
    return read_kinds(params)


# What each group fuzzes: (kind params, what the widths show)
GROUPS = [
    # edu's registers take 4 and 8 bytes; its DMA registers (0x80 on) are left out:
    # a random DMA address makes edu abort QEMU (hw_error), which is another test
    kind_params(fuzz_kinds="mmio", only_pci="1234:11e8", mmio_widths="4 8", mmio_max_size="0x80"),
    # the watchdog's registers take 1, 2 and 4 bytes; mapped through resource0
    kind_params(fuzz_kinds="mmio", only_pci="8086:25ab", mmio_widths="1 2 4"),
    # the HPET is no PCI device: mapped through /dev/mem; its main counter (0xf0), which
    # the kernel's clocksource watchdog may read meanwhile, is left out
    kind_params(fuzz_kinds="mmio", only_iomem="HPET 0", mmio_max_size="0xf0"),
    # the e1000's whole config header and capabilities, BARs and command register included
    kind_params(fuzz_kinds="pci", only_pci="8086:100e", pci_widths="1 2 4"),
]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory) -> Iterator[tuple[list[RangePlan], object, str, Path, str, str]]:
    """One guest, one campaign over every group.

    Yields the plans, the campaign's result, QEMU's trace log, the trace's
    path, the PCI listing, and what the access check said once /dev/mem was gone.
    """
    run_dir = tmp_path_factory.mktemp("mmio-pci")
    guest = default_guest()
    # tsc=reliable: without it the kernel's clocksource watchdog checks the TSC against
    # the HPET, which the fuzzing stops -- the kernel then trusts the stopped HPET, its
    # clock stands still and the guest hangs seconds after the run
    guest = dataclasses.replace(guest, kernel_params=guest.kernel_params + " tsc=reliable")
    vm = BareQemu(
        guest,
        run_dir / "vm",
        accel="tcg",
        extra_args=DEVICES,
        trace_events=["memory_region_ops_*", "pci_cfg_*"],
    )
    with vm:
        session = vm.login(90)
        plans: list[RangePlan] = []
        for kinds in GROUPS:
            listings = read_listings(session, kinds)
            plans += plan_kinds(SEED, 3, kinds, choose_targets(kinds, listings))
        pci_listing = listings.pci
        plans = check_access(session, renumber(plans), DEFAULT_BINARY)
        trace_path = run_dir / "trace.iofuzz"
        with TraceWriter(trace_path, {"seed": SEED}) as trace:
            # the config ops alone, as the trace names them: no header restore between the pci ranges
            # (its reads and writes are test_pci_restore_guest's subject)
            config = CampaignConfig(report_every=256, hang_timeout=30, pci_restore=False)
            result = Campaign(vm, plans, trace, config, session=session).run()
        # a guest without /dev/mem (the campaign closed its session: log in again)
        session = vm.login(30)
        hpet = [p for p in plans if p.name == "HPET 0"]
        no_devmem = session.cmd_output("rm /dev/mem && " + executor_command(renumber(hpet), check=True), timeout=60)
    # QEMU quit (stop): its trace log is complete
    yield plans, result, (run_dir / "vm" / "qemu-trace.log").read_text(), trace_path, pci_listing, no_devmem


def mmio_seen(log: str, plan: RangePlan) -> list[Op]:
    return [
        Op("r", int(m[2], 16), int(m[4]), 0, "mmio")
        if m[1] == "read"
        else Op("w", int(m[2], 16), int(m[4]), int(m[3], 16), "mmio")
        for m in MMIO_EVENT.finditer(log)
        if plan.start <= int(m[2], 16) <= plan.end
    ]


def config_seen(log: str, plan: RangePlan) -> list[tuple[str, int, int]]:
    """(r|w, register, value written) of the function's config accesses in the range; QEMU logs no size."""
    bus, device, function, _ = split_config_address(plan.start)
    seen = []
    for m in PCI_EVENT.finditer(log):
        if (int(m[3], 16), int(m[4], 16), int(m[5], 16)) != (bus, device, function):
            continue
        register = int(m[6], 16)
        if plan.start & 0xFFF <= register <= plan.end & 0xFFF:
            seen.append(("r", register, 0) if m[1] == "read" else ("w", register, int(m[7], 16)))
    return seen


def test_every_kind_ran_to_the_end(fuzzed):
    plans, result, _, _, _, _ = fuzzed
    assert result.findings == []
    assert result.ops_done == {p.index: p.op_count for p in plans}
    assert {(p.space, p.width) for p in plans} == {
        ("mmio", 1),
        ("mmio", 2),
        ("mmio", 4),
        ("mmio", 8),
        ("pci", 1),
        ("pci", 2),
        ("pci", 4),
    }
    assert any(p.name == "HPET 0" for p in plans)


def test_qemu_saw_the_traced_mmio_accesses_at_their_addresses(fuzzed):
    plans, _, log, trace_path, _, _ = fuzzed
    trace = read_trace(trace_path)
    for plan in plans:
        if plan.space != "mmio":
            continue
        traced = [op for _, op in trace.ops[plan.index]]
        assert len(traced) == plan.op_count
        seen = mmio_seen(log, plan)
        # other widths of the same range ran before this plan (same addresses); this plan's accesses come last
        later = [
            p
            for p in plans
            if p.index > plan.index and p.space == "mmio" and p.start <= plan.end and plan.start <= p.end
        ]
        end = len(seen) - sum(p.op_count for p in later)
        assert seen[end - len(traced) : end] == traced, f"range {plan.index} {plan.name} width {plan.width}"


def test_qemu_saw_the_traced_config_accesses_at_their_registers(fuzzed):
    plans, _, log, trace_path, _, _ = fuzzed
    trace = read_trace(trace_path)
    config_plans = [p for p in plans if p.space == "pci"]
    seen = config_seen(log, config_plans[0])
    expected = [(op.kind, op.port & 0xFFF, op.value) for plan in config_plans for _, op in trace.ops[plan.index]]
    # before them: the executor's setup, reading the vendor ID's low byte and writing it back, once per range
    assert seen[-len(expected) :] == expected
    assert seen[-len(expected) - 2 :][:2] == [("r", 0, 0), ("w", 0, 0x86)]
    registers = {register for kind, register, _ in expected if kind == "w"}
    assert {0x04, 0x10, 0x14} <= registers  # command register and BARs were written


def run_qtest(script: str, log: Path) -> None:
    feed_qtest(script, log, DEVICES, ["memory_region_ops_*", "pci_cfg_*"])


def test_qtest_export_of_the_trace_reaches_the_same_registers(fuzzed, tmp_path):
    plans, _, _, trace_path, pci_listing, _ = fuzzed
    trace = read_trace(trace_path)
    chosen = [p for p in plans if "1234:11e8" in p.name or p.space == "pci"]  # edu's MMIO, the e1000's config
    ops = [op for plan in chosen for _, op in trace.ops[plan.index]]
    log = tmp_path / "qtest-trace.log"
    run_qtest(format_script(ops, setup=pci_setup_commands(parse_pci_listing(pci_listing))), log)
    replayed = log.read_text()
    edu = [p for p in chosen if p.space == "mmio"]
    edu_span = RangePlan(0, min(p.start for p in edu), max(p.end for p in edu), "edu", 1, 0, 4, "mmio")
    assert mmio_seen(replayed, edu_span)[-sum(p.op_count for p in edu) :] == [op for op in ops if op.space == "mmio"]
    config = [(op.kind, op.port & 0xFFF, op.value) for op in ops if op.space == "pci"]
    assert config_seen(replayed, next(p for p in chosen if p.space == "pci"))[-len(config) :] == config


def test_without_dev_mem_a_non_pci_range_is_refused_with_the_reason(fuzzed):
    *_, no_devmem = fuzzed
    assert check_output(no_devmem) == [(0, "cannot open /dev/mem: No such file or directory")]


@pytest.fixture(scope="module")
def locked_down_guest(tmp_path_factory) -> Iterator[tuple[BareQemu, object]]:
    guest = default_guest()
    locked = dataclasses.replace(guest, kernel_params=guest.kernel_params + " lockdown=integrity")
    with BareQemu(locked, tmp_path_factory.mktemp("lockdown"), accel="tcg", extra_args=DEVICES[:2]) as vm:
        yield vm, vm.login(90)


def test_lockdown_refuses_every_kind_and_the_run_cancels(locked_down_guest):
    _, session = locked_down_guest
    kinds = kind_params(fuzz_kinds="pio mmio pci", only_pci="1234:11e8")
    plans = plan_kinds(1, 1, kinds, choose_targets(kinds, read_listings(session, kinds)))
    assert {p.space for p in plans} == {"mmio", "pci"}  # edu has no I/O BAR
    plans = renumber([RangePlan(0, 0x2F8, 0x2FF, "com2-absent", 1, 1), *plans])
    output = session.cmd_output(executor_command(plans, check=True), timeout=60)
    refused = dict(check_output(output))
    assert sorted(refused) == [p.index for p in plans]
    assert "iopl(3) refused: Operation not permitted" in refused[0]
    assert "Operation not permitted" in refused[1]
    with pytest.raises(AccessRefused, match=r"refuses raw access \(pio: .*; mmio: .*; pci: config write .* refused"):
        drop_refused(plans, check_output(output))
