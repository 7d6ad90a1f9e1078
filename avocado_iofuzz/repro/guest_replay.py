"""Replays inside a guest: an op list through ``iofuzz-exec --script``, or a whole trace again.

Both run on any :class:`~avocado_iofuzz.vm.interface.GuestVM` (avocado-vt's VM
in the test, a bare QEMU from the CLI) and start from a fresh machine
(``restart``) so the devices hold no state from an earlier attempt.

*Op lists* (minimization's candidates, a reproducer) go to the guest as a
qtest script over the serial console: ``cat`` writes it to a file with the
console's echo off, the guest checks its MD5 against the host's, and only an
intact script reaches the executor, which parses it whole before its first
access and runs it with a progress mark every ``report_every`` ops. QEMU
dying is a crash (its exit status and stderr give the signature), no mark
for ``hang_timeout`` seconds a hang. Every kind replays this way: port I/O,
MMIO at the guest-physical addresses the run used, PCI config as
0xcf8/0xcfc cycles.

Why a checked file and not a here-document: a here-document is read by the
shell's line editor, which echoes every line back; the e1000e finding's
18 MB candidate arrived mangled (two lines run together at line 50,241, so
the executor refused ``writel`` with three arguments). Scripts above
``max_script_bytes`` are refused before any upload: at the slowest console
measured (~5 kB/s) they would take longer than the whole in-guest budget.

*A candidate too big for the console* that is one contiguous run of the
trace's plans (the ``since-reset`` ops of a run without restarts) needs no
upload: the executor generates those ops itself from the trace's seed
(:func:`regenerating_command`), exactly as in the run, from the span's first
op on to the end of its last range.

*A trace* is run again as it ran: the same plans (seed, ranges, fuzz
counts) under the campaign's own watchdog, up to the finding's range, into
a trace of its own.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aexpect

from avocado_iofuzz.campaign.runner import Campaign, CampaignConfig, CampaignError
from avocado_iofuzz.campaign.trace import WRITER_HEADER_KEYS, TraceWriter
from avocado_iofuzz.executor.protocol import (
    DEFAULT_BINARY,
    Done,
    ExecError,
    Progress,
    Ready,
    clean_line,
    executor_command,
    parse_line,
)
from avocado_iofuzz.model.program import Op, RangePlan
from avocado_iofuzz.repro.extract import Extracted
from avocado_iofuzz.repro.qtest_ops import qtest_commands
from avocado_iofuzz.repro.signature import HANG, NO_CRASH, CrashSignature, signature_of_exit
from avocado_iofuzz.vm.interface import GuestVM
from avocado_iofuzz.vm.monitor_probe import probe_monitor

LOG = logging.getLogger("avocado.test.iofuzz")

SCRIPT_END = "IOFUZZ_SCRIPT"
DEFAULT_GUEST_REPORT_EVERY = 64
GUEST_SCRIPT_PATH = "/tmp/iofuzz-replay.qtest"
DEFAULT_MAX_SCRIPT_BYTES = 1_000_000  # ~200 s at the slowest console measured
# the guest prints these; the command line that prints them quotes them apart, so that the
# console's echo of the command is never taken for them
UPLOAD_READY = "@IOFUZZ-UPLOAD"
UPLOAD_BROKEN = "@IOFUZZ-UPLOAD-BROKEN"
END_OF_FILE = "\x04"  # ^D at the start of a line: end of cat's input on a tty in canonical mode


class GuestReplayError(RuntimeError):
    """An in-guest replay could not run (no login, executor refused the script...)."""


@dataclass(frozen=True)
class GuestOutcome:
    signature: CrashSignature
    ops: int
    done: int  # ops the executor confirmed with progress marks, counted as ``ops`` is (an op of the list is one)
    elapsed: float
    detail: str = ""


class ScriptProgress:
    """The executor's progress through a script (its lines) as ops of the list the script was made of.

    A script line is one access; a PCI config op takes two (the 0xcf8 address
    write, then the 0xcfc data access), every other op one. An op counts as
    done once all its lines ran.
    """

    def __init__(self, ops: Sequence[Op]) -> None:
        self.op_ends = list(itertools.accumulate(len(qtest_commands(op)) for op in ops))

    def ops_done(self, lines_done: int) -> int:
        return bisect.bisect_right(self.op_ends, lines_done)


def guest_script(ops: Sequence[Op]) -> str:
    """The ops as the in-guest executor's ``--script`` reads them: one access per line, newline-terminated.

    Not :func:`~avocado_iofuzz.repro.qtest_ops.format_script`: that one folds
    scratch-memory fills into ``write ADDR LEN 0xDATA`` lines of up to 8 KiB
    for QEMU, which the executor's parser (256-character lines, accesses
    only) refuses; here a fill stays what the guest does, ``writeq`` per word.
    """
    return "".join(line + "\n" for op in ops for line in qtest_commands(op))


def guest_script_command(ops: Sequence[Op], executor: str = DEFAULT_BINARY, report_every: int = 64) -> str:
    """The shell command that replays ``ops`` in a guest: the executor reading a here-document.

    Every kind replays: port I/O, MMIO (the executor maps each page through
    its BAR's sysfs file or /dev/mem) and PCI config (0xcf8/0xcfc cycles).
    """
    body = guest_script(ops)
    return f"{executor} --report-every {report_every} --script - <<'{SCRIPT_END}'\n{body}{SCRIPT_END}"


def guest_script_file(ops: Sequence[Op], executor: str = DEFAULT_BINARY, command: str = "") -> str:
    """A shell script for people: run it inside an iofuzz guest of the same configuration.

    ``command``: an executor command that generates the ops itself (see
    :func:`regenerating_command`), handed over instead of the ops as a script.
    """
    how = (
        f"# The executor generates the {len(ops)} ops itself from the run's seed, as it did in the run.\n"
        if command
        else ""
    )
    return (
        "#!/bin/sh\n"
        "# Replays an iofuzz reproducer inside a guest booted with iofuzz.guest=1 on its kernel\n"
        "# command line (the executor refuses to touch ports anywhere else), on the same\n"
        "# machine and devices as the run that found it (see triage.json for the QEMU command line).\n"
        f"{how}"
        f"exec {command or guest_script_command(ops, executor, report_every=1)}\n"
    )


def _quoted_apart(token: str) -> str:
    """``"@IOFUZZ""-UPLOAD"``: the shell prints the token, the echoed command line does not hold it."""
    head, tail = token.split("-", 1)
    return f'"{head}""-{tail}"'


def checked_upload_command(script: str, executor: str = DEFAULT_BINARY, report_every: int = 64) -> str:
    """The shell line that takes ``script`` from the console into a file and runs it only if intact.

    It turns the console's echo off, prints :data:`UPLOAD_READY` and ``cat``s
    the console into :data:`GUEST_SCRIPT_PATH` until ^D; then the executor
    runs the file if its MD5 is the host's, else the guest prints
    :data:`UPLOAD_BROKEN` with the MD5 and size that arrived.
    """
    digest = hashlib.md5(script.encode("ascii")).hexdigest()
    path = GUEST_SCRIPT_PATH
    return (
        f"stty -echo; echo {_quoted_apart(UPLOAD_READY)}; cat > {path}; stty echo; "
        f"sum=$(md5sum < {path}); "
        f'if [ "${{sum%% *}}" = {digest} ]; then {executor} --report-every {report_every} --script {path}; '
        f'else echo {_quoted_apart(UPLOAD_BROKEN)} "${{sum%% *}}" "$(wc -c < {path})"; fi'
    )


def regenerating_command(
    plans: dict[int, RangePlan],
    spans: Sequence[tuple[int, int, int]],
    executor: str = DEFAULT_BINARY,
    report_every: int = DEFAULT_GUEST_REPORT_EVERY,
    pci_restore: bool = True,
) -> str | None:
    """The executor command that generates the ops of ``spans`` in the guest, or None if no single one can.

    ``pci_restore``: whether the run's executor put pci headers back (it then does so here too).

    It can when the spans are one run in the plans' order: the first may
    start anywhere (``--resume``), every other starts at its range's first op
    and every one but the last runs to its range's end. The executor then
    runs on to the end of the last span's range: ops after a crash never run,
    and without one, a few more ops of the finding's range do no harm.
    """
    if not spans:
        return None
    order = sorted(plans)
    indexes = [index for index, _, _ in spans]
    if any(index not in plans for index in indexes):
        return None
    start = order.index(indexes[0])
    if indexes != order[start : start + len(indexes)]:
        return None
    inner_starts_at_zero = all(first == 0 for _, first, _ in spans[1:])
    inner_run_to_end = all(stop == plans[index].op_count for index, _, stop in spans[:-1])
    if not (inner_starts_at_zero and inner_run_to_end):
        return None
    chosen = [plans[index] for index in indexes]
    resume = (indexes[0], spans[0][1]) if spans[0][1] else None
    return executor_command(
        chosen, report_every=report_every, resume=resume, binary=executor, pci_restore=pci_restore
    )


class ScriptTooBig(GuestReplayError):
    """An op list whose script the serial console would carry too slowly to be worth trying."""


# the slowest console measured carries ~5 kB/s of a here-document (115200 baud, echoed)
UPLOAD_BYTES_PER_SECOND = 5000


def upload_timeout(command: str, hang_timeout: float) -> float:
    """Seconds a script may take to reach the executor: its size at the slowest console, plus the hang timeout."""
    return hang_timeout + len(command) / UPLOAD_BYTES_PER_SECOND


class GuestReplayer:
    """Runs op lists in fresh guests of one VM; the judge of in-guest minimization."""

    def __init__(
        self,
        vm: GuestVM,
        *,
        executor: str = DEFAULT_BINARY,
        hang_timeout: float = 20.0,
        login_timeout: float = 60.0,
        report_every: int = DEFAULT_GUEST_REPORT_EVERY,
        linger: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        max_script_bytes: int = DEFAULT_MAX_SCRIPT_BYTES,
    ) -> None:
        self.vm = vm
        self.max_script_bytes = max_script_bytes
        self.executor = executor
        self.hang_timeout = hang_timeout
        self.login_timeout = login_timeout
        self.report_every = report_every
        self.linger = linger
        self.clock = clock
        self.runs = 0

    def fresh_machine(self) -> None:
        """A new QEMU for the next attempt: no device state, no hung vCPU, no dead process."""
        self.vm.restart()

    def run_ops(self, ops: Sequence[Op], fresh: bool = True) -> GuestOutcome:
        script = guest_script(ops)
        if len(script) > self.max_script_bytes:
            raise ScriptTooBig(
                f"{len(ops)} ops make a {len(script) / 1e6:.1f} MB script, more than the "
                f"{self.max_script_bytes / 1e6:.1f} MB the serial console carries in reasonable time"
            )
        command = checked_upload_command(script, self.executor, self.report_every)
        return self._run(command, script, len(ops), fresh, ScriptProgress(ops).ops_done)

    def run_command(self, command: str, total: int, fresh: bool = True) -> GuestOutcome:
        """Run an executor command that needs no upload (see :func:`regenerating_command`), judged like ``run_ops``.

        Its progress marks count the ops of the range running (as the trace does), which ``done`` reports.
        """
        return self._run(command, "", total, fresh, lambda ops_done: ops_done)

    def _run(
        self, command: str, script: str, total: int, fresh: bool, ops_done: Callable[[int], int]
    ) -> GuestOutcome:
        if fresh:
            self.fresh_machine()
        self.runs += 1
        started = self.clock()
        try:
            session = self.vm.login(self.login_timeout)
        except Exception as err:  # aexpect and avocado-vt raise many classes for "no shell"
            if not self.vm.is_alive():
                return self._death(total, 0, started)
            raise GuestReplayError(f"no shell in the replay guest: {err}") from err
        try:
            return self._watch(session, command, script, total, started, ops_done)
        finally:
            with contextlib.suppress(Exception):  # a dead console cannot be closed cleanly
                session.close()

    def _watch(
        self, session: Any, command: str, script: str, total: int, started: float, ops_done: Callable[[int], int]
    ) -> GuestOutcome:
        session.sendline(command)
        done = 0
        last_progress = self.clock()
        # until the guest is ready for the script, the hang timeout; then the script crosses
        # the serial console before the executor's READY: that upload is no op's doing, so
        # until READY the limit is the upload's
        limit = self.hang_timeout
        pending = ""
        while True:
            try:
                pending += session.read_nonblocking(internal_timeout=0.02, timeout=0.5)
            except aexpect.ExpectError:
                if not self.vm.is_alive():
                    return self._death(total, done, started)
                time.sleep(0.2)
            *lines, pending = pending.replace("\r", "").split("\n")
            for line in lines:
                shown = clean_line(line).strip()
                if shown == UPLOAD_READY:
                    session.send(script + END_OF_FILE)
                    last_progress, limit = self.clock(), upload_timeout(script, self.hang_timeout)
                    continue
                if shown.startswith(UPLOAD_BROKEN):
                    arrived = shown[len(UPLOAD_BROKEN) :].split()
                    raise GuestReplayError(
                        f"the serial console did not carry the script intact (sent {len(script)} bytes, "
                        f"MD5 {hashlib.md5(script.encode('ascii')).hexdigest()}; arrived: {' '.join(arrived)})"
                    )
                message = parse_line(line)
                if isinstance(message, Ready):
                    last_progress, limit = self.clock(), self.hang_timeout
                elif isinstance(message, Progress):
                    done = ops_done(message.ops_done)  # the executor's count: script lines, or a range's ops
                    last_progress = self.clock()
                elif isinstance(message, Done):
                    return self._after_done(total, started)
                elif isinstance(message, ExecError):
                    raise GuestReplayError(f"the in-guest executor refused the script: {message.message}")
            if not self.vm.is_alive():
                return self._death(total, done, started)
            if self.clock() - last_progress > limit:
                detail = f"no progress for {limit:.0f} s after op {done}"
                probe = probe_monitor(self.vm)  # a QEMU hang or a guest hang (see vm/monitor_probe.py)
                if probe is not None:
                    detail += f"; {probe.describe()}"
                return GuestOutcome(HANG, total, done, self.clock() - started, detail)

    def _after_done(self, total: int, started: float) -> GuestOutcome:
        # some aborts come from timers and bottom halves armed by the last ops
        deadline = self.clock() + self.linger
        while self.clock() < deadline:
            if not self.vm.is_alive():
                return self._death(total, total, started)
            time.sleep(0.05)
        return GuestOutcome(NO_CRASH, total, total, self.clock() - started, "all ops done")

    def _death(self, total: int, done: int, started: float) -> GuestOutcome:
        info = None
        deadline = self.clock() + 5.0
        while info is None and self.clock() < deadline:
            info = self.vm.exit_info()
            if info is None:
                time.sleep(0.1)
        signature = signature_of_exit(info) if info is not None else signature_of_exit({})
        return GuestOutcome(signature, total, done, self.clock() - started, info.describe() if info else "QEMU gone")


def replay_trace_in_guest(
    vm: GuestVM, extracted: Extracted, outdir: Path, config: CampaignConfig, fresh: bool = True
) -> tuple[GuestOutcome, Path]:
    """Run the trace's plans again (up to the finding's range) under the campaign; a trace of its own.

    Returns the outcome (crash signature, a hang in the finding's range, or
    nothing) and the replay's trace path.
    """
    finding = extracted.finding
    plans = [extracted.plans[i] for i in sorted(extracted.plans) if i <= finding.range_index]
    outdir.mkdir(parents=True, exist_ok=True)
    path = _fresh_name(outdir / "replay-trace.iofuzz")
    header = {
        key: value
        for key, value in extracted.header.items()
        if key not in (*WRITER_HEADER_KEYS, "seed", "fuzz_count", "ranges") and not key.startswith("replay")
    }
    header["replay_of"] = str(extracted.trace_path)
    header["qemu_cmdline"] = vm.qemu_cmdline()
    if fresh:
        vm.restart()
    started = time.monotonic()
    with TraceWriter(path, header, plans) as trace:
        campaign = Campaign(vm, plans, trace, config)
        try:
            result = campaign.run()
        except CampaignError as err:
            raise GuestReplayError(f"the replay campaign could not run: {err}") from err
    elapsed = time.monotonic() - started
    total = sum(p.op_count for p in plans)
    done = result.total_done
    if result.crashed:
        crash = next(f for f in result.findings if f.kind == "crash")
        return GuestOutcome(signature_of_exit(result.qemu_exit), total, done, elapsed, crash.detail), path
    same_range = [f for f in result.findings if f.kind in ("hang", "reboot") and f.range_index == finding.range_index]
    if same_range:
        hang = same_range[0]
        detail = f"{hang.kind} in {hang.range_name} ops [{hang.window[0]}, {hang.window[1]})"
        return GuestOutcome(HANG, total, done, elapsed, detail), path
    other = ", ".join(f"{f.kind} in {f.range_name}" for f in result.findings) or "no finding"
    return GuestOutcome(NO_CRASH, total, done, elapsed, other), path


def _fresh_name(path: Path) -> Path:
    """``path``, or ``path`` with -2, -3... if taken: traces are never overwritten."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate
