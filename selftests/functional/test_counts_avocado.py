"""summary.json's counts against what QEMU itself saw: `avocado run iofuzz` with QEMU's trace events.

The fuzzed range is a block of ports no device claims and no guest driver
touches (see test_iofuzz_avocado.INERT), so every ``memory_region_ops_*``
line QEMU logs for it is one of the executor's ops.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from avocado_jobs import avocado_command, avocado_env, qemu_pid, read_job, run_avocado

pytestmark = pytest.mark.guest

INERT = {"extra_ioports": "0x300-0x31f:unclaimed", "only_devices": "unclaimed", "pio_widths": "1"}
ACCESS = re.compile(r"memory_region_ops_(read|write) .*?addr 0x([0-9a-f]+) ")
REPORT_EVERY = 4096


def _count_accesses(lines, counts: dict[str, int], first: int, last: int) -> None:
    for line in lines:
        match = ACCESS.search(line)
        if match and first <= int(match[2], 16) <= last:
            counts[match[1]] += 1


def observed_ops(qemu_log: Path, first: int = 0x300, last: int = 0x31F) -> dict[str, int]:
    """Reads and writes QEMU logged for ports ``first..last``."""
    counts = {"read": 0, "write": 0}
    with qemu_log.open(encoding="utf-8", errors="replace") as log:
        _count_accesses(log, counts, first, last)
    return counts



def _wait_for_ops(qemu_log: Path, at_least: int, timeout: float, job: subprocess.Popen) -> None:
    """Wait until QEMU logged ``at_least`` accesses to the fuzzed ports, reading only what is new each time."""
    counts = {"read": 0, "write": 0}
    offset, partial = 0, ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if qemu_log.exists():
            with qemu_log.open("rb") as log:
                log.seek(offset)
                chunk = log.read()
            offset += len(chunk)
            *lines, partial = (partial + chunk.decode(errors="replace")).split("\n")
            _count_accesses(lines, counts, 0x300, 0x31F)
            if sum(counts.values()) >= at_least:
                return
        if job.poll() is not None:
            raise AssertionError(f"the job ended before QEMU logged {at_least} accesses: {job.communicate()[0]}")
        time.sleep(0.5)
    raise AssertionError(f"QEMU did not log {at_least} accesses to the fuzzed ports within {timeout} s")


def test_after_qemu_is_killed_the_observed_ops_lie_between_confirmed_and_executed(tmp_path):
    marker = str(uuid.uuid4())
    qemu_log = tmp_path / "qemu-trace.log"
    params = {
        **INERT,
        "fuzz_count": "100000",  # 3.2 M ops: far more than run before the kill
        "fuzz_seed": "17",
        "report_every": str(REPORT_EVERY),
        "minimize": "no",  # a kill from outside does not come back in a replay: no triage to wait for
        "extra_params": f"-uuid {marker} -trace memory_region_ops_read -trace memory_region_ops_write -D {qemu_log}",
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
        # past the read and zero phases and a few marks: QEMU dies in the middle of fuzzing
        _wait_for_ops(qemu_log, 3 * REPORT_EVERY, 600, proc)
        pid = qemu_pid(marker)
        assert pid, "QEMU not found"
        os.kill(pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        leftover = qemu_pid(marker)
        if leftover:
            os.kill(leftover, signal.SIGKILL)
    job = read_job(proc.returncode, output, tmp_path)
    assert job.tests[0]["status"] == "FAIL", output
    summary = job.summary()
    (rng,) = summary["ranges"]
    seen = observed_ops(qemu_log)
    ran = seen["read"] + seen["write"]
    confirmed, executed = rng["ops_confirmed"], rng["ops_executed"]
    # the marks prove the confirmed ops; the window bounds the rest. ran == confirmed is a kill at a mark:
    # the executor waits there (tcdrain) until the guest's serial driver has sent the whole mark line, so
    # the host can hold the mark while no op of the next block has run yet (CI saw it once)
    assert confirmed <= ran <= executed, (confirmed, ran, executed)
    assert executed - confirmed <= REPORT_EVERY and confirmed % REPORT_EVERY == 0
    assert rng["ops_unconfirmed"] == executed - confirmed
    assert rng["reads"] == seen["read"] == 32
    assert rng["writes"] <= seen["write"] <= sum(rng["ops_executed_by_phase"].values()) - 32
    (crash,) = summary["findings"]
    assert crash["kind"] == "crash" and crash["window"] == [confirmed, executed] and crash["op"] is None
    assert summary["ops_executed_total"] == executed and summary["ops_confirmed_total"] == confirmed


def test_hang_op_the_executor_names_is_where_the_counts_stop(tmp_path):
    qemu_log = tmp_path / "qemu-trace.log"
    params = {
        **INERT,
        "fuzz_seed": "5",
        "iofuzz_debug_hang_at": "0:7",  # within the read phase: ops 0..6 are reads
        "hang_timeout": "3",
        "extra_params": f"-trace memory_region_ops_read -trace memory_region_ops_write -D {qemu_log}",
    }
    job = run_avocado("iofuzz.quick", tmp_path, params)
    assert job.tests[0]["status"] == "WARN", job.output
    assert "hang in unclaimed ops [0, 128) at op 7" in job.tests[0]["fail_reason"]
    summary = job.summary()
    (hang,) = summary["findings"]
    # the window is the whole range (128 ops < report_every); the executor named op 7
    assert hang["kind"] == "hang" and hang["op"] == 7 and hang["window"] == [0, 128]
    (rng,) = summary["ranges"]
    assert observed_ops(qemu_log) == {"read": 7, "write": 0}
    assert (rng["ops_confirmed"], rng["ops_executed"], rng["ops_skipped"]) == (7, 7, 121)
    assert (rng["reads"], rng["writes"]) == (7, 0)
