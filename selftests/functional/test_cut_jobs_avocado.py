"""Jobs cut short leave nothing behind, and a QEMU that stops answering does not wedge a run.

Real avocado jobs on the busybox guest. A job's processes are found by what
is unique to it: the avocado runner (and the test process, its fork) carry
the job's results dir on their command line, and while the job runs,
everything the test started -- aexpect helpers, QEMU, nc, tcpdump -- is in
the process tree under them (PID and start time noted then); the reaper
names the test process it watches. Other engineers' jobs on the same
machine match none of these.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from avocado_jobs import avocado_command, avocado_env, interruptible, read_job

from avocado_iofuzz.vm.process_guard import process_alive

pytestmark = pytest.mark.guest

# The guest hangs at op 100 of the first range and the campaign would wait
# 600 s for progress: the job is sure to be inside a run when it is cut.
STUCK_PARAMS = {"iofuzz_debug_hang_at": "0:100", "hang_timeout": "600"}
QEMU_UP_TIMEOUT = 240.0  # boot under TCG on a machine shared with other engineers
LEFTOVER_WAIT = 30.0  # the reaper: SIGTERM, 3 s, SIGKILL, plus its polling


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def job_processes(results_dir: Path) -> set[int]:
    """PIDs of the runner and test processes of the job writing into ``results_dir``."""
    needle = str(results_dir).encode()
    return {
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and needle in _read(p / "cmdline") and b"avocado-runner" in _read(p / "cmdline")
    }


def start_time(pid: int) -> str:
    """The kernel's start time of ``pid``: with the PID, names one process even if PIDs are reused."""
    fields = _read(Path(f"/proc/{pid}/stat")).decode(errors="replace").rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def parent(pid: int) -> int:
    fields = _read(Path(f"/proc/{pid}/stat")).decode(errors="replace").rpartition(")")[2].split()
    return int(fields[1]) if len(fields) > 1 else 0


def process_tree(roots: set[int]) -> dict[int, str]:
    """``roots`` and all their descendants, PID -> start time (read from /proc, not from our guard)."""
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            children.setdefault(parent(int(p.name)), []).append(int(p.name))
    tree, todo = {}, list(roots)
    while todo:
        pid = todo.pop()
        tree[pid] = start_time(pid)
        todo += children.get(pid, [])
    return tree


def reapers_of(test_pids: set[int]) -> set[int]:
    wanted = {f"--watch\0{pid}\0".encode() for pid in test_pids}
    found = set()
    for p in Path("/proc").iterdir():
        cmdline = _read(p / "cmdline") if p.name.isdigit() else b""
        if b"process_guard" in cmdline and any(w in cmdline for w in wanted):
            found.add(int(p.name))
    return found


def comm(pid: int) -> str:
    return _read(Path(f"/proc/{pid}/comm")).decode().strip()


def wait_for_qemu(results_dir: Path, job: subprocess.Popen) -> dict[int, str]:
    """Wait until the job's QEMU, its serial console's nc and the IP sniffer run.

    Returns the job's processes then: the runner and everything under it, PID -> start time.
    """
    deadline = time.monotonic() + QEMU_UP_TIMEOUT
    while time.monotonic() < deadline and job.poll() is None:
        tree = process_tree(job_processes(results_dir))
        names = {comm(p) for p in tree}
        if {"qemu-system-x86", "aexpect_helper", "nc", "tcpdump"} <= names:
            return tree
        time.sleep(1)
    pytest.fail(f"no QEMU, nc and tcpdump of the job within {QEMU_UP_TIMEOUT:.0f} s (job exit status {job.poll()})")


def still_running(tree: dict[int, str]) -> set[int]:
    """Of the processes in ``tree``, those still there (same PID and start time), and their reapers."""
    alive = {p for p, started in tree.items() if process_alive(p) and start_time(p) == started}
    return alive | {p for p in reapers_of(set(tree)) if process_alive(p)}


def leftovers(tree: dict[int, str]) -> dict[int, str]:
    """What of the job still runs after ``LEFTOVER_WAIT`` s; PID -> command name."""
    deadline = time.monotonic() + LEFTOVER_WAIT
    while True:
        alive = still_running(tree)
        if not alive or time.monotonic() > deadline:
            return {p: comm(p) for p in alive}
        time.sleep(0.5)


def stop_all(pids: set[int]) -> None:
    """Test hygiene: whatever a failed check left running is ours to kill.

    Reapers last: given the time, a reaper removes its state dir once the test process is gone.
    """
    reapers = {p for p in pids if b"process_guard" in _read(Path(f"/proc/{p}/cmdline"))}
    for pid in pids - reapers:
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + LEFTOVER_WAIT
    while any(process_alive(p) for p in reapers) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in reapers:
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)


def ignored_signals(pid: int) -> set[int]:
    """The signals ``pid`` ignores (``SigIgn`` in /proc: a bit per signal, signal 1 the lowest)."""
    for line in _read(Path(f"/proc/{pid}/status")).decode().splitlines():
        if line.startswith("SigIgn:"):
            mask = int(line.split()[1], 16)
            return {number for number in range(1, 65) if mask >> (number - 1) & 1}
    return set()


def start_job(results_dir: Path, reference: str, params: dict[str, str], *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        interruptible(avocado_command(reference, results_dir, params) + list(extra)),
        env=avocado_env(),
        cwd=results_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(job: subprocess.Popen, timeout: float) -> str:
    try:
        output, _ = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        job.kill()
        output, _ = job.communicate(timeout=30)
        pytest.fail(f"avocado did not end within {timeout:.0f} s:\n{output[-3000:]}")
    return output


@pytest.mark.parametrize("how", ["job-timeout", "iofuzz_test_timeout", "SIGINT", "SIGTERM"])
def test_a_cut_job_leaves_no_process_behind(tmp_path, how):
    extra = ("--job-timeout", "150") if how == "job-timeout" else ()
    params = {**STUCK_PARAMS, "iofuzz_test_timeout": "120"} if how == "iofuzz_test_timeout" else STUCK_PARAMS
    job = start_job(tmp_path, "iofuzz.quick", params, *extra)
    tree: dict[int, str] = {}
    try:
        tree = wait_for_qemu(tmp_path, job)
        if how.startswith("SIG"):
            # an ignored SIGINT (inherited from a shell that ran CI in the background) would look like a hang
            assert getattr(signal, how) not in ignored_signals(job.pid), f"avocado ignores {how}"
            job.send_signal(getattr(signal, how))
        output = finish(job, 120 if how.startswith("SIG") else QEMU_UP_TIMEOUT + 150)
        left = leftovers(tree)
        assert not left, f"still running {LEFTOVER_WAIT:.0f} s after the job ended: {left}\n{output[-2000:]}"
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate(timeout=30)
        stop_all(still_running(tree))
    if how == "job-timeout":
        result = read_job(job.returncode, output, tmp_path)
        assert result.tests[0]["status"] == "INTERRUPTED", output[-2000:]
        guard_log = result.test_dir() / "process-guard.log"
        assert "qemu-system" in guard_log.read_text(), "the reaper did not record stopping QEMU"
    if how == "iofuzz_test_timeout":
        # the test stopped itself: a clear reason, and avocado-vt's postprocess stopped QEMU
        result = read_job(job.returncode, output, tmp_path)
        assert result.tests[0]["status"] == "INTERRUPTED", output[-2000:]
        assert "test timeout of 120 s reached (param iofuzz_test_timeout)" in result.tests[0]["fail_reason"]
        # and wrote down what ran: the executor named op 100 of range 0 (the injected hang), confirming 0..99
        summary = result.summary()
        assert summary["interrupted"] == "test timeout of 120 s reached (param iofuzz_test_timeout)"
        assert summary["ranges"][0]["ops_confirmed"] == 100, summary["ranges"][0]


def test_qemu_that_stops_answering_during_hang_recovery_is_replaced_in_bounded_time(tmp_path):
    """SIGSTOP QEMU (as an outside party would wedge it) right after the hang is detected.

    The recovery must then go: no shell -> system_reset over QMP times out ->
    QEMU killed by PID (SIGTERM is not acted on by a stopped process) and
    started again -> login -> the run goes on and ends WARN with the hang.
    """
    params = {"iofuzz_debug_hang_at": "0:100", "hang_timeout": "5"}
    started = time.monotonic()
    job = start_job(tmp_path, "iofuzz.quick", params)
    tree: dict[int, str] = {}
    try:
        tree = wait_for_qemu(tmp_path, job)
        debug_logs = list(tmp_path.glob("job-*/test-results/*/debug.log"))
        deadline = time.monotonic() + 180
        while not any("hang in range" in log.read_text(errors="replace") for log in debug_logs):
            assert time.monotonic() < deadline, "the injected hang was not detected within 180 s"
            assert job.poll() is None, "the job ended before the injected hang"
            time.sleep(0.2)
            debug_logs = debug_logs or list(tmp_path.glob("job-*/test-results/*/debug.log"))
        qemu = [p for p in tree if comm(p) == "qemu-system-x86"]
        assert len(qemu) == 1, qemu
        os.kill(qemu[0], signal.SIGSTOP)
        output = finish(job, 400)
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate(timeout=30)
        stop_all(still_running(tree))
    elapsed = time.monotonic() - started
    result = read_job(job.returncode, output, tmp_path)
    log = (result.test_dir() / "debug.log").read_text(errors="replace")
    assert result.tests[0]["status"] == "WARN", f"{result.tests[0]['fail_reason']}\n{output[-2000:]}"
    assert "system_reset failed" in log
    assert f"PID {qemu[0]} (qemu-system-x86) ignored SIGTERM" in log or f"QEMU (PID {qemu[0]})" in log
    assert "restarting QEMU" in log and "hang recovery: shell back after" in log
    assert result.summary()["findings"][0]["kind"] == "hang"
    assert elapsed < 600, f"the job took {elapsed:.0f} s"
