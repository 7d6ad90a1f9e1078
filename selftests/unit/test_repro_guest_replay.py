"""In-guest replays against a scripted console and a fake clock: when the hang timer starts."""

from __future__ import annotations

from avocado_iofuzz.model.program import Op
from avocado_iofuzz.repro.guest_replay import GuestReplayer, upload_timeout
from avocado_iofuzz.repro.signature import KIND_HANG, KIND_NONE


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TimedConsole:
    """Prints each line once the fake clock reached its time; every read advances the clock 0.5 s."""

    def __init__(self, clock: FakeClock, lines: list[tuple[float, str]]) -> None:
        self.clock, self.lines = clock, list(lines)

    def sendline(self, command: str) -> None:
        self.command = command

    def read_nonblocking(self, internal_timeout: float = 0.0, timeout: float = 0.0) -> str:
        self.clock.now += 0.5
        due = [text for at, text in self.lines if at <= self.clock.now]
        self.lines = [(at, text) for at, text in self.lines if at > self.clock.now]
        return "".join(text + "\n" for text in due)

    def close(self) -> None:
        pass


class ConsoleVM:
    def __init__(self, console: TimedConsole) -> None:
        self.console = console

    def restart(self) -> None:
        pass

    def login(self, timeout: float) -> TimedConsole:
        return self.console

    def is_alive(self) -> bool:
        return True


OPS = [Op("w", 0x80, 1, n & 0xFF) for n in range(16384)]


def replay(lines: list[tuple[float, str]]):
    clock = FakeClock()
    replayer = GuestReplayer(ConsoleVM(TimedConsole(clock, lines)), hang_timeout=20.0, linger=0.0, clock=clock)
    return replayer.run_ops(OPS)


def test_uploading_a_big_script_does_not_count_as_a_hang():
    # 16,384 ops take ~40 s over the console before the executor says READY, then run at once
    upload = 40.0
    assert upload > 20.0
    outcome = replay([(upload, "@IOFUZZ READY 1 1"), (upload + 1, "@P 0 16384"), (upload + 1, "@DONE 16384")])
    assert outcome.signature.kind == KIND_NONE and outcome.done == len(OPS)


def test_after_ready_the_hang_timeout_counts():
    outcome = replay([(1.0, "@IOFUZZ READY 1 1"), (2.0, "@P 0 64")])
    assert outcome.signature.kind == KIND_HANG and outcome.done == 64
    assert "no progress for 20 s after op 64" in outcome.detail


def test_an_upload_that_never_ends_is_still_judged():
    outcome = replay([])
    assert outcome.signature.kind == KIND_HANG and outcome.done == 0
    assert upload_timeout("x" * 100_000, 20.0) == 40.0
