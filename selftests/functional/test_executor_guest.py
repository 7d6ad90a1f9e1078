"""The executor inside a real TCG guest: QEMU sees exactly the ops of program.py.

Boots the busybox guest (≈2 s each), so these are marked ``guest``; they belong
with the functional tests and live here only because they test the executor.
QEMU's ``memory_region_ops_read/write`` trace events log every port access
with its address, value and size, which proves that reads hit the named port
and writes carry the chosen value.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from avocado_iofuzz.executor.protocol import Done, ExecError, Hang, Progress, Ready, executor_command, parse_line
from avocado_iofuzz.model.program import Op, RangePlan

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]

QEMU_ACCESS = re.compile(
    r"memory_region_ops_(read|write) cpu \d+ mr 0x[0-9a-f]+ addr 0x([0-9a-f]+) value 0x([0-9a-f]+) size (\d+)"
)


@pytest.fixture(scope="session")
def guest_artifacts():
    from avocado_iofuzz.guest.build import default_guest

    return default_guest()


class SerialGuest:
    """A QEMU guest whose serial console is our stdin/stdout."""

    def __init__(self, artifacts, kernel_params: str | None = None, qemu_log: Path | None = None):
        self.prompt = re.compile(artifacts.shell_prompt)
        command = [
            "qemu-system-x86_64", "-nodefaults", "-display", "none", "-accel", "tcg", "-m", "256",
            "-kernel", str(artifacts.kernel), "-initrd", str(artifacts.initrd),
            "-append", kernel_params or artifacts.kernel_params, "-serial", "stdio", "-no-reboot",
        ]  # fmt: skip
        if qemu_log is not None:
            command += ["-trace", "memory_region_ops_*", "-D", str(qemu_log)]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.chunks: queue.Queue[str | None] = queue.Queue()
        self.pending = ""
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            self.chunks.put(chunk.decode("utf-8", "replace"))
        self.chunks.put(None)

    def lines_until(self, done, timeout: float, partial: bool = False) -> list[str]:
        """Console lines up to the first for which ``done(line)`` holds.

        ``partial``: an unterminated last line counts too (a prompt has no newline).
        """
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while True:
            *complete, self.pending = self.pending.split("\n")
            for n, line in enumerate(complete):
                lines.append(line.replace("\r", ""))
                if done(lines[-1]):
                    self.pending = "\n".join([*complete[n + 1 :], self.pending])
                    return lines
            if partial and done(self.pending.replace("\r", "")):
                lines.append(self.pending)
                self.pending = ""
                return lines
            try:
                chunk = self.chunks.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no expected line within {timeout} s; got {lines[-5:]} {self.pending!r}") from None
            if chunk is None:
                raise EOFError(f"QEMU exited; last lines {lines[-5:]}")
            self.pending += chunk

    def wait_prompt(self, timeout: float = 90) -> list[str]:
        return self.lines_until(lambda line: bool(self.prompt.search(line)), timeout, partial=True)

    def run(self, command: str, timeout: float = 120) -> list[str]:
        self.proc.stdin.write(command.encode() + b"\n")
        return self.wait_prompt(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # graceful: QEMU flushes its trace log
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def boot(guest_artifacts):
    guests = []

    def start(**kwargs) -> SerialGuest:
        guest = SerialGuest(guest_artifacts, **kwargs)
        guests.append(guest)
        guest.wait_prompt()
        return guest

    yield start
    for guest in guests:
        guest.stop()


def messages(lines: list[str]) -> list[object]:
    return [m for m in map(parse_line, lines) if m is not None]


def test_qemu_sees_exactly_the_planned_accesses(boot, tmp_path):
    # Ports no device claims under -nodefaults: accesses have no side effect
    # and nothing but the executor touches them after boot.
    plans = [
        RangePlan(0, 0x2F8, 0x2FF, "com2-absent", seed=0xC0FFEE, fuzz_count=6),
        RangePlan(1, 0x2E8, 0x2EF, "com4-absent", seed=0xC0FFEE, fuzz_count=6, width=2),
        RangePlan(2, 0x2E0, 0x2E7, "unclaimed", seed=0xC0FFEE, fuzz_count=6, width=4),
    ]
    log = tmp_path / "qemu.log"
    guest = boot(qemu_log=log)
    output = messages(guest.run(executor_command(plans, report_every=16)))
    bare = messages(guest.run(executor_command(plans, bare_loop=True)))
    guest.stop()
    assert output[0] == Ready(1, 3)
    assert output[-1] == Done(sum(p.op_count for p in plans))
    assert bare == [Done(sum(p.op_count for p in plans))]
    for plan in plans:
        ports = range(plan.start, plan.end + 1)
        seen = [
            Op("r" if m[1] == "read" else "w", int(m[2], 16), int(m[4]), 0 if m[1] == "read" else int(m[3], 16))
            for m in QEMU_ACCESS.finditer(log.read_text())
            if int(m[2], 16) in ports
        ]
        expected = list(plan.ops())
        # the kernel probes some of these ports at boot; the executor's accesses come last:
        # the real run, then --bare-loop replaying its table (it holds all of these few ops)
        assert seen[-2 * len(expected) :] == expected * 2


def test_qemu_sees_each_range_run_with_its_own_seed(boot, tmp_path):
    """A guided round's command: every range its own seed (``@S``); QEMU's trace shows each range's model ops."""
    plans = [
        RangePlan(0, 0x2F8, 0x2FF, "com2-absent", seed=0xC0FFEE, fuzz_count=6),
        RangePlan(1, 0x2E8, 0x2EF, "com4-absent", seed=2**63 + 5, fuzz_count=6, width=2),
        RangePlan(2, 0x2E0, 0x2E7, "unclaimed", seed=3, fuzz_count=6, width=4),
    ]
    command = executor_command(plans, report_every=16)
    assert f"1:0x2e8-0x2ef/2@{2**63 + 5}" in command and "2:0x2e0-0x2e7/4@3" in command
    log = tmp_path / "qemu.log"
    guest = boot(qemu_log=log)
    output = messages(guest.run(command))
    guest.stop()
    assert output[-1] == Done(sum(p.op_count for p in plans))
    accesses = [
        Op("r" if m[1] == "read" else "w", int(m[2], 16), int(m[4]), 0 if m[1] == "read" else int(m[3], 16))
        for m in QEMU_ACCESS.finditer(log.read_text())
    ]
    for plan in plans:
        seen = [op for op in accesses if plan.start <= op.port <= plan.end]
        expected = list(plan.ops())
        assert seen[-len(expected) :] == expected  # after the kernel's boot probes, the executor's ops
        other_seed = list(RangePlan(plan.index, plan.start, plan.end, plan.name, 77, 6, plan.width).ops())
        assert other_seed != expected  # the seed shapes the ops: the check above could fail


def test_progress_marks_arrive_in_order(boot):
    plans = [RangePlan(0, 0x2F8, 0x2FF, "com2-absent", seed=9, fuzz_count=1000)]
    guest = boot()
    output = messages(guest.run(executor_command(plans, report_every=1024, resume=(0, 100))))
    marks = [m.ops_done for m in output if isinstance(m, Progress)]
    assert marks == [100, *range(1024, plans[0].op_count, 1024), plans[0].op_count]
    assert output[-1] == Done(plans[0].op_count - 100)


def test_hang_at_really_hangs_the_guest(boot):
    plans = [RangePlan(0, 0x2F8, 0x2FF, "com2-absent", seed=3, fuzz_count=100)]
    guest = boot()
    guest.proc.stdin.write(executor_command(plans, report_every=64, hang_at=(0, 300)).encode() + b"\n")
    lines = guest.lines_until(lambda line: "@HANG" in line, 60)
    output = messages(lines)
    assert output[-1] == Hang(0, 300)
    assert [m for m in output if isinstance(m, Progress)][-1] == Progress(0, 256)
    guest.proc.stdin.write(b"\x03\necho still-alive\n")  # Ctrl-C, then a command: neither may be served
    with pytest.raises(TimeoutError):
        guest.lines_until(lambda line: line.startswith("still-alive"), 5)
    assert guest.proc.poll() is None  # QEMU itself runs on; only the guest is stuck


def test_refuses_real_io_without_the_guest_marker(boot, guest_artifacts):
    params = guest_artifacts.kernel_params.replace("iofuzz.guest=1", "")
    assert params != guest_artifacts.kernel_params
    guest = boot(kernel_params=params)
    plans = [RangePlan(0, 0x2F8, 0x2FF, "com2-absent", seed=3, fuzz_count=1)]
    output = messages(guest.run(executor_command(plans) + "; echo status=$?"))
    assert len(output) == 1 and isinstance(output[0], ExecError)
    assert "lacks iofuzz.guest=1" in output[0].message
