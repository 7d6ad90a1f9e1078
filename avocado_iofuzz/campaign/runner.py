"""Drive a fuzz plan on one VM: feed the executor, watch progress, survive hangs.

The campaign owns the watchdog. It starts the in-guest executor over the
serial session, turns its progress lines into trace marks, and decides what
a silence means:

* QEMU gone          -> a *crash* finding; the run ends (nothing to go on with).
* guest rebooted     -> a *reboot* finding; log in again and go on.
* no progress for ``hang_timeout`` s with QEMU alive -> a *hang* finding; log
  in again if the guest still answers, else ``system_reset`` and log in, else
  restart QEMU (same command line, fresh device state) and log in; then go on
  right after the window that hung.

A window is the ops between the last progress mark and the next one the
executor would have printed (it reports at multiples of ``report_every``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import aexpect

from avocado_iofuzz.campaign.tally import RangeTally
from avocado_iofuzz.executor.protocol import (
    DEFAULT_BINARY,
    Done,
    ExecError,
    Hang,
    Progress,
    ReadBack,
    Ready,
    Restore,
    Saved,
    executor_command,
    inflight_window,
    parse_line,
)
from avocado_iofuzz.model import pci_restore
from avocado_iofuzz.model.program import SPACE_PCI, RangePlan
from avocado_iofuzz.vm.interface import GuestVM, QemuExit
from avocado_iofuzz.vm.monitor_probe import PROBE_TIMEOUT, probe_monitor

LOG = logging.getLogger("avocado.test.iofuzz")

# Lines that only a booting guest prints: seeing one while the executor runs
# means the guest reset itself (triple fault, reset port, watchdog...).
REBOOT_MARKERS = ("Linux version ", "Booting the kernel", "Run /init as init process")


class CampaignError(RuntimeError):
    """The campaign could not run at all (executor refused, no login)."""


@dataclass(frozen=True)
class CampaignConfig:
    report_every: int = 4096
    hang_timeout: float = 20.0
    max_hangs: int = 10
    login_timeout: float = 60.0
    relogin_timeout: float = 3.0  # a live shell answers Enter in milliseconds
    progress_log_interval: float = 5.0
    executor: str = DEFAULT_BINARY
    hang_at: tuple[int, int] | None = None  # fault injection, selftests only
    # After QEMU died, the console may still hold marks the executor drained
    # to the UART before the end: read them (this long at most) to narrow the window.
    death_drain_timeout: float = 2.0
    # After @DONE, watch QEMU this long: a timer the last ops armed may still fire
    # (edu's DMA 100 ms later, e1000e's interrupt throttling) and kill it.
    done_linger: float = 1.0
    # the executor puts each pci range's function header (BARs, command...) back when it leaves the range
    pci_restore: bool = True
    # at a hang, how long QEMU's monitor gets to answer (vm/monitor_probe.py): silence means QEMU hangs
    monitor_probe_timeout: float = PROBE_TIMEOUT
    # the executor reports what each range's reads returned (@RB): guided rounds' device-state signal
    readback: bool = False


class TraceSink(Protocol):
    """What a campaign writes its trace through: a TraceWriter, or a view of one (guided rounds renumber ranges)."""

    def write_batches(self, batches: Iterable[tuple[RangePlan, int, int]], *, listed: bool = False) -> None: ...
    def progress(self, range_index: int, ops_done: int) -> None: ...
    def event(self, kind: str, /, **data: Any) -> None: ...


class ProgressObserver(Protocol):
    """Told of the run's start, each progress mark and its end (the coverage collector is one)."""

    def start(self, plans: Sequence[RangePlan]) -> None: ...
    def progress(self, range_index: int, ops_done: int) -> None: ...
    def finish(self) -> None: ...


@dataclass
class Finding:
    kind: str  # "hang", "reboot" or "crash"
    range_index: int
    range_name: str
    range_span: str
    window: tuple[int, int]  # ops [first, stop) of that range
    detail: str = ""
    qemu_exit: dict[str, Any] | None = None
    op: int | None = None  # the op the executor named (@HANG) as where it stopped; None: somewhere in window


@dataclass
class CampaignResult:
    """What a campaign did. ``tallies`` hold the spans behind the counts (see :mod:`avocado_iofuzz.campaign.tally`).

    A result built by hand without tallies (benchmarks, tests) counts ``ops_done`` as ops ``0..ops_done-1``.
    """

    ops_done: dict[int, int] = field(default_factory=dict)  # range index -> ops confirmed
    ops_skipped: dict[int, int] = field(default_factory=dict)  # ops left out after the op the executor named
    ops_unconfirmed: dict[int, int] = field(default_factory=dict)  # ops that may have run when the run stopped
    tallies: dict[int, RangeTally] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    qemu_exit: QemuExit | None = None
    stopped_early: str = ""
    elapsed: float = 0.0  # wall time of the whole run, the watch after @DONE included
    # seconds spent watching QEMU after @DONE (done_linger): a fixed cost per run, not op time
    watched_after_done: float = 0.0
    # range index -> the @RB digest its reads gave ((offset, class) pairs), with CampaignConfig.readback
    readbacks: dict[int, tuple[tuple[int, str], ...]] = field(default_factory=dict)

    @property
    def ops_elapsed(self) -> float:
        """Seconds the ops took: the run without the watch after @DONE (what an op rate divides by)."""
        return max(0.0, self.elapsed - self.watched_after_done)

    @property
    def crashed(self) -> bool:
        return self.qemu_exit is not None

    @property
    def total_done(self) -> int:
        return sum(self.ops_done.values())

    def tally(self, range_index: int) -> RangeTally:
        """The range's tally; for a result built by hand, ops ``0..ops_done-1`` confirmed."""
        if range_index in self.tallies:
            return self.tallies[range_index]
        tally = RangeTally()
        tally.confirm(0, self.ops_done.get(range_index, 0))
        return tally

    def as_dict(self) -> dict[str, Any]:
        return {
            "ops_done": {str(k): v for k, v in self.ops_done.items()},
            "ops_skipped": {str(k): v for k, v in self.ops_skipped.items()},
            "ops_unconfirmed": {str(k): v for k, v in self.ops_unconfirmed.items()},
            "findings": [asdict(f) for f in self.findings],
            "qemu_exit": asdict(self.qemu_exit) if self.qemu_exit else None,
            "stopped_early": self.stopped_early,
            "elapsed_s": round(self.elapsed, 3),
            "watched_after_done_s": round(self.watched_after_done, 3),
            "ops_per_s": round(self.total_done / self.elapsed, 1) if self.elapsed else 0.0,
        }


@dataclass(frozen=True)
class _Stop:
    """Why one executor invocation ended."""

    how: str  # "done", "hang", "reboot", "died", "error"
    detail: str = ""


def close_quietly(session: Any) -> None:
    """Close a shell session, if there is one; a dead console cannot be closed cleanly, which is no error."""
    if session is not None:
        with contextlib.suppress(Exception):
            session.close()


class Campaign:
    def __init__(
        self,
        vm: GuestVM,
        plans: Sequence[RangePlan],
        trace: TraceSink,
        config: CampaignConfig,
        clock: Callable[[], float] = time.monotonic,
        session: Any = None,
        observer: ProgressObserver | None = None,
        hand_back: bool = False,
    ) -> None:
        if not plans:
            raise CampaignError("nothing to fuzz: no port range left after skips")
        self.vm = vm
        self.plans = list(plans)
        self.trace = trace
        self.config = config
        self.clock = clock
        self.observer = observer
        self.result = CampaignResult(
            ops_done={p.index: 0 for p in plans},
            ops_skipped={p.index: 0 for p in plans},
            ops_unconfirmed={p.index: 0 for p in plans},
            tallies={p.index: RangeTally() for p in plans},
        )
        # the op the executor named with @HANG in the current invocation (range index, op index)
        self._named_stop: tuple[int, int] | None = None
        self._in_flight = False  # the executor runs, its window not booked yet (see _book_interrupted)
        # position: index into self.plans and op index within that plan
        self._range = 0
        self._op = 0
        self._session: Any = session  # a logged-in session to start with, if the caller has one
        # hand_back: a run that ends at the executor's @DONE leaves its shell open for the caller's next
        # campaign (guided rounds: a login per round was ~10 % of a round's wall time); else it is closed
        self._hand_back = hand_back
        self.handed_back: Any = None
        # range index -> the header the executor saved entering that pci range (handed back on a resume into it)
        self._saved: dict[int, Saved] = {}
        self._started = 0.0
        self._last_log = 0.0
        # the executor numbers ranges by their place in its argument list
        if [p.index for p in self.plans] != list(range(len(self.plans))):
            raise CampaignError("range plans must be numbered 0..n-1 in order")

    # -- public -----------------------------------------------------------
    def run(self) -> CampaignResult:
        if self.observer is not None:
            # before the clock starts: its idle baseline is no fuzzing time
            self.observer.start(self.plans)
        start = self.clock()
        self._started = self._last_log = start
        ended_at_done = False
        try:
            # write-ahead: every op is in the trace before the first one runs (one fsync)
            self.trace.write_batches((plan, 0, plan.op_count) for plan in self.plans)
            if self._session is None:
                self._session = self._login(self.config.login_timeout)
            while not self._finished():
                hangs = sum(f.kind in ("hang", "reboot") for f in self.result.findings)
                if hangs >= self.config.max_hangs:
                    self.result.stopped_early = f"stopped after {hangs} hangs/reboots (max_hangs)"
                    self.trace.event("stop", reason=self.result.stopped_early)
                    break
                stop = self._execute()
                self._in_flight = False  # each way out books the window itself
                if stop.how == "done":
                    watch_started = self.clock()
                    died = self._dies_after_done()
                    self.result.watched_after_done = self.clock() - watch_started
                    if died:
                        self._record_crash()  # the last ops are the window (see _window)
                    break
                if stop.how == "error":
                    raise CampaignError(f"the in-guest executor failed: {stop.detail}")
                if stop.how == "died":
                    self._book_window(resumes=False)
                    self._record_crash()
                    break
                self._record_window(stop)
                if not self._recover(stop):
                    break
            # the shell is back at its prompt after a clean @DONE: only then is it worth handing on
            ended_at_done = self._finished() and not self.result.crashed and not self.result.stopped_early
        except BaseException as cut:
            if not isinstance(cut, Exception):
                self._book_interrupted(cut)
            raise
        finally:
            self.result.elapsed = self.clock() - start
            if self.observer is not None:
                self.observer.finish()
            if self._hand_back and ended_at_done:
                self.handed_back, self._session = self._session, None
            self._close_session()
        return self.result

    # -- one executor invocation -----------------------------------------------
    def _execute(self) -> _Stop:
        hang_at = self.config.hang_at
        if hang_at is not None and hang_at < (self._range, self._op):
            hang_at = None  # already injected and survived: go on without it
        command = executor_command(
            self.plans,
            report_every=self.config.report_every,
            resume=(self._range, self._op),
            hang_at=hang_at,
            binary=self.config.executor,
            pci_restore=self.config.pci_restore,
            pci_saved=self._saved_for_resume(),
            readback=self.config.readback,
        )
        restoring = {}
        if any(plan.space == SPACE_PCI for plan in self.plans):
            restoring[pci_restore.START_KEY] = self.config.pci_restore  # replays do as the run did
        self.trace.event("start", range=self.plans[self._range].index, op=self._op, **restoring)
        self._named_stop = None
        LOG.debug("executor: %s", command)
        self._in_flight = True
        self._session.sendline(command)
        last_progress = self.clock()
        pending = ""
        while True:
            try:
                pending += self._session.read_nonblocking(internal_timeout=0.02, timeout=0.5)
            except aexpect.ExpectError:
                # the console went away: only a dead QEMU does that
                if not self.vm.is_alive():
                    return self._died(pending)
                time.sleep(0.2)
            *lines, pending = pending.replace("\r", "").split("\n")
            for line in lines:
                if any(marker in line for marker in REBOOT_MARKERS):
                    return _Stop("reboot", line.strip())
                message = parse_line(line)
                if isinstance(message, Progress | Hang):
                    self._count(message)
                    last_progress = self.clock() if isinstance(message, Progress) else last_progress
                elif isinstance(message, Ready):
                    last_progress = self.clock()
                elif isinstance(message, Restore):
                    self._record_restore(message)
                elif isinstance(message, Saved):
                    self._saved[message.range_index] = message
                elif isinstance(message, ReadBack):
                    self.result.readbacks[message.range_index] = message.pairs
                elif isinstance(message, Done):
                    return _Stop("done")
                elif isinstance(message, ExecError):
                    return _Stop("error", message.message)
            if not self.vm.is_alive():
                return self._died(pending)
            now = self.clock()
            if now - last_progress > self.config.hang_timeout:
                return _Stop("hang", f"no progress for {now - last_progress:.1f} s")
            if now - self._last_log >= self.config.progress_log_interval:
                self._log_progress(now)

    def _book_interrupted(self, cut: BaseException) -> None:
        """The test was cut (its time limit, an interrupt) while the executor ran: count the window in flight.

        What the marks confirmed is counted already; the ops after the last
        mark may have run (or, with the op the executor named, the ones before
        it did). The trace says the run stopped here.
        """
        if not self._in_flight:
            return
        self._in_flight = False
        self._book_window(resumes=False)
        self.result.stopped_early = f"interrupted: {cut}" if str(cut) else f"interrupted ({type(cut).__name__})"
        self.trace.event("stop", reason=self.result.stopped_early)

    def _dies_after_done(self) -> bool:
        # counted in sleeps, not on self.clock: nothing else advances a test's fake clock now
        for _ in range(max(1, round(self.config.done_linger / 0.05))):
            if not self.vm.is_alive():
                LOG.error("QEMU died after the executor's last op")
                return True
            time.sleep(0.05)
        return False

    def _count(self, message: Progress | Hang) -> None:
        if isinstance(message, Progress):
            self._advance(message)
        else:
            LOG.warning("executor injects a hang at op %d of range %d", message.op_index, message.range_index)
            self._named_stop = (message.range_index, message.op_index)

    def _died(self, pending: str) -> _Stop:
        """QEMU is gone: count the marks still in the console, then say so.

        The executor drains each mark to the UART before its next op, so a
        mark QEMU emitted is in the console's buffer even when the campaign
        had not read it yet; without it the window would start too early.
        """
        deadline = self.clock() + self.config.death_drain_timeout
        while self.clock() < deadline:
            try:
                chunk = self._session.read_nonblocking(internal_timeout=0.2, timeout=0.5)
            except aexpect.ExpectError:  # the console's helper ended: all of it was read
                chunk = ""
            *lines, pending = (pending + chunk.replace("\r", "")).split("\n")
            for line in lines:
                message = parse_line(line)
                if isinstance(message, Progress | Hang):
                    self._count(message)
                elif isinstance(message, Restore):
                    self._record_restore(message)
                elif isinstance(message, Saved):
                    self._saved[message.range_index] = message
            if not chunk:  # nothing came for 0.2 s after QEMU's end: the buffer is empty
                break
        return _Stop("died")

    def _advance(self, progress: Progress) -> None:
        plan = self._plan_by_index(progress.range_index)
        self.trace.progress(plan.index, progress.ops_done)
        if self.observer is not None:
            self.observer.progress(plan.index, progress.ops_done)
        position = self.plans.index(plan)
        if position == self._range and progress.ops_done >= self._op:
            # the ops since the previous mark of this range ran
            self.result.tallies[plan.index].confirm(self._op, progress.ops_done)
            self._sync_counts(plan)
        if progress.ops_done >= plan.op_count:
            self._range, self._op = position + 1, 0
        else:
            self._range, self._op = position, progress.ops_done

    def _saved_for_resume(self) -> Saved | None:
        """The header saved on entering the range the executor resumes in the middle of: it may be half fuzzed now."""
        plan = self.plans[self._range]
        if not self.config.pci_restore or self._op == 0 or plan.space != SPACE_PCI:
            return None
        return self._saved.get(plan.index)

    def _record_restore(self, message: Restore) -> None:
        """The executor is putting a pci range's header back: config writes replays must make too."""
        plan = self._plan_by_index(message.range_index)
        writes = pci_restore.event_writes(plan.start, message.writes)
        self.trace.event(pci_restore.RESTORE_EVENT, range=plan.index, op=message.op_index, writes=writes)

    # -- findings -----------------------------------------------------------
    def _window(self) -> tuple[RangePlan, tuple[int, int]]:
        if self._finished():
            # every op was confirmed, yet QEMU died (before or after @DONE): a device
            # timer the last ops armed fired late; those last ops are the window
            plan = self.plans[-1]
            return plan, (max(0, plan.op_count - self.config.report_every), plan.op_count)
        plan = self.plans[self._range]
        return plan, inflight_window(plan, self._op, self.config.report_every)

    def _named_op(self) -> int | None:
        """The op in the current window the executor said it stopped at (@HANG), if it said so."""
        plan, (first, stop) = self._window()
        if self._named_stop is None or self._named_stop[0] != plan.index:
            return None
        op = self._named_stop[1]
        return op if first <= op < stop else None

    def _book_window(self, resumes: bool) -> None:
        """Count the ops of the window in flight when the run stopped (before the position moves on).

        With the op the executor named, the ops before it ran, and, if the
        campaign resumes after the window, the rest is left out. Without it,
        any op of the window from the last mark on may have run.
        """
        if self._finished():  # the last range's end mark came in: no window was in flight
            return
        plan, (first, stop) = self._window()
        tally = self.result.tallies[plan.index]
        named = self._named_op()
        if named is None:
            tally.leave_unconfirmed(first, stop)
        else:
            tally.confirm(first, named)
            if resumes:
                tally.skip(named, stop)
        self._sync_counts(plan)

    def _sync_counts(self, plan: RangePlan) -> None:
        tally = self.result.tallies[plan.index]
        self.result.ops_done[plan.index] = tally.ops_confirmed
        self.result.ops_skipped[plan.index] = tally.ops_skipped
        self.result.ops_unconfirmed[plan.index] = tally.ops_unconfirmed

    def _record_window(self, stop: _Stop) -> None:
        plan, window = self._window()
        span = f"{plan.start:#06x}-{plan.end:#06x}"
        op = self._named_op()
        detail, probed = stop.detail, {}
        if stop.how == "hang":
            # before any recovery touches the machine: is QEMU's main loop stuck, or only the guest?
            probe = probe_monitor(self.vm, self.config.monitor_probe_timeout)
            if probe is not None:
                detail, probed = f"{detail}; {probe.describe()}", {"monitor": probe.as_dict()}
        finding = Finding(stop.how, plan.index, plan.name, span, window, detail, op=op)
        self.result.findings.append(finding)
        self.trace.event(stop.how, range=plan.index, window=list(window), detail=detail, op=op, **probed)
        LOG.warning("%s in range %s (%s) ops [%d, %d): %s", stop.how, plan.name, span, *window, stop.detail)

    def _record_crash(self) -> None:
        plan, window = self._window()
        op = self._named_op()
        exit_info = self._wait_exit_info()
        self.result.qemu_exit = exit_info
        finding = Finding(
            "crash",
            plan.index,
            plan.name,
            f"{plan.start:#06x}-{plan.end:#06x}",
            window,
            exit_info.describe(),
            asdict(exit_info),
            op=op,
        )
        self.result.findings.append(finding)
        self.trace.event("crash", range=plan.index, window=list(window), qemu_exit=asdict(exit_info), op=op)
        LOG.error("QEMU died in range %s ops [%d, %d): %s", plan.name, *window, exit_info.describe())

    def _wait_exit_info(self, timeout: float = 5.0) -> QemuExit:
        deadline = self.clock() + timeout
        while True:
            info = self.vm.exit_info()
            if info is not None or self.clock() > deadline:
                return info or QemuExit(status=None, signal=None, stderr_tail="(exit status unavailable)")
            time.sleep(0.1)

    # -- recovery -------------------------------------------------------------
    def _recover(self, stop: _Stop) -> bool:
        """Get a working shell back and move past the window; False if QEMU died."""
        plan, (_, window_stop) = self._window()
        self._book_window(resumes=True)
        if window_stop >= plan.op_count:
            self._range, self._op = self._range + 1, 0
        else:
            self._op = window_stop
        self._close_session()
        recovery_started = self.clock()
        session = None
        if stop.how == "hang" and self.vm.is_alive():
            LOG.info("hang recovery: does the shell still answer? (up to %.0f s)", self.config.relogin_timeout)
            session = self._try_login(self.config.relogin_timeout)
        elif stop.how == "reboot":
            session = self._try_login(self.config.login_timeout)
        if session is None and self.vm.is_alive():
            LOG.warning(
                "guest does not answer: system_reset over QMP (then a login, up to %.0f s)", self.config.login_timeout
            )
            self.trace.event("reset")
            if self._try(self.vm.reset, "system_reset"):
                session = self._try_login(self.config.login_timeout)
        if session is None and self.vm.is_alive():
            # Device state that survives a reset (CMOS bytes the firmware
            # reads at boot, a device model stuck in QEMU's main loop) can
            # keep the guest from coming back: a new QEMU has none of it.
            LOG.warning(
                "guest did not come back after system_reset: restarting QEMU (then a login, up to %.0f s)",
                self.config.login_timeout,
            )
            self.trace.event("restart")
            if self._try(self.vm.restart, "QEMU restart"):
                session = self._try_login(self.config.login_timeout)
        if session is None:
            if not self.vm.is_alive():
                self._record_crash()
                return False
            raise CampaignError("guest did not come back after system_reset nor after a QEMU restart")
        LOG.info("hang recovery: shell back after %.1f s", self.clock() - recovery_started)
        self._session = session
        if not self._finished():
            self.trace.event("resume", range=self.plans[self._range].index, op=self._op)
        return True

    def _try(self, action: Callable[[], None], what: str) -> bool:
        try:
            action()
            return True
        except Exception as err:  # QMP timeouts, avocado-vt VM errors: all mean "did not work"
            LOG.warning("%s failed: %s", what, err)
            return False

    def _try_login(self, timeout: float) -> Any:
        try:
            return self.vm.login(timeout)
        except Exception as err:  # login failures come in many classes (aexpect, avocado-vt)
            LOG.info("login failed: %s", err)
            return None

    def _login(self, timeout: float) -> Any:
        session = self._try_login(timeout)
        if session is None:
            raise CampaignError(f"could not log into the guest within {timeout} s")
        return session

    def _close_session(self) -> None:
        close_quietly(self._session)
        self._session = None

    # -- helpers --------------------------------------------------------------
    def _finished(self) -> bool:
        return self._range >= len(self.plans)

    def _plan_by_index(self, range_index: int) -> RangePlan:
        if not 0 <= range_index < len(self.plans):
            raise CampaignError(f"executor reported unknown range {range_index}")
        return self.plans[range_index]

    def _log_progress(self, now: float) -> None:
        # Host side only, from the loop that reads the console anyway: the
        # executor prints exactly what it prints without it.
        self._last_log = now
        done = self.result.total_done
        total = sum(p.op_count for p in self.plans)
        rate = done / (now - self._started) if now > self._started else 0.0
        position = min(self._range, len(self.plans) - 1)
        current = self.plans[position]
        kinds = [f.kind for f in self.result.findings]
        LOG.info(
            "progress: %d/%d ops (%.1f%%), %.0f ops/s, range %d/%d %s (%#06x-%#06x), "
            "hangs %d, reboots %d so far",
            done,
            total,
            100.0 * done / total if total else 100.0,
            rate,
            position + 1,
            len(self.plans),
            current.name,
            current.start,
            current.end,
            kinds.count("hang"),
            kinds.count("reboot"),
        )
