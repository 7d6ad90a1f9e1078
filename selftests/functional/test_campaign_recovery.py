"""The campaign's last resort, for real: a guest that system_reset cannot bring back.

Fuzzing the RTC/CMOS ports can leave byte 0x5f (the CPU count the firmware
reads at boot) at 0xff: after a reset SeaBIOS waits forever for 256 CPUs.
Here the byte is set from outside through QEMU's monitor, so the test does
not depend on a seed reaching it; then the executor hangs the guest, the
reset cannot help, and only a fresh QEMU gets the run going again.
"""

from __future__ import annotations

import pytest

from avocado_iofuzz.campaign.runner import Campaign, CampaignConfig
from avocado_iofuzz.campaign.trace import TraceWriter, read_trace
from avocado_iofuzz.guest.build import default_guest
from avocado_iofuzz.model.program import plan_ranges
from avocado_iofuzz.vm.bare import BareQemu

pytestmark = pytest.mark.guest


def test_hang_after_cmos_damage_is_survived_by_restarting_qemu(tmp_path):
    plans = plan_ranges(3, [(0x300, 0x30F, "unclaimed"), (0x310, 0x31F, "unclaimed2")], 10)
    config = CampaignConfig(report_every=64, hang_timeout=3, login_timeout=12, hang_at=(0, 100))
    with BareQemu(default_guest(), tmp_path / "vm") as vm:
        session = vm.login(60)
        first_pid = vm.pid
        for port, value in ((0x70, 0x5F), (0x71, 0xFF)):
            vm.qmp("human-monitor-command", **{"command-line": f"o /b {port:#x} {value:#x}"})
        with TraceWriter(tmp_path / "trace", {"seed": 3}) as trace:
            result = Campaign(vm, plans, trace, config, session=session).run()
        assert vm.pid != first_pid
    (hang,) = result.findings
    assert (hang.kind, hang.range_index, hang.window) == ("hang", 0, (64, 128))
    # the executor named op 100 (@HANG): ops 64..99 ran, 100..127 were left out
    assert hang.op == 100 and result.ops_skipped[0] == 28
    assert result.ops_done == {0: plans[0].op_count - 28, 1: plans[1].op_count}
    kinds = [e.kind for e in read_trace(tmp_path / "trace").events]
    assert kinds.index("hang") < kinds.index("reset") < kinds.index("restart") < kinds.index("resume")
