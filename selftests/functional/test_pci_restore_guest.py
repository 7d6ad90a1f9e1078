"""Config-space fuzzing puts the header back: QEMU maps the UHCI's I/O BAR where it was, and later port ops reach it.

One busybox guest on ``pc`` with a ``piix3-usb-uhci`` (the row usb.piix3_uhci
of cfg/devices.cfg). Each phase is one campaign: a sweep of the UHCI's whole
config header (command register and BARs included; its zero phase alone turns
decoding off and BAR4 to 0), then a port sweep of its 32-port I/O BAR, which
reaches the device only where its BAR decodes. QEMU's own trace is the
observer: ``pci_update_mappings_add`` says where it maps BAR4,
``pci_cfg_read/write`` every config access the executor made,
``usb_uhci_mmio_*`` every port access that reached the UHCI.

Phase ``restore`` (the default, ``pci_restore = yes``) runs first; phase
``no-restore`` (``pci_restore = no``) on the same QEMU after it, from the
header the first phase put back. Without the restore the port sweep must
reach nothing: that is what makes the first phase's claim mean something.
Then a qtest replay of the first phase's config range and restore, from its
trace, must leave BAR4 where the guest had it too.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from qtest_feed import feed_qtest

from avocado_iofuzz.campaign.runner import Campaign, CampaignConfig
from avocado_iofuzz.campaign.trace import TraceWriter, read_trace
from avocado_iofuzz.executor.protocol import Done, Restore, Saved, executor_command, parse_line
from avocado_iofuzz.guest.build import default_guest
from avocado_iofuzz.model.pci import PCI_LISTING_COMMAND, config_address, parse_pci_listing
from avocado_iofuzz.model.pci_restore import RESTORE_EVENT, header_registers, plan_restore, restore_ops
from avocado_iofuzz.model.program import SPACE_PCI, RangePlan
from avocado_iofuzz.repro.qtest_ops import format_script, pci_setup_commands
from avocado_iofuzz.vm.bare import BareQemu

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]

SEED = 0x5EEDBA25
UHCI_IDS = "8086:7020"
UHCI_IO_BAR = 4
CONFIG_FUZZ_COUNT = 20  # 64 dwords x 22 ops: every BAR and the command register get random values
PORT_FUZZ_COUNT = 40
TRACE_EVENTS = ["pci_update_mappings_add", "pci_cfg_read", "pci_cfg_write", "usb_uhci_mmio_*"]
MAPPING = re.compile(
    r"pci_update_mappings_add \S+ (?P<bus>\d\d):(?P<slot>\d\d)\.(?P<fn>[0-7]) (?P<bar>\d+),0x(?P<address>[0-9a-f]+)"
)
CONFIG = re.compile(
    r"pci_cfg_(?P<kind>read|write) \S+ (?P<bus>\d\d):(?P<slot>\d\d)\.(?P<fn>[0-7]) @0x(?P<register>[0-9a-f]+) "
    r"(?:->|<-) 0x(?P<value>[0-9a-f]+)"
)
UHCI_PORT = re.compile(r"usb_uhci_mmio_(?:readw|writew)")


def run_phase(vm: BareQemu, plans: list[RangePlan], trace_path: Path, restore: bool) -> str:
    """One campaign over ``plans``; QEMU's trace log lines it wrote meanwhile."""
    log = vm.trace_log_path
    offset = log.stat().st_size if log.exists() else 0
    config = CampaignConfig(report_every=256, hang_timeout=60, pci_restore=restore)
    with TraceWriter(trace_path, {"seed": SEED}) as trace:
        result = Campaign(vm, plans, trace, config, session=vm.login(60)).run()
    assert result.findings == [] and result.total_done == sum(p.op_count for p in plans)
    time.sleep(0.5)  # QEMU writes its trace log unbuffered; leave it a moment all the same
    with log.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


@pytest.fixture(scope="module")
def phases(tmp_path_factory) -> Iterator[dict[str, object]]:
    run_dir = tmp_path_factory.mktemp("pci-restore")
    vm = BareQemu(
        default_guest(), run_dir / "vm", accel="tcg", extra_args=["-device", "piix3-usb-uhci"],
        trace_events=TRACE_EVENTS,
    )  # fmt: skip
    result: dict[str, object] = {}
    with vm:
        session = vm.login(120)
        listing = session.cmd_output(PCI_LISTING_COMMAND, timeout=120)
        uhci = next(f for f in parse_pci_listing(listing) if f.ids == UHCI_IDS)
        io_bar = uhci.resources[UHCI_IO_BAR]
        config = config_address(uhci.bus, uhci.device, uhci.function)
        plans = [
            RangePlan(0, config, config + 0xFF, "uhci config", SEED, CONFIG_FUZZ_COUNT, 4, SPACE_PCI),
            RangePlan(1, io_bar.start, io_bar.end, "uhci ports", SEED, PORT_FUZZ_COUNT, 2),
        ]
        result.update(uhci=uhci, io_base=io_bar.start, listing=listing, plans=plans, run_dir=run_dir)
        result["restore"] = run_phase(vm, plans, run_dir / "restore.iofuzz", True)
        result.update(stopped_early(vm, config))
        # last: it leaves the header as the ops left it
        result["no-restore"] = run_phase(vm, plans, run_dir / "no-restore.iofuzz", False)
    yield result


def log_since(vm: BareQemu, offset: int) -> str:
    time.sleep(0.5)
    with vm.trace_log_path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def stopped_early(vm: BareQemu, config: int) -> dict[str, object]:
    """A long config range stopped by the host: by SIGTERM (caught), by SIGKILL (not), then resumed.

    Each part: the executor's output and QEMU's log meanwhile.
    """
    session = vm.login(60)
    # ~13 M config ops: minutes under TCG, far longer than the timeout stops it after
    long = RangePlan(0, config, config + 0xFF, "uhci config", SEED, 200_000, 4, SPACE_PCI)
    command = executor_command([long], report_every=4096)
    parts: dict[str, object] = {}

    def part(name: str, line: str) -> list[object]:
        offset = vm.trace_log_path.stat().st_size
        output = session.cmd_output(f"{line}; echo exit=$?", timeout=120)
        parts[name] = (output, log_since(vm, offset))
        return [parse_line(x) for x in output.splitlines()]

    part("sigterm", f"timeout -s TERM 3 {command}")
    killed = part("sigkill", f"timeout -s KILL 3 {command}")
    (saved,) = [m for m in killed if isinstance(m, Saved)]
    # resumed near the end of the range, where the killed run left the header half fuzzed: first without
    # the saved header (the executor saves what it finds), then with it
    resume = (0, long.op_count - 256)
    part("resumed-unsaved", executor_command([long], resume=resume))
    part("resumed-saved", executor_command([long], resume=resume, pci_saved=saved))
    parts["saved"] = saved
    return parts


def function_lines(log: str, pattern: re.Pattern[str], uhci) -> list[re.Match[str]]:
    """The pattern's lines about the UHCI function (bus, slot and function are the pattern's first groups)."""
    # pci_cfg_* print bus and slot in decimal, pci_update_mappings_* in hex: the same below 10
    return [m for m in pattern.finditer(log) if (int(m["bus"]), int(m["slot"]), int(m["fn"])) == (
        uhci.bus, uhci.device, uhci.function)]  # fmt: skip


def restore_events(path: Path) -> list:
    return [event for event in read_trace(path).events if event.kind == RESTORE_EVENT]


def config_accesses(log: str, uhci) -> list[tuple[str, int, int]]:
    """(r|w, register, value) of every config access to the UHCI function QEMU logged, in order."""
    return [(m["kind"][0], int(m["register"], 16), int(m["value"], 16)) for m in function_lines(log, CONFIG, uhci)]


def bar4_mappings(log: str, uhci) -> list[int]:
    return [int(m["address"], 16) for m in function_lines(log, MAPPING, uhci) if int(m["bar"]) == UHCI_IO_BAR]


def after_config_range(log: str, uhci) -> str:
    """The log after the last config access to the UHCI: the port sweep's part."""
    last = function_lines(log, CONFIG, uhci)[-1]
    return log[last.end() :]


def test_without_restore_the_config_sweep_leaves_the_io_bar_elsewhere(phases):
    uhci, io_base = phases["uhci"], phases["io_base"]
    moved = bar4_mappings(str(phases["no-restore"]), uhci)
    assert moved and moved[-1] != io_base, f"BAR4 mapped at {[hex(a) for a in moved]}"
    assert not restore_events(Path(phases["run_dir"]) / "no-restore.iofuzz")  # type: ignore[arg-type]


def test_after_the_config_range_qemu_maps_the_io_bar_at_its_address_again(phases):
    uhci, io_base = phases["uhci"], phases["io_base"]
    mappings = bar4_mappings(str(phases["restore"]), uhci)
    print(f"BAR4 mappings during the config range: {[hex(a) for a in mappings]}")
    assert len(set(mappings)) > 1, "the fuzzing never moved BAR4: the test would show nothing"
    assert mappings[-1] == io_base


def test_the_port_sweep_after_the_config_range_reaches_the_uhci_only_with_the_restore(phases):
    uhci = phases["uhci"]
    reached = len(UHCI_PORT.findall(after_config_range(str(phases["restore"]), uhci)))
    missed = len(UHCI_PORT.findall(after_config_range(str(phases["no-restore"]), uhci)))
    print(f"usb_uhci_mmio_* events after the config range: restore {reached}, no restore {missed}")
    assert reached >= phases["plans"][1].op_count  # type: ignore[index]
    assert missed == 0


def test_qemu_saw_the_recorded_restore_writes_in_the_planned_order(phases):
    uhci = phases["uhci"]
    trace = read_trace(Path(phases["run_dir"]) / "restore.iofuzz")  # type: ignore[arg-type]
    events = restore_events(trace.path)
    assert len(events) == 1 and events[0].data["range"] == 0 and events[0].data["op"] == trace.plans[0].op_count
    recorded = [(op.port & 0xFFF, op.value) for op in restore_ops(events[0].data)]
    seen = config_accesses(str(phases["restore"]), uhci)
    # the executor's own reads of the header: on entering the range (saved) and on leaving it (now)
    registers = [0x0E, 0x04, *(register for register, _ in header_registers(0))]
    pattern = [("r", register) for register in registers]
    reads = [i for i in range(len(seen)) if [(k, r) for k, r, _ in seen[i : i + len(registers)]] == pattern]
    saved, now = seen[reads[0] : reads[0] + len(registers)], seen[reads[-1] : reads[-1] + len(registers)]
    writes = seen[reads[-1] + len(registers) :]
    assert [(register, value) for kind, register, value in writes if kind == "w"] == recorded
    assert all(kind == "w" for kind, _, _ in writes)
    planned = plan_restore(
        saved[0][2], saved[1][2], {r: v for _, r, v in saved[2:]}, now[1][2], {r: v for _, r, v in now[2:]}
    )
    assert [(w.register, w.value) for w in planned] == recorded
    # decoding off before any BAR is written, the command register as it was last
    assert recorded[0][0] == 0x04 and not recorded[0][1] & 0x3
    assert recorded[-1] == (0x04, saved[1][2])


def run_qtest(script: str, log: Path) -> None:
    feed_qtest(script, log, ["-device", "piix3-usb-uhci"], ["pci_update_mappings_add"])


def test_a_qtest_replay_of_the_trace_puts_the_bar_back_too(phases, tmp_path):
    uhci, io_base = phases["uhci"], phases["io_base"]
    trace = read_trace(Path(phases["run_dir"]) / "restore.iofuzz")  # type: ignore[arg-type]
    config_ops = [op for _, op in trace.ops[0]]
    restore = restore_ops(restore_events(trace.path)[0].data)
    setup = pci_setup_commands(parse_pci_listing(str(phases["listing"])))
    without, with_restore = tmp_path / "without.log", tmp_path / "with.log"
    run_qtest(format_script(config_ops, setup=setup), without)
    run_qtest(format_script(config_ops + restore, setup=setup), with_restore)
    # the same slot under -qtest: -nodefaults on both, the listing's addresses
    assert bar4_mappings(with_restore.read_text(), uhci)[-1] == io_base
    assert bar4_mappings(without.read_text(), uhci)[-1] != io_base


def test_a_stop_signal_in_a_config_range_still_puts_the_header_back(phases):
    uhci, io_base = phases["uhci"], phases["io_base"]
    output, log = phases["sigterm"]  # type: ignore[misc]
    assert "exit=143" in output  # ended by the SIGTERM, after putting the header back
    assert any(isinstance(parse_line(line), Restore) for line in output.splitlines()), output[-2000:]
    mappings = bar4_mappings(log, uhci)
    assert len(set(mappings)) > 1 and mappings[-1] == io_base, [hex(a) for a in mappings]


def test_a_resume_puts_back_the_header_saved_when_the_range_was_entered(phases):
    uhci, io_base = phases["uhci"], phases["io_base"]
    killed_output, killed_log = phases["sigkill"]  # type: ignore[misc]
    assert "exit=137" in killed_output and not any(
        isinstance(parse_line(line), Restore) for line in killed_output.splitlines()
    )
    # where BAR4 is after each part: its latest mapping since the kill (a part may not move it at all)
    log = killed_log
    assert bar4_mappings(log, uhci)[-1] != io_base  # SIGKILL cannot be caught: the header stays fuzzed
    log += phases["resumed-unsaved"][1]  # type: ignore[index]
    assert bar4_mappings(log, uhci)[-1] != io_base  # it put back what it found: the fuzzed header
    saved_output, saved_log = phases["resumed-saved"]  # type: ignore[misc]
    saved = [m for m in map(parse_line, saved_output.splitlines()) if isinstance(m, Saved)]
    assert saved == [phases["saved"]]
    assert bar4_mappings(log + saved_log, uhci)[-1] == io_base


# --- a bridge: its bus numbers and windows decide whether the device behind it exists at all -----------

BRIDGE_DEVICES = ["-device", "pci-bridge,id=bridge,chassis_nr=1", "-device", "e1000,bus=bridge,addr=0x1,romfile="]
BRIDGE_CLASS = 0x060400


def vendor_behind(session, name: str) -> str:
    """The vendor ID of the function behind the bridge, as a config read through sysfs gets it now."""
    return session.cmd_output(f"od -An -tx2 -N2 /sys/bus/pci/devices/{name}/config").strip()


@pytest.fixture(scope="module")
def bridge(tmp_path_factory) -> Iterator[dict[str, object]]:
    """A config range on a pci-bridge, with and without restore; after each, a config read of the e1000 behind it."""
    run_dir = tmp_path_factory.mktemp("pci-restore-bridge")
    vm = BareQemu(default_guest(), run_dir / "vm", accel="tcg", extra_args=BRIDGE_DEVICES, trace_events=["pci_cfg_*"])
    result: dict[str, object] = {}
    with vm:
        session = vm.login(120)
        functions = parse_pci_listing(session.cmd_output(PCI_LISTING_COMMAND, timeout=120))
        (bridge_function,) = [f for f in functions if f.class_code == BRIDGE_CLASS]
        (behind,) = [f for f in functions if f.ids == "8086:100e"]
        assert behind.bus != bridge_function.bus
        base = config_address(bridge_function.bus, bridge_function.device, bridge_function.function)
        plan = RangePlan(0, base, base + 0xFF, "bridge config", SEED, 10, 4, SPACE_PCI)
        name = f"0000:{behind.address[5:]}"
        result["before"] = vendor_behind(session, name)
        for label, restore in (("restore", True), ("no-restore", False)):
            output = session.cmd_output(executor_command([plan], pci_restore=restore), timeout=300)
            assert any(isinstance(parse_line(line), Done) for line in output.splitlines()), output[-2000:]
            offset = vm.trace_log_path.stat().st_size
            result[label] = (output, vendor_behind(session, name), log_since(vm, offset))
        result["behind"] = behind
    yield result


def test_a_bridge_config_range_puts_its_bus_numbers_back_and_the_device_behind_it_answers(bridge):
    behind = bridge["behind"]
    assert bridge["before"] == "8086"
    output, vendor, log = bridge["restore"]  # type: ignore[misc]
    (restore,) = [m for m in map(parse_line, output.splitlines()) if isinstance(m, Restore)]
    assert 0x18 in {w.register for w in restore.writes}  # the zero phase alone cleared the bus numbers
    assert vendor == "8086"
    # QEMU routed the guest's config read to the e1000 behind the bridge: "pci_cfg_read e1000 01:01.0 @0x0 -> 0x8086"
    where = f"{behind.bus:02d}:{behind.device:02d}.{behind.function}"
    assert re.search(rf"pci_cfg_read \S+ {where} @0x0 -> 0x(100e)?8086", log), log[-2000:]
    output, vendor, log = bridge["no-restore"]  # type: ignore[misc]
    assert not any(isinstance(parse_line(line), Restore) for line in output.splitlines())
    assert vendor == "ffff"  # the config read went to a bus the bridge no longer forwards to
    assert not re.search(rf"pci_cfg_read \S+ {where} ", log)
