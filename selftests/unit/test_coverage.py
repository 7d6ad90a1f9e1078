"""Device coverage from trace events: the table, the backend probe, the collector, the summary object."""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

import pytest

from avocado_iofuzz.coverage.backend import list_events, probe_backend
from avocado_iofuzz.coverage.catalog import FALLBACK_BUS, FALLBACK_NAME, Catalog
from avocado_iofuzz.coverage.collector import CoverageCollector
from avocado_iofuzz.coverage.summary import coverage_line, coverage_summary, merge_coverage
from avocado_iofuzz.model.program import plan_ranges

QEMU = shutil.which("qemu-system-x86_64")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 not installed")

AVAILABLE = [
    "e1000e_core_write", "e1000e_core_read", "e1000e_irq_set", "e1000x_rx_disabled",
    "pci_cfg_write", "memory_region_ops_write", "x86_gsi_interrupt", "lsi_reg_read", "pic_ioport_read",
    "serial_write",
]  # fmt: skip
TABLE = """
[bus]
events = ["pci_cfg_write", "memory_region_ops_write", "x86_gsi_interrupt", "not_in_this_qemu"]
[groups]
x = ["e1000x_"]
[devices.e1000e]
prefixes = ["e1000e_"]
groups = ["x"]
[devices.i8259]
prefixes = ["pic_ioport_"]
ranges = ["^pic[12]$"]
"""


class FakeQemu:
    """Writes a log-backend line for each fired event that QMP enabled; truncates its file on restart."""

    def __init__(self, path: Path):
        self.path = path
        self.path.write_text("", encoding="utf-8")
        self.enabled: set[str] = set()
        self.calls: list[tuple[str, bool]] = []

    def qmp(self, command, arguments):
        assert command == "trace-event-set-state"
        pattern, on = arguments["name"], arguments["enable"]
        self.calls.append((pattern, on))
        names = fnmatch.filter(AVAILABLE, pattern)
        self.enabled = self.enabled | set(names) if on else self.enabled - set(names)

    def fire(self, *names):
        with open(self.path, "a", encoding="utf-8") as f:
            for name in names:
                if name in self.enabled:
                    f.write(f"{name} some args 0x10\n")

    def mark(self, range_index, ops_done, addr=0):
        """The executor's progress mark reaching the UART: a serial_write line per byte (when enabled)."""
        if "serial_write" in self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                for byte in f"@P {range_index} {ops_done}\n".encode():
                    f.write(f"serial_write write addr 0x{addr:02x} val 0x{byte:02x}\n")

    def restart(self):
        self.enabled = set()
        self.path.write_text("", encoding="utf-8")


def catalog() -> Catalog:
    return Catalog.load(TABLE)


PLANS = plan_ranges(1, [(0x0, 0x3, "BAR0"), (0x10, 0x13, "BAR1")], 4)


def collector(tmp_path: Path, qemu: FakeQemu, idle=("x86_gsi_interrupt",)) -> CoverageCollector:
    selection = catalog().select(["e1000e"], [p.name for p in PLANS], AVAILABLE)
    times = iter(range(100))
    return CoverageCollector(
        selection, qemu.path, qemu.qmp, clock=lambda: float(next(times)), sleep=lambda s: qemu.fire(*idle)
    )


def test_catalog_selects_device_group_and_bus_events_this_qemu_has():
    selection = catalog().select(["e1000e"], ["BAR0", "BAR1"], AVAILABLE)
    (device,) = selection.devices
    assert device.events == ("e1000e_core_read", "e1000e_core_write", "e1000e_irq_set", "e1000x_rx_disabled")
    assert device.fallback is None
    assert selection.bus == ("pci_cfg_write", "memory_region_ops_write", "x86_gsi_interrupt")  # not_in_this_qemu: no
    assert selection.range_devices == {0: "e1000e", 1: "e1000e"}
    assert selection.patterns() == sorted(
        ["e1000e_*", "e1000x_*", "pci_cfg_write", "memory_region_ops_write", "x86_gsi_interrupt"]
    )


def test_catalog_maps_a_rowless_runs_ranges_by_name_and_falls_back():
    selection = catalog().select([], ["pic1", "rtc0", "pic2"], AVAILABLE)
    assert selection.range_devices == {0: "i8259", 2: "i8259"}
    assert [d.device for d in selection.devices] == ["i8259"]
    lsi = catalog().device_events("lsi", AVAILABLE)  # not in the table: its QOM name finds lsi_*
    assert (lsi.fallback, lsi.events) == (FALLBACK_NAME, ("lsi_reg_read",))
    edu = catalog().device_events("edu", AVAILABLE)
    assert (edu.fallback, edu.events) == (FALLBACK_BUS, ())


def test_catalog_rejects_an_unknown_group():
    with pytest.raises(ValueError, match="unknown group"):
        Catalog.load('[devices.a]\nprefixes = ["a_"]\ngroups = ["nope"]\n')


@needs_qemu
def test_every_prefix_and_bus_event_of_the_table_is_in_this_qemu():
    events = list_events(QEMU)
    table = Catalog.load()
    prefixes = [(d, p) for d, own in table.prefixes.items() for p in own]
    dead = [(d, p) for d, p in prefixes if not any(e.startswith(p) for e in events)]
    assert dead == []
    assert [e for e in table.bus if e not in events] == []
    e1000e = table.device_events("e1000e", events)
    assert len([e for e in e1000e.events if e.startswith("e1000e_")]) == 139  # the count for QEMU 7.2


@needs_qemu
def test_probe_finds_the_log_backend_of_the_installed_qemu():
    backend = probe_backend(QEMU)
    assert backend.usable, backend.reason
    assert "e1000e_core_write" in backend.events


def test_probe_says_why_a_qemu_without_log_backend_is_not_usable(tmp_path):
    # a QEMU built with the nop backend: lists its events, accepts -trace file=, writes nothing
    fake = tmp_path / "qemu-nop"
    fake.write_text('#!/bin/sh\nif [ "$2" = help ]; then echo handle_qmp_command; echo e1000e_core_write; fi\n')
    fake.chmod(0o755)
    backend = probe_backend(str(fake))
    assert not backend.usable
    assert "not 'log'" in backend.reason
    empty = tmp_path / "qemu-none"
    empty.write_text("#!/bin/sh\n")
    empty.chmod(0o755)
    assert "does not list" in probe_backend(str(empty)).reason


def test_collector_attributes_new_events_to_the_range_of_the_mark_and_switches_them_off(tmp_path):
    qemu = FakeQemu(tmp_path / "trace.log")
    col = collector(tmp_path, qemu)
    col.start(PLANS)
    assert "serial_write" in qemu.enabled  # the console is the trace file's clock
    assert col.background == {"x86_gsi_interrupt"}  # fired while the guest idled: not reached
    assert "x86_gsi_interrupt" not in qemu.enabled
    qemu.fire("pci_cfg_write")  # the executor's setup, before its first op
    qemu.mark(0, 0)
    qemu.fire("e1000e_core_write", "e1000e_core_write", "lsi_reg_read", "x86_gsi_interrupt")
    qemu.mark(0, 8)
    col.progress(0, 8)
    assert set(col.first_seen) == {"e1000e_core_write"}  # lsi is not watched, the background stays off
    assert "e1000e_core_write" not in qemu.enabled  # seen once: switched off
    seen = col.first_seen["e1000e_core_write"]
    assert (seen.range_index, seen.op) == (0, 8)
    assert col.background == {"x86_gsi_interrupt", "pci_cfg_write"}
    qemu.mark(0, PLANS[0].op_count)
    qemu.fire("e1000e_core_write", "memory_region_ops_write")
    qemu.mark(1, 8)
    col.progress(0, PLANS[0].op_count)  # the campaign reads its console late: the file already holds (1, 8)
    seen = col.first_seen["memory_region_ops_write"]
    # the range of the marks around it in the file, and ops counted across ranges
    assert (seen.range_index, seen.op, seen.ops_total) == (1, 8, PLANS[0].op_count + 8)
    assert col.first_seen["e1000e_core_write"].range_index == 0
    qemu.fire("e1000e_irq_set")
    qemu.mark(1, PLANS[1].op_count)
    qemu.fire("e1000x_rx_disabled")  # after the last mark: deferred work of the run
    col.progress(1, PLANS[1].op_count)
    assert "e1000x_rx_disabled" not in col.first_seen  # no mark after it yet
    assert "e1000x_rx_disabled" not in qemu.enabled  # but already off
    col.finish()
    assert qemu.enabled == set()  # nothing left on for whatever runs in this VM next
    assert col.first_seen["e1000e_irq_set"].range_index == 1
    assert col.first_seen["e1000x_rx_disabled"].range_index is None


def test_only_the_data_register_of_the_uart_carries_marks(tmp_path):
    qemu = FakeQemu(tmp_path / "trace.log")
    col = collector(tmp_path, qemu)
    col.start(PLANS)
    qemu.fire("e1000e_core_read")
    qemu.mark(1, 8, addr=1)  # the same bytes to IER: not console text
    col.progress(0, 8)
    assert col.first_seen == {}
    qemu.mark(0, 4)
    col.progress(0, 4)
    assert col.first_seen["e1000e_core_read"].op == 4


def test_collector_enables_unseen_events_again_after_a_qemu_restart(tmp_path):
    qemu = FakeQemu(tmp_path / "trace.log")
    col = collector(tmp_path, qemu)
    col.start(PLANS)
    qemu.fire("e1000e_core_write")
    qemu.mark(0, 8)
    col.progress(0, 8)
    qemu.restart()  # hang recovery: a new QEMU, every event off, the file truncated
    col.progress(0, 16)  # notices the shorter file
    assert {"e1000e_core_read", "serial_write"} <= qemu.enabled
    assert "e1000e_core_write" not in qemu.enabled and "x86_gsi_interrupt" not in qemu.enabled
    qemu.fire("e1000e_core_read")
    qemu.mark(0, 24)
    col.progress(0, 24)
    assert col.first_seen["e1000e_core_read"].op == 24


def test_a_new_collector_on_a_used_trace_file_counts_only_its_own_run(tmp_path):
    # benchmarks run campaign after campaign on one QEMU, a new collector each: the file holds the last run's lines
    qemu = FakeQemu(tmp_path / "trace.log")
    first = collector(tmp_path, qemu)
    first.start(PLANS)
    qemu.mark(0, 0)
    qemu.fire("e1000e_core_write", "memory_region_ops_write")
    qemu.mark(0, 8)
    first.finish()
    assert set(first.first_seen) == {"e1000e_core_write", "memory_region_ops_write"}
    second = collector(tmp_path, qemu)
    second.start(PLANS)
    qemu.mark(0, 0)
    qemu.fire("e1000e_core_read")  # all this run's ops caused
    qemu.mark(0, 8)
    second.finish()
    assert set(second.first_seen) == {"e1000e_core_read"}  # not the last run's events again
    assert second.background == {"x86_gsi_interrupt"}  # nor taken as this run's background


def test_collector_survives_a_failing_monitor(tmp_path):
    qemu = FakeQemu(tmp_path / "trace.log")
    col = collector(tmp_path, qemu)
    col.start(PLANS)

    def dead(command, arguments):
        raise ConnectionError("monitor gone")

    col.qmp = dead
    qemu.fire("e1000e_core_write")
    qemu.mark(0, 8)
    col.progress(0, 8)
    col.finish()
    assert "e1000e_core_write" in col.first_seen


def test_summary_object_counts_and_line(tmp_path):
    qemu = FakeQemu(tmp_path / "trace.log")
    col = collector(tmp_path, qemu)
    col.start(PLANS)
    qemu.fire("e1000e_core_write", "pci_cfg_write")
    qemu.mark(0, 8)
    col.progress(0, 8)
    cov = coverage_summary(col)
    assert (cov["events_available"], cov["events_reached"]) == (7, 2)
    assert 0 < cov["events_reached"] <= cov["events_available"]
    assert cov["devices"][0]["events_available"] == 4 and cov["devices"][0]["events_reached"] == 1
    assert cov["by_range"][0]["events"] == ["e1000e_core_write", "pci_cfg_write"]
    assert cov["by_range"][1]["events"] == []
    assert cov["events"]["pci_cfg_write"]["op"] == 8
    assert cov["background"] == ["x86_gsi_interrupt"]
    assert coverage_line(cov) == "e1000e: 1/4 events, bus: 1/3 events"


def test_merge_is_the_union_with_the_earliest_sighting(tmp_path):
    parts = []
    for fired in (("e1000e_core_write",), ("e1000e_core_write", "e1000e_irq_set")):
        qemu = FakeQemu(tmp_path / f"trace{len(parts)}.log")
        col = collector(tmp_path, qemu)
        col.start(PLANS)
        if parts:  # the second part sees its events later
            col.clock = lambda: 50.0
        qemu.fire(*fired)
        qemu.mark(0, 8)
        col.progress(0, 8)
        parts.append(coverage_summary(col))
    merged = merge_coverage(parts, ["a", "b"])
    assert merged is not None
    assert merged["events_reached"] == 2 and merged["events_available"] == 7
    assert merged["events"]["e1000e_core_write"]["source"] == "a"
    assert merged["events"]["e1000e_irq_set"]["source"] == "b"
    assert merged["devices"][0]["events_reached"] == 2
    assert {r["source"] for r in merged["by_range"]} == {"a", "b"}
    assert merge_coverage([None, None], ["a", "b"]) is None
    off = merge_coverage([{"enabled": False, "reason": "nop backend"}], ["a"])
    assert off == {"enabled": False, "reason": "nop backend"}
    assert coverage_line(off) == "coverage: off (nop backend)"


def test_a_users_own_trace_or_log_option_keeps_coverage_off():
    from avocado_iofuzz.vt.coverage import _users_trace_option

    assert _users_trace_option({"extra_params": "-device e1000e"}) == ""
    assert _users_trace_option({"extra_params": "-uuid x -trace memory_region_ops_read -D /tmp/q.log"}) == (
        "extra_params: -trace"
    )
    assert _users_trace_option({"iofuzz_extra_qemu_args": "-D /tmp/q.log"}) == "iofuzz_extra_qemu_args: -D"
    assert _users_trace_option({"extra_params": "-trace=enable=e1000e_*"}) == "extra_params: -trace=enable=e1000e_*"


def test_a_collector_kept_armed_serves_round_after_round_with_one_baseline(tmp_path):
    """Guided rounds: next_round() takes new plans; events stay armed; settle() attributes without switching off."""
    qemu = FakeQemu(tmp_path / "trace.log")
    col = collector(tmp_path, qemu)
    col.start(PLANS)
    qemu.mark(0, 0)
    qemu.fire("e1000e_core_write")
    qemu.mark(0, PLANS[0].op_count)
    qemu.mark(1, PLANS[1].op_count)
    col.settle()
    assert col.first_seen["e1000e_core_write"].range_index == 0
    assert "e1000e_irq_set" in qemu.enabled and "serial_write" in qemu.enabled  # still armed for the next round
    calls = len(qemu.calls)
    second = plan_ranges(2, [(0x20, 0x27, "BAR2")], 1)
    col.next_round(second)
    assert len(qemu.calls) == calls  # no new baseline, nothing enabled again
    qemu.fire("e1000e_core_write")  # seen in round one: switched off, not reported again
    qemu.mark(0, 4)
    qemu.fire("e1000e_irq_set")
    qemu.mark(0, second[0].op_count)
    qemu.fire("e1000x_rx_disabled")  # after the round's last mark
    col.settle()
    seen = col.first_seen["e1000e_irq_set"]
    assert (seen.range_index, seen.op) == (0, second[0].op_count)
    assert col.first_seen["e1000x_rx_disabled"].range_index is None
    assert set(col.first_seen) == {"e1000e_core_write", "e1000e_irq_set", "e1000x_rx_disabled"}
    col.finish()
    assert qemu.enabled == set()


def test_a_counting_collector_counts_hits_per_range_and_caps_a_hot_event_until_the_next_range(tmp_path):
    """Guided rounds: events stay on after their first sighting and are counted per range; at HIT_CAP off until
    the next range's first mark, then on again; the idle guest's events are off and never counted."""
    from avocado_iofuzz.coverage.collector import HIT_CAP

    qemu = FakeQemu(tmp_path / "trace.log")
    selection = catalog().select(["e1000e"], [p.name for p in PLANS], AVAILABLE)
    col = CoverageCollector(selection, qemu.path, qemu.qmp, sleep=lambda s: qemu.fire("x86_gsi_interrupt"),
                            count_hits=True)  # fmt: skip
    col.start(PLANS)
    assert "x86_gsi_interrupt" not in qemu.enabled
    qemu.mark(0, 0)
    qemu.fire("e1000e_core_write", "e1000e_core_write", "e1000e_irq_set", "x86_gsi_interrupt")
    qemu.mark(0, 8)
    col.progress(0, 8)
    assert "e1000e_core_write" in qemu.enabled  # seen, still on: its hits count
    qemu.fire(*["e1000e_core_write"] * (HIT_CAP - 2))  # a hot register reaches the cap...
    col.progress(0, 8)
    assert "e1000e_core_write" not in qemu.enabled
    qemu.fire(*["e1000e_core_write"] * 50)  # ...and costs no more log lines in this range
    qemu.mark(0, PLANS[0].op_count)
    col.progress(0, PLANS[0].op_count)
    assert col.hits[0] == {"e1000e_core_write": HIT_CAP, "e1000e_irq_set": 1}  # QEMU wrote no more than the cap
    assert "e1000e_core_write" in qemu.enabled  # the next range is in flight: on again
    assert ("e1000e_core_write", False) in qemu.calls
    qemu.fire("e1000e_core_write", "e1000e_core_write", "e1000e_core_write")
    qemu.mark(1, PLANS[1].op_count)
    qemu.fire("e1000x_rx_disabled")
    col.settle()
    assert col.hits == {0: {"e1000e_core_write": HIT_CAP, "e1000e_irq_set": 1},
                        1: {"e1000e_core_write": 3}, None: {"e1000x_rx_disabled": 1}}  # fmt: skip
    assert "x86_gsi_interrupt" not in {e for counts in col.hits.values() for e in counts}
    col.next_round(plan_ranges(2, [(0x20, 0x27, "BAR2")], 1))
    assert col.hits == {}  # a round's counts are its own
    col.finish()
    assert qemu.enabled == set()


def test_a_counting_collector_leaves_busy_background_events_off_across_ranges(tmp_path):
    """An idle guest's timer or the executor's setup may fire an event HIT_CAP times before the first op: it is
    background, off for good -- not switched on again when the next range starts (it swamped later rounds)."""
    from avocado_iofuzz.coverage.collector import HIT_CAP

    qemu = FakeQemu(tmp_path / "trace.log")
    selection = catalog().select(["e1000e"], [p.name for p in PLANS], AVAILABLE)
    idle = ["x86_gsi_interrupt"] * (HIT_CAP + 1)
    col = CoverageCollector(selection, qemu.path, qemu.qmp, sleep=lambda s: qemu.fire(*idle), count_hits=True)
    col.start(PLANS)
    col.progress(0, 0)
    qemu.fire(*["pci_cfg_write"] * HIT_CAP)  # the kernel enabling the BAR for the executor
    col.progress(0, 0)  # read before the first mark: counted, capped, off
    qemu.mark(0, 0)
    qemu.fire("e1000e_core_write")
    qemu.mark(0, PLANS[0].op_count)
    qemu.mark(1, 4)
    col.progress(1, 4)
    assert col.background == {"x86_gsi_interrupt", "pci_cfg_write"}
    assert not {"x86_gsi_interrupt", "pci_cfg_write"} & qemu.enabled  # the second range started: still off
    assert col.hits == {0: {"e1000e_core_write": 1}}


def test_a_counting_collector_sends_no_switch_to_the_state_an_event_is_in(tmp_path):
    """A capped event taken on again at the next range while QEMU still has it on (the cap was read in the same
    read) costs no QMP call: a no-op for QEMU, a round trip for the run."""
    from avocado_iofuzz.coverage.collector import HIT_CAP

    qemu = FakeQemu(tmp_path / "trace.log")
    selection = catalog().select(["e1000e"], [p.name for p in PLANS], AVAILABLE)
    col = CoverageCollector(selection, qemu.path, qemu.qmp, sleep=lambda s: None, count_hits=True)
    col.start(PLANS)
    started = len(qemu.calls)
    qemu.mark(0, 0)
    qemu.fire(*["e1000e_core_write"] * HIT_CAP)  # capped in range 0...
    qemu.mark(0, PLANS[0].op_count)
    qemu.fire(*["e1000e_core_write"] * 3)  # ...and range 1 starts before the collector reads: it is still on
    qemu.mark(1, 4)
    col.progress(1, 4)
    assert col.hits[0]["e1000e_core_write"] == HIT_CAP and col.hits[1]["e1000e_core_write"] == 3
    assert qemu.calls[started:] == []  # nothing to switch: on all along, not capped in range 1
    qemu.fire(*["e1000e_core_write"] * HIT_CAP)
    col.progress(1, 4)
    assert qemu.calls[started:] == [("e1000e_core_write", False)]
    col.progress(1, 4)  # nothing new: no second switch off
    qemu.mark(1, PLANS[1].op_count)
    col.settle()
    col.finish()
    assert qemu.enabled == set()


def test_a_counting_collector_retires_seen_events_for_the_rest_of_the_run(tmp_path):
    """Retired: off in QEMU at once, never on again (next range, next round, a QEMU restart), lines not counted;
    events not seen yet are refused (they must still be found), and a names-only collector retires nothing."""
    qemu = FakeQemu(tmp_path / "trace.log")
    selection = catalog().select(["e1000e"], [p.name for p in PLANS], AVAILABLE)
    col = CoverageCollector(selection, qemu.path, qemu.qmp, sleep=lambda s: None, count_hits=True)
    col.start(PLANS)
    qemu.mark(0, 0)
    qemu.fire("e1000e_core_write", "e1000e_core_read")
    qemu.mark(0, 8)
    col.progress(0, 8)
    assert col.retire(["e1000e_core_write", "e1000e_irq_set", "lsi_reg_read"]) == ["e1000e_core_write"]
    assert "e1000e_core_write" not in qemu.enabled and "e1000e_irq_set" in qemu.enabled
    assert col.retire(["e1000e_core_write"]) == []  # once
    with open(qemu.path, "a", encoding="utf-8") as f:  # lines QEMU wrote before it took the switch
        f.write("e1000e_core_write some args 0x10\n")
    qemu.fire("e1000e_core_read")
    qemu.mark(0, PLANS[0].op_count)
    qemu.mark(1, 4)
    col.progress(1, 4)
    assert col.hits[0] == {"e1000e_core_write": 1, "e1000e_core_read": 2}  # before retiring only
    assert "e1000e_core_write" not in qemu.enabled  # the next range's uncap leaves it off
    col.settle()
    col.next_round(plan_ranges(2, [(0x20, 0x27, "BAR2")], 1))
    qemu.restart()
    col.progress(0, 0)  # the shorter file: every event not in the background on again, but not the retired one
    assert "e1000e_core_read" in qemu.enabled and "e1000e_core_write" not in qemu.enabled
    col.finish()
    names_only = collector(tmp_path, FakeQemu(tmp_path / "other.log"))
    names_only.start(PLANS)
    assert names_only.retire(["e1000e_core_write"]) == []


def test_after_a_failed_switch_the_collector_sends_every_switch_again(tmp_path):
    """Whether QEMU took a switch whose call failed is not known: later switches are sent, not skipped as no-ops."""
    from avocado_iofuzz.coverage.collector import HIT_CAP

    qemu = FakeQemu(tmp_path / "trace.log")
    selection = catalog().select(["e1000e"], [p.name for p in PLANS], AVAILABLE)
    failing = {"on": True}

    def flaky(command, arguments):
        if failing["on"] and not arguments["enable"]:
            failing["on"] = False
            raise TimeoutError("monitor busy")
        qemu.qmp(command, arguments)

    col = CoverageCollector(selection, qemu.path, flaky, sleep=lambda s: None, count_hits=True)
    col.start(PLANS)
    qemu.mark(0, 0)
    qemu.fire(*["e1000e_core_write"] * HIT_CAP)
    qemu.mark(0, 8)
    col.progress(0, 8)  # capped: the switch off fails, QEMU keeps it on
    assert "e1000e_core_write" in qemu.enabled
    assert col.retire(["e1000e_core_write"]) == ["e1000e_core_write"]
    assert "e1000e_core_write" not in qemu.enabled  # sent although the collector had asked for off already
