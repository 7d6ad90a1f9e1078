"""The stall probe's verdicts from how (and how fast) the monitor answered (pure logic: a fake VM and clock)."""

from __future__ import annotations

import pytest

from avocado_iofuzz.vm.monitor_probe import ANSWERED, SILENT, UNREACHABLE, probe_monitor


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeVm:
    """Answers each question after the next delay of ``delays`` (the last one repeats); > the limit: silence."""

    def __init__(self, clock: Clock, *delays: float, status: str = "running", error: Exception | None = None):
        self.clock, self.delays, self.status, self.error = clock, list(delays), status, error
        self.asked: list[float] = []

    def is_alive(self) -> bool:
        return True

    def query_status(self, timeout: float) -> str:
        delay = self.delays[min(len(self.asked), len(self.delays) - 1)]
        self.asked.append(timeout)
        self.clock.now += min(delay, timeout)
        if self.error is not None:
            raise self.error
        if delay > timeout:
            raise TimeoutError("no reply")
        return self.status


def probe(vm: FakeVm, clock: Clock, timeout: float = 5.0):
    return probe_monitor(vm, timeout, clock, questions=3, interval=1.0, sleep=clock.sleep)


def test_a_monitor_that_answers_every_question_means_the_guest_is_stuck():
    clock = Clock()
    vm = FakeVm(clock, 0.004, 0.2, 0.01)
    result = probe(vm, clock)
    assert vm.asked == [5.0, 5.0, 5.0]
    assert result is not None and (result.verdict, result.status, result.questions) == (ANSWERED, "running", 3)
    assert result.seconds == 0.2  # the slowest answer
    assert "answered 3 question(s) within 0.20 s (status running): the guest is stuck" in result.describe()


def test_silence_for_the_whole_limit_means_qemu_hangs():
    clock = Clock()
    vm = FakeVm(clock, 60.0)
    result = probe(vm, clock)
    assert vm.asked == [5.0]  # the first silence is the verdict
    assert result is not None and result.verdict == SILENT and result.seconds == 5.0
    assert "QEMU's main loop is stuck (a QEMU hang)" in result.describe()
    assert result.as_dict() == {"verdict": SILENT, "seconds": 5.0, "error": "TimeoutError: no reply", "questions": 1}


def test_a_main_loop_that_stalls_between_answers_is_caught_by_a_later_question():
    """A timer-driven device model (lsi's SCRIPTS processor) stalls QEMU for seconds at a time."""
    clock = Clock()
    result = probe(FakeVm(clock, 0.01, 30.0), clock)
    assert result is not None and (result.verdict, result.questions) == (SILENT, 2)


@pytest.mark.parametrize("error", [ConnectionRefusedError("no socket"), RuntimeError("QMP is not connected")])
def test_a_failure_before_the_limit_is_no_verdict(error):
    clock = Clock()
    result = probe(FakeVm(clock, 0.01, error=error), clock)
    assert result is not None and result.verdict == UNREACHABLE
    assert result.describe().startswith("QEMU's monitor could not be asked")


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
