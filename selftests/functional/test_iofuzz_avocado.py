"""`avocado run iofuzz` end to end: real avocado, avocado-vt, QEMU, guest and executor.

The accelerator is probed as in a user's run (TCG here, KVM where it works).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid

import pytest
from avocado_jobs import avocado_command, avocado_env, qemu_pid, read_job, run_avocado

from avocado_iofuzz.campaign.trace import read_trace

pytestmark = pytest.mark.guest

# Ports no device of the default pc machine claims: every access lands in
# QEMU's catch-all "io" region and the guest kernel never touches them, so
# an observer sees only the executor's accesses there. One width, one range:
# the tests that count ops in it count the ops of bytes.
INERT = {"extra_ioports": "0x300-0x31f:unclaimed", "only_devices": "unclaimed", "pio_widths": "1"}
QEMU_ACCESS = re.compile(
    r"memory_region_ops_(?P<kind>read|write) .*?addr 0x(?P<addr>[0-9a-f]+) "
    r"value 0x(?P<value>[0-9a-f]+) size (?P<size>\d+)"
)


def test_avocado_list_shows_the_matrix(tmp_path):
    out = subprocess.run(
        [str(avocado_command("x", tmp_path)[0]), "list", "iofuzz"],
        env=avocado_env(),
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    listed = re.findall(r"^avocado-vt (\S+)$", out, re.M)
    assert {"iofuzz", "iofuzz.quick", "iofuzz.long", "iofuzz.no_timers"} <= set(listed)


def test_quick_run_passes_and_records_everything(tmp_path):
    job = run_avocado("iofuzz.quick", tmp_path, {"fuzz_seed": "1234"})
    assert job.tests[0]["status"] == "PASS", job.output
    summary = job.summary()
    assert summary["seed"] == 1234
    assert summary["ranges"], "no range was fuzzed"
    assert all(r["ops_done"] == r["ops_planned"] for r in summary["ranges"])
    names = {r["name"] for r in summary["ranges"]}
    assert {"dma1 (1-byte)", "dma1 (2-byte)", "dma1 (4-byte)"} <= names  # pio_widths: 1 2 4 by default
    assert not any(n.startswith("serial") for n in names)  # the console UART is skipped by default
    trace = read_trace(job.data_file("trace.iofuzz"))
    assert trace.header["seed"] == 1234
    assert all(trace.last_done(i) == plan.op_count for i, plan in trace.plans.items())


def test_observer_outside_the_guest_sees_exactly_the_traced_accesses(tmp_path):
    qemu_log = tmp_path / "qemu-trace.log"
    params = {
        **INERT,
        "pio_widths": "1 2 4",  # the range at every width: QEMU must see each access at the width traced
        "fuzz_count": "20",
        "fuzz_seed": "99",
        "extra_params": f"-trace memory_region_ops_read -trace memory_region_ops_write -D {qemu_log}",
    }
    job = run_avocado("iofuzz.quick", tmp_path, params)
    assert job.tests[0]["status"] == "PASS", job.output
    trace = read_trace(job.data_file("trace.iofuzz"))
    plans = list(trace.plans.values())
    assert [(p.start, p.end, p.width) for p in plans] == [(0x300, 0x31F, 1), (0x300, 0x31F, 2), (0x300, 0x31F, 4)]
    expected = [
        (op.kind, op.port, op.width, op.value if op.kind == "w" else None)
        for plan in plans
        for _, op in trace.ops[plan.index]
    ]
    assert len(expected) == (32 + 16 + 8) * 22

    seen = []
    for match in QEMU_ACCESS.finditer(qemu_log.read_text()):
        port = int(match["addr"], 16)
        if 0x300 <= port <= 0x31F:
            kind = match["kind"][0]
            seen.append((kind, port, int(match["size"]), int(match["value"], 16) if kind == "w" else None))
    assert seen == expected


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")



def test_killing_qemu_mid_run_fails_with_reason_and_keeps_the_trace(tmp_path):
    marker = str(uuid.uuid4())
    qemu_log = tmp_path / "qemu-trace.log"
    params = {
        **INERT,
        "fuzz_count": "1000",
        "report_every": "1024",
        # the guest freezes for real at this op, so QEMU is surely killed mid-range
        "iofuzz_debug_hang_at": "0:5000",
        "hang_timeout": "300",
        "extra_params": f"-uuid {marker} -trace memory_region_ops_read -D {qemu_log}",
    }
    proc = subprocess.Popen(
        avocado_command("iofuzz.quick", tmp_path, params),
        env=avocado_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # the executor's first read of port 0x300 shows the fuzzing has begun
        _wait_for(lambda: qemu_log.exists() and "addr 0x300 " in qemu_log.read_text(), 180, "the first fuzz op")
        time.sleep(2)
        pid = qemu_pid(marker)
        assert pid, "QEMU not found"
        os.kill(pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        leftover = qemu_pid(marker)
        if leftover:
            os.kill(leftover, signal.SIGKILL)
    job = read_job(proc.returncode, output, tmp_path)
    test = job.tests[0]
    assert test["status"] == "FAIL", output
    reason = test["fail_reason"]
    assert "SIGKILL" in reason and "unclaimed" in reason and "[4096, 5120)" in reason, reason
    trace = read_trace(job.data_file("trace.iofuzz"))
    (plan,) = trace.plans.values()
    assert len(trace.ops[plan.index]) == plan.op_count  # written ahead, all of it
    assert trace.last_done(plan.index) == 4096
    crash = trace.events[-1]
    assert crash.kind == "crash" and crash.data["window"] == [4096, 5120]
    assert crash.data["qemu_exit"]["signal"] == signal.SIGKILL
    summary = job.summary()
    assert summary["findings"][0]["kind"] == "crash"


def test_hung_guest_is_detected_reset_and_the_run_goes_on(tmp_path):
    params = {"iofuzz_debug_hang_at": "0:50", "hang_timeout": "3", "report_every": "16", "fuzz_seed": "5"}
    job = run_avocado("iofuzz.quick", tmp_path, params)
    test = job.tests[0]
    assert test["status"] == "WARN", job.output
    assert "hang in dma1 (1-byte) ops [48, 64)" in test["fail_reason"]
    summary = job.summary()
    (hang,) = summary["findings"]
    assert hang["kind"] == "hang" and hang["window"] == [48, 64] and hang["op"] == 50
    # avocado-vt's QMP monitor was asked at the stall: QEMU answered, the guest was the one stuck
    assert "QEMU's monitor answered" in hang["detail"] and "the guest is stuck" in hang["detail"], hang["detail"]
    first, *rest = summary["ranges"]
    # the executor named op 50 (@HANG): ops 48 and 49 ran, 50..63 were left out
    assert first["ops_done"] == first["ops_planned"] - 14 and first["ops_skipped"] == 14
    assert all(r["ops_done"] == r["ops_planned"] for r in rest)
    kinds = [e.kind for e in read_trace(job.data_file("trace.iofuzz")).events]
    assert kinds.index("hang") < kinds.index("reset") < kinds.index("resume")


def test_bad_param_is_an_error_naming_it(tmp_path):
    job = run_avocado("iofuzz.quick", tmp_path, {"fuzz_count": "lots"})
    test = job.tests[0]
    assert test["status"] == "ERROR"
    assert "param fuzz_count = 'lots': not an integer" in test["fail_reason"]
