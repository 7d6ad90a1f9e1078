"""The stall probe's verdicts from how (and how fast) the monitor answered (pure logic: a fake VM and clock)."""

from __future__ import annotations

import pytest

from avocado_iofuzz.vm.monitor_probe import ANSWERED, SILENT, UNREACHABLE, probe_monitor


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeVm:
    def __init__(self, clock: Clock, answer_after: float, status: str = "running", error: Exception | None = None):
        self.clock, self.answer_after, self.status, self.error = clock, answer_after, status, error
        self.asked: list[float] = []

    def is_alive(self) -> bool:
        return True

    def query_status(self, timeout: float) -> str:
        self.asked.append(timeout)
        self.clock.now += min(self.answer_after, timeout)
        if self.error is not None:
            raise self.error
        if self.answer_after > timeout:
            raise TimeoutError("no reply")
        return self.status


def test_a_monitor_that_answers_means_the_guest_is_stuck():
    clock = Clock()
    probe = probe_monitor(FakeVm(clock, 0.004), 5.0, clock)
    assert probe is not None and (probe.verdict, probe.status) == (ANSWERED, "running")
    assert "the guest is stuck, QEMU's main loop is not" in probe.describe()


def test_silence_for_the_whole_limit_means_qemu_hangs():
    clock = Clock()
    vm = FakeVm(clock, 60.0)
    probe = probe_monitor(vm, 5.0, clock)
    assert vm.asked == [5.0]
    assert probe is not None and probe.verdict == SILENT and probe.seconds == 5.0
    assert "QEMU's main loop is stuck (a QEMU hang)" in probe.describe()
    assert probe.as_dict() == {"verdict": SILENT, "seconds": 5.0, "error": "TimeoutError: no reply"}


@pytest.mark.parametrize("error", [ConnectionRefusedError("no socket"), RuntimeError("QMP is not connected")])
def test_a_failure_before_the_limit_is_no_verdict(error):
    clock = Clock()
    probe = probe_monitor(FakeVm(clock, 0.01, error=error), 5.0, clock)
    assert probe is not None and probe.verdict == UNREACHABLE
    assert probe.describe().startswith("QEMU's monitor could not be asked")


def test_a_vm_without_a_monitor_or_a_dead_one_is_not_asked():
    class NoMonitor:
        def is_alive(self) -> bool:
            return True

    class Dead(FakeVm):
        def is_alive(self) -> bool:
            return False

    assert probe_monitor(NoMonitor()) is None
    dead = Dead(Clock(), 0.0)
    assert probe_monitor(dead) is None and dead.asked == []
