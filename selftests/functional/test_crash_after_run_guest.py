"""A crash that comes after the executor's last op: a device timer the last ops armed.

``edu`` starts a DMA when its command register (BAR0 + 0x98) gets bit 0; its
timer runs the DMA 100 ms later, and with the addresses still 0 it ends QEMU
in ``hw_error`` ("EDU: DMA range ... out of bounds"). The one range fuzzed
is that register, a handful of ops done in microseconds: the executor has
printed its last mark (often ``@DONE`` too) when QEMU dies. The campaign must
report a crash with the range's last ops as its window (no IndexError, no
PASS), and triage must reproduce it from the trace like any other crash.
"""

from __future__ import annotations

import shutil
import signal
import subprocess

import pytest

from avocado_iofuzz.campaign.guest_access import check_access, read_listings
from avocado_iofuzz.campaign.runner import Campaign, CampaignConfig
from avocado_iofuzz.campaign.trace import TraceWriter
from avocado_iofuzz.executor.protocol import DEFAULT_BINARY
from avocado_iofuzz.guest.build import default_guest
from avocado_iofuzz.model.pci import parse_pci_listing
from avocado_iofuzz.model.program import SPACE_MMIO, RangePlan
from avocado_iofuzz.repro.pipeline import TriageOptions, triage
from avocado_iofuzz.repro.vt_triage import header_extras
from avocado_iofuzz.vm.bare import BareQemu
from avocado_iofuzz.vt.iofuzz_params import read_kinds

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]

DMA_COMMAND = 0x98
REPORT_EVERY = 4096  # larger than the range: no mark between its first and last op


def dma_plan(bar: int) -> RangePlan:
    """The command register fuzzed with the first seed whose random writes start a DMA."""
    for seed in range(1, 100):
        plan = RangePlan(0, bar + DMA_COMMAND, bar + DMA_COMMAND + 3, "edu dma command", seed, 1, 4, SPACE_MMIO)
        if any(op.kind == "w" and op.value & 1 for op in map(plan.op, range(plan.op_count))):
            return plan
    raise AssertionError("no seed below 100 starts a DMA")


def test_a_timer_crash_after_the_last_op_fails_with_its_message_and_is_triaged(tmp_path):
    vm = BareQemu(default_guest(), tmp_path / "vm", accel="tcg", extra_args=["-device", "edu"])
    with vm:
        session = vm.login(90)
        listing = read_listings(session, read_kinds({"fuzz_kinds": "mmio"})).pci
        (edu,) = [f for f in parse_pci_listing(listing) if (f.vendor, f.product) == (0x1234, 0x11E8)]
        plan = dma_plan(edu.resources[0].start)
        assert check_access(session, [plan], DEFAULT_BINARY) == [plan]
        header = {"qemu_cmdline": vm.qemu_cmdline(), "guest": "busybox", **header_extras(listing, None, REPORT_EVERY)}
        trace_path = tmp_path / "trace.iofuzz"
        with TraceWriter(trace_path, header) as trace:
            config = CampaignConfig(report_every=REPORT_EVERY, hang_timeout=30)
            result = Campaign(vm, [plan], trace, config, session=session).run()
    assert result.crashed, result.findings
    (crash,) = result.findings
    assert "EDU: DMA range" in crash.detail and result.qemu_exit.signal == signal.SIGABRT
    assert (crash.range_index, crash.window) == (0, (0, plan.op_count))
    assert result.ops_done == {0: plan.op_count}  # every op ran: the crash came after them

    triaged = triage(trace_path, tmp_path / "triage", TriageOptions(guest_fallback=False, linger=0.3))
    assert triaged.reproduced and triaged.verified == "3/3", triaged.summary()
    assert "EDU: DMA range" in triaged.signature.message
    run = subprocess.run(
        ["sh", triaged.files["shell"]], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0 and "EDU: DMA range" in run.stderr


def test_an_mmio_reproducer_replays_in_a_guest(tmp_path):
    """The in-guest fallback takes MMIO too: edu's DMA started by one writel at its BAR, QEMU's hw_error after."""
    from avocado_iofuzz.model.program import Op
    from avocado_iofuzz.repro.guest_replay import GuestReplayer

    vm = BareQemu(default_guest(), tmp_path / "vm", accel="tcg", extra_args=["-device", "edu"])
    with vm:
        listing = read_listings(vm.login(90), read_kinds({"fuzz_kinds": "mmio"})).pci
        (edu,) = [f for f in parse_pci_listing(listing) if (f.vendor, f.product) == (0x1234, 0x11E8)]
        bar = edu.resources[0].start
        replayer = GuestReplayer(vm, hang_timeout=30, login_timeout=90)
        harmless = replayer.run_ops([Op("r", bar, 4, 0, SPACE_MMIO), Op("w", bar + 4, 4, 0x5, SPACE_MMIO)])
        crash = replayer.run_ops([Op("r", bar, 4, 0, SPACE_MMIO), Op("w", bar + DMA_COMMAND, 4, 0x1, SPACE_MMIO)])
    assert not harmless.signature.is_failure and harmless.done == 2, harmless
    assert crash.signature.signal == signal.SIGABRT and "EDU: DMA range" in crash.signature.message, crash
