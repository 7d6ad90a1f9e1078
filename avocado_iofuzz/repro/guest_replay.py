"""Replays inside a guest: an op list through ``iofuzz-exec --script``, or a whole trace again.

Both run on any :class:`~avocado_iofuzz.vm.interface.GuestVM` (avocado-vt's VM
in the test, a bare QEMU from the CLI) and start from a fresh machine
(``restart``) so the devices hold no state from an earlier attempt.

*Op lists* (minimization's candidates, a reproducer) go to the guest as a
here-document the executor reads whole before its first access, and run
with a progress mark every ``report_every`` ops: QEMU dying is a crash (its
exit status and stderr give the signature), no mark for ``hang_timeout``
seconds a hang. Every kind replays this way: port I/O, MMIO at the
guest-physical addresses the run used, PCI config as 0xcf8/0xcfc cycles.

*A trace* is run again as it ran: the same plans (seed, ranges, fuzz
counts) under the campaign's own watchdog, up to the finding's range, into
a trace of its own.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aexpect

from avocado_iofuzz.campaign.runner import Campaign, CampaignConfig, CampaignError
from avocado_iofuzz.campaign.trace import TraceWriter
from avocado_iofuzz.executor.protocol import DEFAULT_BINARY, Done, ExecError, Progress, Ready, parse_line
from avocado_iofuzz.model.program import Op
from avocado_iofuzz.repro.extract import Extracted
from avocado_iofuzz.repro.qtest_ops import format_script
from avocado_iofuzz.repro.signature import HANG, NO_CRASH, CrashSignature, signature_of_exit
from avocado_iofuzz.vm.interface import GuestVM

LOG = logging.getLogger("avocado.test.iofuzz")

SCRIPT_END = "IOFUZZ_SCRIPT"
DEFAULT_GUEST_REPORT_EVERY = 64


class GuestReplayError(RuntimeError):
    """An in-guest replay could not run (no login, executor refused the script...)."""


@dataclass(frozen=True)
class GuestOutcome:
    signature: CrashSignature
    ops: int
    done: int  # ops the executor confirmed with progress marks
    elapsed: float
    detail: str = ""


def guest_script_command(ops: Sequence[Op], executor: str = DEFAULT_BINARY, report_every: int = 64) -> str:
    """The shell command that replays ``ops`` in a guest: the executor reading a here-document.

    Every kind replays: port I/O, MMIO (the executor maps each page through
    its BAR's sysfs file or /dev/mem) and PCI config (0xcf8/0xcfc cycles).
    """
    body = format_script(ops)
    return f"{executor} --report-every {report_every} --script - <<'{SCRIPT_END}'\n{body}{SCRIPT_END}"


def guest_script_file(ops: Sequence[Op], executor: str = DEFAULT_BINARY) -> str:
    """A shell script for people: run it inside an iofuzz guest of the same configuration."""
    return (
        "#!/bin/sh\n"
        "# Replays an iofuzz reproducer inside a guest booted with iofuzz.guest=1 on its kernel\n"
        "# command line (the executor refuses to touch ports anywhere else), on the same\n"
        "# machine and devices as the run that found it (see reproducer.sh for the QEMU args).\n"
        f"exec {guest_script_command(ops, executor, report_every=1)}\n"
    )


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
    ) -> None:
        self.vm = vm
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
        command = guest_script_command(ops, self.executor, self.report_every)
        if fresh:
            self.fresh_machine()
        self.runs += 1
        started = self.clock()
        try:
            session = self.vm.login(self.login_timeout)
        except Exception as err:  # aexpect and avocado-vt raise many classes for "no shell"
            if not self.vm.is_alive():
                return self._death(len(ops), 0, started)
            raise GuestReplayError(f"no shell in the replay guest: {err}") from err
        try:
            return self._watch(session, command, len(ops), started)
        finally:
            with contextlib.suppress(Exception):  # a dead console cannot be closed cleanly
                session.close()

    def _watch(self, session: Any, command: str, total: int, started: float) -> GuestOutcome:
        session.sendline(command)
        done = 0
        last_progress = self.clock()
        # the script crosses the serial console before the executor's READY: that upload is
        # no op's doing, so until READY the limit is the upload's, not the hang timeout
        limit = upload_timeout(command, self.hang_timeout)
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
                message = parse_line(line)
                if isinstance(message, Ready):
                    last_progress, limit = self.clock(), self.hang_timeout
                elif isinstance(message, Progress):
                    done = message.ops_done
                    last_progress = self.clock()
                elif isinstance(message, Done):
                    return self._after_done(total, started)
                elif isinstance(message, ExecError):
                    raise GuestReplayError(f"the in-guest executor refused the script: {message.message}")
            if not self.vm.is_alive():
                return self._death(total, done, started)
            if self.clock() - last_progress > limit:
                detail = f"no progress for {limit:.0f} s after op {done}"
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
        if key not in ("format", "generator", "seed", "fuzz_count", "ranges") and not key.startswith("replay")
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
