"""In-guest replays against a scripted console and a fake clock: the checked upload, when the hang timer starts."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from avocado_iofuzz.model.pci import config_address
from avocado_iofuzz.model.program import SPACE_MMIO, SPACE_PCI, Op
from avocado_iofuzz.repro.guest_replay import (
    END_OF_FILE,
    GUEST_SCRIPT_PATH,
    UPLOAD_BROKEN,
    UPLOAD_READY,
    GuestReplayer,
    GuestReplayError,
    ScriptTooBig,
    checked_upload_command,
    guest_script,
    upload_timeout,
)
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

    def send(self, text: str) -> None:
        self.sent = text

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


def replay(lines: list[tuple[float, str]], ops: list[Op] = OPS, console: TimedConsole | None = None):
    clock = FakeClock()
    console = console or TimedConsole(clock, lines)
    console.clock = clock
    replayer = GuestReplayer(ConsoleVM(console), hang_timeout=20.0, linger=0.0, clock=clock)
    return replayer.run_ops(ops)


def test_uploading_a_big_script_does_not_count_as_a_hang():
    # 16,384 ops take ~40 s over the console before the executor says READY, then run at once
    upload = 40.0
    assert upload > 20.0
    outcome = replay(
        [(1.0, UPLOAD_READY), (upload, "@IOFUZZ READY 1 1"), (upload + 1, "@P 0 16384"), (upload + 1, "@DONE 16384")]
    )
    assert outcome.signature.kind == KIND_NONE and outcome.done == len(OPS)


def test_the_script_is_sent_once_the_guest_is_ready_for_it_and_ends_with_end_of_file():
    clock = FakeClock()
    console = TimedConsole(clock, [(1.0, UPLOAD_READY), (2.0, "@IOFUZZ READY 1 1"), (3.0, "@DONE 16384")])
    replay([], console=console)
    assert console.sent == guest_script(OPS) + END_OF_FILE
    assert hashlib.md5(guest_script(OPS).encode()).hexdigest() in console.command
    # the command line the console echoes never holds the tokens the guest prints
    assert UPLOAD_READY not in console.command and UPLOAD_BROKEN not in console.command


def test_a_script_the_console_mangled_is_refused_with_what_arrived():
    lines = [(1.0, UPLOAD_READY), (5.0, f"{UPLOAD_BROKEN} 0123456789abcdef0123456789abcdef 1000")]
    with pytest.raises(GuestReplayError, match=r"did not carry the script intact .* arrived: 0123456789abcdef"):
        replay(lines)


def test_a_script_too_big_for_the_console_is_refused_before_any_upload():
    clock = FakeClock()
    console = TimedConsole(clock, [])
    ops = [Op("w", 0xFEBA1C68, 4, 0x162FAD24, SPACE_MMIO)] * 50_000  # ~1.4 MB of writel lines
    with pytest.raises(ScriptTooBig, match=r"50000 ops make a 1\.\d MB script, more than the 1\.0 MB"):
        replay([], ops=ops, console=console)
    assert not hasattr(console, "command")


def test_the_guest_runs_the_script_only_if_it_arrived_intact(tmp_path):
    """The upload line in a real shell: the host's MD5 admits the script, any other bytes do not."""
    script = guest_script([Op("w", 0x80, 1, 1), Op("r", 0xFEBA0008, 4, 0, SPACE_MMIO)])
    line = checked_upload_command(script, executor="echo RAN", report_every=1).replace(
        GUEST_SCRIPT_PATH, str(tmp_path / "s.qtest")
    )
    line = line.replace("stty -echo; ", "").replace("stty echo; ", "")  # no tty here
    for arrived, ran in ((script, True), (script.replace("0x1", "0x7"), False)):
        done = subprocess.run(["sh", "-c", line], input=arrived, capture_output=True, text=True, timeout=30)
        assert done.stdout.splitlines()[0] == UPLOAD_READY
        assert ("RAN --report-every 1 --script" in done.stdout) is ran
        assert (UPLOAD_BROKEN in done.stdout) is not ran


def test_after_ready_the_hang_timeout_counts():
    outcome = replay([(1.0, UPLOAD_READY), (2.0, "@IOFUZZ READY 1 1"), (3.0, "@P 0 64")])
    assert outcome.signature.kind == KIND_HANG and outcome.done == 64
    assert "no progress for 20 s after op 64" in outcome.detail


def test_an_upload_that_never_ends_is_still_judged():
    outcome = replay([])
    assert outcome.signature.kind == KIND_HANG and outcome.done == 0
    assert upload_timeout("x" * 100_000, 20.0) == 40.0


# a PCI config op is two script lines (0xcf8, then 0xcfc), the others one: 2 + 2 + 1 + 2 + 1 lines
MIXED = [
    Op("w", config_address(0, 3, 0, 0x10), 4, 0xFEA00000, SPACE_PCI),
    Op("r", config_address(0, 3, 0, 0x04), 2, 0, SPACE_PCI),
    Op("w", 0x80, 1, 0x5),
    Op("w", config_address(0, 3, 0, 0x3C), 1, 0xB, SPACE_PCI),
    Op("r", 0xFEA00080, 4, 0, SPACE_MMIO),
]


def _executor_marks(executor, ops: list[Op], report_every: int) -> list[str]:
    """The progress lines the real executor prints for the ops' script (--dry-run: no port or memory touched)."""
    done = subprocess.run(
        [str(executor), "--dry-run", "--report-every", str(report_every), "--script", "-"],
        input=guest_script(ops), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return [line for line in done.stdout.splitlines() if line.startswith("@")]


def test_done_counts_ops_as_the_trace_does_not_the_executors_script_lines(executor):
    marks = _executor_marks(executor, MIXED, report_every=3)
    assert marks[1:] == ["@P 0 0", "@P 0 3", "@P 0 6", "@P 0 8", "@DONE 8"]  # the executor counts 8 lines
    # it stops after its mark at line 6: the two PCI ops and the port write ran (lines 1-5), the third
    # PCI op only its address write (line 6), so 3 of the 5 ops are done
    hung = replay([(1.0, UPLOAD_READY), *((2.0, line) for line in marks[:4])], ops=MIXED)
    assert hung.signature.kind == KIND_HANG and (hung.done, hung.ops) == (3, 5)
    assert "no progress for 20 s after op 3" in hung.detail
    at_line_3 = replay([(1.0, UPLOAD_READY), *((2.0, line) for line in marks[:3])], ops=MIXED)
    assert at_line_3.done == 1  # the second PCI op's address write ran, its data access not
    whole = replay([(1.0, UPLOAD_READY), *((2.0, line) for line in marks)], ops=MIXED)
    assert whole.signature.kind == KIND_NONE and whole.done == whole.ops == len(MIXED)
