"""Crash triage with real guests: the VT test triages its own crash, replays findings; the CLI too.

The crash: ``pvpanic`` (QEMU's documented panic-notification device) ends
QEMU when the guest writes its "panicked" bit to port 0x505 (QEMU's default
panic action shuts the machine down). The in-guest fuzzer finds it on its
own in the VT test; the triage must shrink it to that one write.

The hang: the executor's own fault injection (``iofuzz_debug_hang_at``)
starves the guest's only vCPU at a chosen op; recorded in the trace header,
a replay injects it again, so the hang must come back in the same range.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from avocado_jobs import AVOCADO, avocado_env, run_avocado

from avocado_iofuzz.campaign.runner import Campaign, CampaignConfig
from avocado_iofuzz.campaign.trace import TraceWriter, read_trace
from avocado_iofuzz.guest.build import default_guest
from avocado_iofuzz.model.program import plan_ranges
from avocado_iofuzz.vm.bare import BareQemu

pytestmark = pytest.mark.guest

PVPANIC = {
    "extra_params": "-device pvpanic",
    "extra_ioports": "0x505-0x505:pvpanic",
    "only_devices": "pvpanic",
    "fuzz_count": "20",
    "fuzz_seed": "3",
}


def avocado_iofuzz(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AVOCADO), "iofuzz", *map(str, args)], env=avocado_env(), capture_output=True, text=True, timeout=timeout
    )


def replay_job(results: Path, replay: Path, extra_params: str = "") -> Any:
    results.mkdir()
    params = {"iofuzz_replay": str(replay), **({"extra_params": extra_params} if extra_params else {})}
    return run_avocado("iofuzz.quick", results, params)


@pytest.fixture(scope="module")
def pvpanic_run(tmp_path_factory):
    """One fuzzing run that kills QEMU through pvpanic, triaged by the test itself."""
    job = run_avocado("iofuzz.quick", tmp_path_factory.mktemp("pvpanic"), PVPANIC)
    assert job.tests[0]["status"] == "FAIL", job.output
    return job


def test_the_vt_test_triages_its_crash_into_a_reproducer(pvpanic_run):
    reason = pvpanic_run.tests[0]["fail_reason"]
    triage_dir = pvpanic_run.data_file("triage")
    assert "QEMU exited with status 0" in reason
    assert "triage: reproduced by qtest replay" in reason and str(triage_dir / "reproducer.sh") in reason
    assert (triage_dir / "reproducer.qtest").read_text() == "outb 0x505 0x1\n"
    # the reproducer ends QEMU by itself, without a guest (QEMU would wait forever otherwise)
    done = subprocess.run(["sh", str(triage_dir / "reproducer.sh")], capture_output=True, timeout=30)
    assert done.returncode == 0
    assert "-device pvpanic" in (triage_dir / "reproducer.sh").read_text()
    # summary.json, written before triage ran, points at the reproducer too
    (entry,) = pvpanic_run.summary()["triage"]
    assert entry["reproduced"] and entry["method"] == "qtest" and entry["ops_after"] == 1
    assert str(triage_dir / "reproducer.qtest") in entry["files"].values()


def test_replay_mode_reruns_the_finding_in_the_vms_of_later_tests(pvpanic_run, tmp_path):
    trace = pvpanic_run.data_file("trace.iofuzz")
    reproducer = pvpanic_run.data_file("triage") / "reproducer.qtest"
    same_vm = replay_job(tmp_path / "a", trace, "-device pvpanic")
    assert same_vm.tests[0]["status"] == "FAIL"
    assert same_vm.tests[0]["fail_reason"].startswith("reproduced crash: QEMU exit status 0")
    script = replay_job(tmp_path / "b", reproducer, "-device pvpanic")
    assert script.tests[0]["status"] == "FAIL" and "outb 0x505 0x1" in script.tests[0]["fail_reason"]
    # without the device the finding cannot come back: the replay passes
    other_vm = replay_job(tmp_path / "c", trace)
    assert other_vm.tests[0]["status"] == "PASS", other_vm.output


def test_cli_replays_the_vt_trace_in_a_fresh_guest(pvpanic_run, tmp_path):
    done = avocado_iofuzz("replay", pvpanic_run.data_file("trace.iofuzz"), "--output", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "in-guest replay: REPRODUCED: QEMU exit status 0" in done.stdout + done.stderr
    (crash,) = [e for e in read_trace(tmp_path / "replay-trace.iofuzz").events if e.kind == "crash"]
    assert crash.data["range"] == 0


def test_cli_minimizes_through_real_guests_when_qtest_is_off(pvpanic_run, tmp_path):
    """The in-guest fallback of triage, for real: every replay boots a fresh guest of the trace's machine."""
    done = avocado_iofuzz(
        "replay", pvpanic_run.data_file("trace.iofuzz"), "--minimize", "--no-qtest", "--output", tmp_path
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "triage stage replay-guest" in out and "reproduced by guest replay" in out
    # the reproducer handed over is the one verified: the guest script (qtest was off)
    assert "outb 0x505 0x1" in (tmp_path / "reproducer-guest.sh").read_text()
    assert not (tmp_path / "reproducer.qtest").exists() and not (tmp_path / "reproducer.sh").exists()


def test_cli_replays_a_hang_in_a_fresh_guest(tmp_path):
    plans = plan_ranges(5, [(0x300, 0x30F, "unclaimed"), (0x310, 0x31F, "unclaimed2")], 10)
    config = CampaignConfig(report_every=64, hang_timeout=3, max_hangs=1, login_timeout=30, hang_at=(1, 100))
    with BareQemu(default_guest(), tmp_path / "vm") as vm:
        session = vm.login(60)
        header = {"qemu_cmdline": vm.qemu_cmdline(), "guest": "busybox", "debug_hang_at": [1, 100], "report_every": 64}
        with TraceWriter(tmp_path / "trace.iofuzz", header) as trace:
            recorded = Campaign(vm, plans, trace, config, session=session).run()
    assert [(f.kind, f.range_index) for f in recorded.findings] == [("hang", 1)]

    done = avocado_iofuzz("replay", tmp_path / "trace.iofuzz", "--hang-timeout", "3", "--output", tmp_path / "replay")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "in-guest replay: REPRODUCED: hang" in done.stdout + done.stderr
    events = read_trace(tmp_path / "replay" / "replay-trace.iofuzz").events
    (hang,) = [e for e in events if e.kind == "hang"]
    assert hang.data["range"] == 1 and hang.data["window"] == [64, 128]
