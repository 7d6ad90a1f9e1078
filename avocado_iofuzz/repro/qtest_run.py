"""Run an op list against QEMU's device models with ``-S ... -qtest stdio``: no guest, milliseconds.

The vCPU never starts (``-S``); the qtest server performs each ``outb``/``inb``
as the guest would and answers ``OK [value]``. Once QEMU answered a sync
command, the script is piped in one go (≈600 k ops/s), so that QEMU reads it
in the same 1 KiB pieces as from ``reproducer.sh``'s here-document (see
:func:`_feed`), while a reader counts the answers, so a death or a stall is
pinned to the op that had no answer. After the last answer the runner keeps
watching QEMU for ``linger`` seconds: some aborts come from bottom halves and
timers that fire after the write that armed them.

A running-clock replay is *paced* unless told otherwise (``pacing=UNPACED``):
fed in pieces of :data:`PACE_PIECE_BYTES` with a :data:`PACE_PAUSE` after
each, so that device timers fire between the pieces as they fired between
the guest's accesses (see :class:`Pacing`).

Every QEMU started here runs in its own session and is SIGKILLed by PID when
the run is judged (a QEMU stuck in a device loop ignores SIGTERM).
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import itertools
import os
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from avocado_iofuzz.model.program import Op
from avocado_iofuzz.repro.qtest_ops import qtest_commands
from avocado_iofuzz.repro.signature import HANG, NO_CRASH, CrashSignature, crash_signature

# A first command with a known, harmless answer: once it is answered, QEMU
# has started, so a later death is the device's doing, not a bad command line.
_SYNC_COMMAND = b"endianness\n"
DEFAULT_LINGER = 0.5
DEFAULT_STALL_TIMEOUT = 5.0
STARTUP_TIMEOUT = 30.0
STDERR_KEEP = 4000
# Assertions in QEMU's qtest server mean our script was malformed, not that a device failed.
_HARNESS_SOURCES = ("softmmu/qtest.c", "system/qtest.c")


class QtestStartError(RuntimeError):
    """QEMU did not start with the replay's command line (bad device args, missing file...)."""


class QtestHarnessError(RuntimeError):
    """QEMU's qtest server itself rejected the script: a bug on our side, never a finding."""


@dataclass(frozen=True)
class Pacing:
    """How a replay's script is fed: ``piece`` bytes at a time, ``pause`` seconds after each.

    Why: QEMU's qtest server takes at most 1 KiB of input per main-loop turn
    and runs due timers only between turns. Fed as fast as it reads, the
    turns come every few tens of microseconds and a device timer fires
    wherever QEMU's speed and the host's load put it: e1000e's interrupt
    throttling timer (128 us at reset) aborted QEMU in 2 of 3 and 1 of 5 such
    replays of the same 644 k ops. In the guest, time passed between every
    few accesses; a pause after every piece lets each armed timer whose
    period is shorter fire there, in every replay (5 of 5 measured).
    """

    piece: int
    pause: float

    def __post_init__(self) -> None:
        if self.piece < 1 or self.pause < 0:
            raise ValueError(f"pacing needs piece >= 1 byte and pause >= 0 s, got {self.piece}, {self.pause}")


PACE_PIECE_BYTES = 4096  # ~180 qtest lines: a few QEMU main-loop turns
PACE_PAUSE = 0.0005  # longer than e1000e's default throttling interval (500 x 256 ns)
RUNNING_CLOCK_PACING = Pacing(PACE_PIECE_BYTES, PACE_PAUSE)
UNPACED = Pacing(1 << 62, 0.0)  # one write, as fast as QEMU reads


CLOCK_STOPPED = "stopped"  # -S: the vCPU never starts, virtual-clock timers never fire
CLOCK_RUNNING = "running"  # a firmware that only halts: the machine runs, its timers fire, no code touches devices
HALT_FIRMWARE_SIZE = 0x10000


def write_halt_firmware(path: str | os.PathLike[str]) -> Path:
    """A 64 KiB PC firmware image whose reset vector is ``cli; hlt; jmp .-3``: the vCPU halts for good.

    With it instead of SeaBIOS, a replay can run the machine (virtual time
    passes, device timers fire: DMA engines, audio, watchdogs) while no guest
    code touches a device, and the PCI setup stays the replay's own.
    """
    image = bytearray(b"\xf4" * HALT_FIRMWARE_SIZE)
    image[0xFFF0:0xFFF4] = bytes([0xFA, 0xF4, 0xEB, 0xFD])
    path = Path(path)
    if not path.is_file() or path.read_bytes() != image:
        path.write_bytes(image)
    return path


_scratch: list[Path] = []  # this process's private folder for the replays' firmware


def replay_firmware() -> Path:
    """The halting firmware for running-clock replays, in a private temp folder removed at exit.

    Replays never leave it in an output folder: only a reproducer that needs
    it (written by the reproducer stage) puts a copy there.
    """
    if not _scratch:
        _scratch.append(Path(tempfile.mkdtemp(prefix="iofuzz-replay-")))
        atexit.register(shutil.rmtree, _scratch[0], True)
    return write_halt_firmware(_scratch[0] / "halt-firmware.bin")


def _without_bios(args: Sequence[str]) -> list[str]:
    out, skip = [], False
    for word in args:
        if skip:
            skip = False
        elif word == "-bios":
            skip = True
        else:
            out.append(word)
    return out


@dataclass(frozen=True)
class QtestTarget:
    """A QEMU binary and the machine/device args the ops are replayed on.

    ``clock``: :data:`CLOCK_STOPPED` (``-S``, the default) or
    :data:`CLOCK_RUNNING` (the halting ``firmware`` instead of the BIOS).
    """

    binary: str
    args: tuple[str, ...] = ()
    clock: str = CLOCK_STOPPED
    firmware: str = ""

    def __post_init__(self) -> None:
        if self.clock not in (CLOCK_STOPPED, CLOCK_RUNNING):
            raise ValueError(f"clock must be {CLOCK_STOPPED!r} or {CLOCK_RUNNING!r}, got {self.clock!r}")
        if self.clock == CLOCK_RUNNING and not self.firmware:
            raise ValueError("a running-clock replay needs the halting firmware's path")

    def running(self, firmware: str | os.PathLike[str]) -> QtestTarget:
        """The same machine with its clock running (see :func:`write_halt_firmware`)."""
        return QtestTarget(self.binary, self.args, CLOCK_RUNNING, str(firmware))

    def _words(self) -> list[str]:
        if self.clock == CLOCK_STOPPED:
            return [self.binary, "-S", "-display", "none", *self.args]
        return [self.binary, "-bios", self.firmware, "-display", "none", *_without_bios(self.args)]

    def argv_without_binary(self, firmware: str | None = None) -> list[str]:
        """The options after the binary; ``firmware`` stands in for a running-clock target's firmware path."""
        words = self._words()[1:]
        if firmware is not None and self.clock == CLOCK_RUNNING:
            words = [firmware if word == self.firmware else word for word in words]
        return words

    def with_args(self, args: Sequence[str]) -> QtestTarget:
        return QtestTarget(self.binary, tuple(args), self.clock, self.firmware)

    def argv(self) -> list[str]:
        return [*self._words(), "-qtest", "stdio", "-qtest-log", "/dev/null"]

    def shell_command(self, script: str, quote: bool = True, firmware: str | None = None) -> str:
        """The one-line command a QEMU developer runs: ``... -qtest stdio < script``.

        ``quote=False`` leaves ``script`` as given (a shell expression such as
        ``"$(dirname "$0")/reproducer.qtest"``); ``firmware`` likewise replaces
        the firmware path of a running-clock target.
        """
        words = self._words()
        line = shlex.join([*words, "-qtest", "stdio"])
        if firmware is not None and self.clock == CLOCK_RUNNING:
            line = line.replace(shlex.quote(self.firmware), firmware, 1)
        return f"{line} < {shlex.quote(script) if quote else script}"


@dataclass(frozen=True)
class QtestOutcome:
    """How one qtest replay ended."""

    signature: CrashSignature
    ops: int  # ops sent
    answered: int  # ops QEMU answered before it died, stalled or the replay ended
    elapsed: float
    stderr: str = field(default="", repr=False)
    late: float | None = None  # QEMU died this long after answering every op (a timer), else None

    @property
    def failing_op(self) -> int | None:
        """Index of the op QEMU never answered (it crashed or hung in it); None if all were answered."""
        return self.answered if self.answered < self.ops and self.signature.is_failure else None


def run_qtest(
    target: QtestTarget,
    ops: Sequence[Op],
    *,
    linger: float = DEFAULT_LINGER,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    pacing: Pacing | None = None,
) -> QtestOutcome:
    """Replay ``ops`` on a fresh QEMU and judge: crash (with signature), hang, or nothing.

    ``pacing``: how the script is fed; by default a running-clock target's is
    :data:`RUNNING_CLOCK_PACING` (timers fire between pieces) and a stopped
    clock's is none (no timer can fire: one write, as fast as QEMU reads).
    """
    if pacing is None and target.clock == CLOCK_RUNNING:
        pacing = RUNNING_CLOCK_PACING
    lines = [qtest_commands(op) for op in ops]
    # qtest answers per line, and a PCI config op is two lines: replies are mapped back to ops
    op_ends = list(itertools.accumulate(len(op_lines) for op_lines in lines))
    payload = "".join(line + "\n" for op_lines in lines for line in op_lines).encode("ascii")
    started = time.monotonic()
    with tempfile.TemporaryFile() as stderr_file:
        try:
            proc = subprocess.Popen(
                target.argv(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr_file,
                start_new_session=True,
            )
        except OSError as err:
            raise QtestStartError(f"cannot run {target.binary}: {err.strerror}") from None
        try:
            started_up = threading.Event()
            writer = threading.Thread(target=_feed, args=(proc, payload, pacing, started_up), daemon=True)
            writer.start()
            replies, status, answered_at = _watch(
                proc, (op_ends[-1] if op_ends else 0) + 1, linger, stall_timeout, started_up
            )
            ended_at = time.monotonic()
        finally:
            started_up.set()  # a writer still waiting for the sync answer gives up (QEMU is killed next)
            _kill(proc)
        stderr_file.seek(0)
        stderr = stderr_file.read().decode("utf-8", "replace")[-STDERR_KEEP:]
    elapsed = time.monotonic() - started
    if replies == 0:
        if status is None:
            raise QtestStartError(f"QEMU did not answer within {STARTUP_TIMEOUT:.0f} s: {shlex.join(target.argv())}")
        raise QtestStartError(
            f"QEMU refused the replay's command line (exit {status}): {stderr.strip()[-600:]}\n"
            f"command: {shlex.join(target.argv())}"
        )
    answered = ops_answered(op_ends, replies - 1)
    if status == "stalled":
        signature = HANG
    elif status is None:
        signature = NO_CRASH
    else:
        assert isinstance(status, int)
        signature = crash_signature(status if status >= 0 else None, -status if status < 0 else None, stderr)
        if signature.location.startswith(_HARNESS_SOURCES):
            raise QtestHarnessError(f"QEMU's qtest server rejected the script: {signature.describe()}")
    # a death after every answer: how long after (a timer's delay, for the next rounds' linger)
    late = ended_at - answered_at if answered_at is not None and isinstance(status, int) else None
    return QtestOutcome(signature, len(ops), answered, elapsed, stderr, late)


def ops_answered(op_ends: Sequence[int], lines_answered: int) -> int:
    """How many ops were answered in full, given each op's last line number (1-based, cumulative)."""
    return bisect.bisect_right(op_ends, lines_answered)


def _feed(proc: subprocess.Popen[bytes], payload: bytes, pacing: Pacing | None, started_up: threading.Event) -> None:
    """Write the sync command, then, once it is answered, the script (paced if asked).

    Why wait: QEMU's qtest server reads at most 1 KiB per main-loop turn and
    runs bottom halves and due timers between turns, so which ops share a
    read can decide a crash (the bottom half an EHCI USBCMD write schedules
    runs the async schedule, clock stopped or not, and must see the
    ASYNCLISTADDR write that follows). Sent in
    one go behind the sync line, the ops' reads began 11 bytes early, unlike
    ``sh reproducer.sh``, whose QEMU reads the ops from their first byte: a
    reproducer minimized so crashed in every replay and never as written.
    Sent after the sync's answer, the ops start a read of their own, as there.

    QEMU dying half-way only ends the feeding; stdin stays open until the kill.
    """
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, OSError, ValueError):
        proc.stdin.write(_SYNC_COMMAND)
        proc.stdin.flush()
        # bounded: _watch gives up after STARTUP_TIMEOUT, and run_qtest sets the event on its way out
        if not started_up.wait(STARTUP_TIMEOUT + 1.0) or proc.poll() is not None:
            return
        for piece in pieces(payload, pacing):
            proc.stdin.write(piece)
            proc.stdin.flush()
            if pacing and pacing.pause:
                time.sleep(pacing.pause)


def pieces(payload: bytes, pacing: Pacing | None) -> list[bytes]:
    """The payload cut into the pieces a paced feed writes (one piece without pacing)."""
    if pacing is None or not payload:
        return [payload]
    return [payload[start : start + pacing.piece] for start in range(0, len(payload), pacing.piece)]


def _watch(
    proc: subprocess.Popen[bytes],
    expected: int,
    linger: float,
    stall_timeout: float,
    started_up: threading.Event | None = None,
) -> tuple[int, int | str | None, float | None]:
    """Count replies until all came (then linger), QEMU exited, or it stalled.

    ``started_up`` is set at the first reply (the sync command's): the writer waits for it.

    Returns (replies, status, all_answered_at): status is QEMU's return code
    (negative: signal) if it exited, ``"stalled"`` if it stopped answering,
    None if it was still alive and well at the end; ``all_answered_at`` the
    monotonic time the last reply came (None if it never did).
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    replies = 0
    last_progress = time.monotonic()
    first_deadline = last_progress + STARTUP_TIMEOUT
    answered_at: float | None = None
    while True:
        now = time.monotonic()
        if replies >= expected and answered_at is None:
            answered_at = now
        if answered_at is not None:
            timeout = answered_at + linger - now
            if timeout <= 0:
                return replies, proc.poll(), answered_at
        elif replies == 0:
            timeout = first_deadline - now
        else:
            timeout = last_progress + stall_timeout - now
        if timeout <= 0:
            code = proc.poll()
            return replies, code if code is not None else ("stalled" if replies else None), answered_at
        ready, _, _ = select.select([fd], [], [], min(timeout, 0.5))
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:  # EOF: QEMU is gone (or closed stdout, which it only does when exiting)
            return replies, proc.wait(), answered_at
        replies += chunk.count(b"\n")
        if replies and started_up is not None:
            started_up.set()
        last_progress = time.monotonic()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
