"""QEMU killed from outside while fuzzing: classified as such, one signature key, not triaged.

A SIGKILL from another process (a user, a job timeout, the OOM killer)
leaves no fatal message: no replay can show it, and triage must not spend
minutes trying. Two runs killed the same way must give one signature key.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading

import pytest

from avocado_iofuzz.campaign.runner import Campaign, CampaignConfig
from avocado_iofuzz.campaign.trace import TraceWriter
from avocado_iofuzz.guest.build import default_guest
from avocado_iofuzz.model.program import plan_ranges
from avocado_iofuzz.repro.pipeline import TriageOptions, triage
from avocado_iofuzz.repro.signature import signature_of_exit
from avocado_iofuzz.vm.bare import BareQemu

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]


def killed_run(run_dir):
    """A long harmless campaign whose QEMU gets SIGKILL once the executor is busy; its trace."""
    vm = BareQemu(default_guest(), run_dir / "vm", accel="tcg")
    plans = plan_ranges(5, [(0x300, 0x30F, "unclaimed")], 2_000_000)
    trace_path = run_dir / "trace.iofuzz"
    with vm:
        session = vm.login(90)
        started = threading.Event()

        def kill_when_busy() -> None:
            started.wait(60)
            threading.Event().wait(2.0)
            os.kill(vm.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_when_busy, daemon=True)
        killer.start()
        header = {"qemu_cmdline": vm.qemu_cmdline(), "guest": "busybox"}
        with TraceWriter(trace_path, header) as trace:
            campaign = Campaign(vm, plans, trace, CampaignConfig(report_every=4096, hang_timeout=30), session=session)
            started.set()
            result = campaign.run()
        killer.join(10)
    return result, trace_path


def test_an_outside_kill_is_classified_with_one_key_and_not_triaged(tmp_path):
    runs = [killed_run(tmp_path / name) for name in ("first", "second")]
    signatures = [signature_of_exit(result.qemu_exit) for result, _ in runs]
    assert all(result.crashed for result, _ in runs)
    assert signatures[0].key == signatures[1].key == f"crash | signal {int(signal.SIGKILL)}"
    assert all(s.from_outside for s in signatures)
    trace_path = runs[0][1]
    triaged = triage(trace_path, tmp_path / "triage", TriageOptions())
    assert not triaged.triaged and "killed from outside" in triaged.summary()
    assert sorted(p.name for p in (tmp_path / "triage").iterdir()) == ["triage.json"]
    assert sum(stage.seconds for stage in triaged.stages) == 0  # no replay at all
