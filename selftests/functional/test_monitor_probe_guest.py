"""The stall probe against a real QEMU: a stopped QEMU is silent, a running one answers, a hung guest is the guest's.

SIGSTOP stands in for a QEMU whose main loop cannot run (a device model
spinning with the big lock held): no monitor reply comes, whatever the
guest does. The campaign's own hang (the executor's fault injection: the
guest spins, QEMU is fine) must be judged the guest's.
"""

from __future__ import annotations

import os
import signal

import pytest

from avocado_iofuzz.campaign.runner import Campaign, CampaignConfig
from avocado_iofuzz.campaign.trace import TraceWriter, read_trace
from avocado_iofuzz.guest.build import default_guest
from avocado_iofuzz.model.program import plan_ranges
from avocado_iofuzz.vm.bare import BareQemu
from avocado_iofuzz.vm.monitor_probe import ANSWERED, SILENT, probe_monitor

pytestmark = pytest.mark.guest


def test_a_stopped_qemu_is_silent_and_a_guest_hang_is_the_guests(tmp_path):
    plans = plan_ranges(5, [(0x300, 0x30F, "unclaimed")], 10)
    config = CampaignConfig(report_every=64, hang_timeout=3, login_timeout=30, hang_at=(0, 100))
    with BareQemu(default_guest(), tmp_path / "vm") as vm:
        session = vm.login(120)
        running = probe_monitor(vm, 5.0)
        assert running is not None and running.verdict == ANSWERED and running.status == "running"
        assert vm.pid is not None
        os.kill(vm.pid, signal.SIGSTOP)
        try:
            stopped = probe_monitor(vm, 2.0)
        finally:
            os.kill(vm.pid, signal.SIGCONT)
        assert stopped is not None and stopped.verdict == SILENT and 2.0 <= stopped.seconds < 5.0, stopped
        # the late reply went with the dropped connection: the next question gets an answer of its own
        again = probe_monitor(vm, 10.0)
        assert again is not None and again.verdict == ANSWERED, again
        with TraceWriter(tmp_path / "trace", {"seed": 5}) as trace:
            result = Campaign(vm, plans, trace, config, session=session).run()
    (hang,) = result.findings
    assert hang.kind == "hang" and hang.op == 100
    assert "the guest is stuck, QEMU's main loop is not" in hang.detail
    (event,) = [e for e in read_trace(tmp_path / "trace").events if e.kind == "hang"]
    assert event.data["monitor"]["verdict"] == ANSWERED
