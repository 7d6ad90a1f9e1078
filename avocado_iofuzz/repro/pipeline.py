"""Crash triage as a pipeline of named, timed stages.

extract -> replay -> replay-guest -> minimize -> simplify -> verify -> reproducer

:func:`triage` runs them on a trace's finding (a crash by default, a hang if
asked) and leaves its results in an output directory:

``extract``
    the finding, its candidate op lists and the machine to replay on
    (:mod:`~avocado_iofuzz.repro.extract`);
``replay``
    each candidate, shortest first, as a qtest replay (milliseconds, no
    guest);
``replay-guest``
    if no qtest replay shows the finding's signature and a guest is at
    hand, the candidates as in-guest replays;
``minimize``
    delta debugging over the reproducing list, on the replay that worked
    (qtest: hundreds of rounds; in-guest: as many as the budget allows);
``simplify``
    narrower accesses and values with fewer bits, keeping the signature;
``verify``
    the final list replayed again, the way it reproduced, and the count of
    replays that showed the signature recorded;
``reproducer``
    ``reproducer.qtest``, ``reproducer.sh`` (the one-line QEMU command
    around it), ``reproducer-guest.sh`` (the in-guest script) and
    ``triage.json``.

The signature a replay must show is the finding's: same signal or exit
status, and the same assertion/abort text where the run recorded one. Once
a replay reproduced it, the minimization keeps the replay's own (complete)
signature, so the smallest list still ends the same way.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from avocado_iofuzz.model.program import Op
from avocado_iofuzz.repro.extract import DEFAULT_MAX_PREFIX_OPS, Extracted, extract
from avocado_iofuzz.repro.guest_replay import (
    GuestReplayer,
    GuestReplayError,
    ScriptTooBig,
    guest_script_file,
    regenerating_command,
)
from avocado_iofuzz.repro.minimize import Budget, CachedJudge, ddmin, reduce_heuristically, simplify, trim_prefix
from avocado_iofuzz.repro.qtest import describe_ops
from avocado_iofuzz.repro.qtest_ops import format_script
from avocado_iofuzz.repro.qtest_run import (
    CLOCK_RUNNING,
    CLOCK_STOPPED,
    DEFAULT_LINGER,
    UNPACED,
    QtestHarnessError,
    QtestStartError,
    QtestTarget,
    replay_firmware,
    run_qtest,
    write_halt_firmware,
)
from avocado_iofuzz.repro.reproducer import minimize_args, verify_shell, write_shell
from avocado_iofuzz.repro.signature import KIND_CRASH, CrashSignature

LOG = logging.getLogger("avocado.test.iofuzz")

REPRODUCER_QTEST = "reproducer.qtest"
REPRODUCER_SHELL = "reproducer.sh"
REPRODUCER_GUEST = "reproducer-guest.sh"
TRIAGE_JSON = "triage.json"
FIRMWARE = "halt-firmware.bin"  # for running-clock reproducers
# once a replay crashed before answering every op, a late abort is not what
# it looks for: a short linger keeps minimization rounds fast
SYNCHRONOUS_LINGER = 0.05
TIMER_LINGER_FACTOR = 3.0


@dataclass(frozen=True)
class TriageOptions:
    minimize: bool = True
    qtest: bool = True
    guest_fallback: bool = True  # used only when a GuestReplayer is given
    budget: float = 300.0  # seconds for qtest minimization, and again for the qtest replays that look for the finding
    guest_budget: float = 900.0  # seconds for in-guest replays and minimization
    linger: float = DEFAULT_LINGER
    stall_timeout: float = 5.0  # qtest: seconds without an answer = QEMU hung
    hang_stall_timeout: float = 1.0  # the same while minimizing a hang (most rounds hang)
    max_prefix_ops: int = DEFAULT_MAX_PREFIX_OPS
    verify_runs: int = 3
    # running-clock replays of a candidate before it counts as not showing the finding: a device
    # timer's crash depends on when the timer fires, which pacing makes likely, not certain
    timer_attempts: int = 3
    # running-clock minimization rounds: replays of a candidate before it counts as not showing the
    # finding, each watching twice as long; every candidate that truly loses the finding pays them all
    round_attempts: int = 2
    qemu_binary: str | None = None
    kind: str | None = None  # which finding: crash, hang, reboot (default: the last one)
    occurrence: int = -1  # index among the trace's findings (of ``kind``): -1 the last, 0 the first
    # a QEMU killed by another process (SIGKILL/SIGTERM..., no fatal line) shows no bug of its own
    outside_kills: bool = False


@dataclass
class StageRecord:
    name: str
    seconds: float
    detail: str


@dataclass
class TriageResult:
    trace: str
    finding: str
    expected: CrashSignature
    triaged: bool = True  # False: the finding was left alone (an outside kill)
    reproduced: bool = False
    method: str = ""  # "qtest" or "guest"
    candidate: str = ""
    signature: CrashSignature | None = None  # what the reproducing replay showed
    ops: list[Op] = field(default_factory=list)
    original_ops: int = 0
    replays: int = 0
    complete: bool = True  # False: a budget cut minimization short
    verified: str = ""  # "3/3"
    command: str = ""  # the one-line qtest reproducer command
    guest_command: str = ""  # the in-guest executor command that generated the ops (too many to upload)
    clock: str = ""  # the qtest replay's clock: stopped (-S) or running (halting firmware)
    qemu_args: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    stages: list[StageRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for a FAIL reason or a CLI report."""
        if not self.triaged:
            return "not triaged (" + "; ".join(self.notes) + ")"
        if not self.reproduced:
            why = "; ".join(self.notes) or "no replay showed the same signature"
            return f"not reproduced ({why})"
        shrunk = f"{self.original_ops} -> {len(self.ops)} ops" if self.original_ops else f"{len(self.ops)} ops"
        cut_short = " (budget ran out)"
        if self.guest_command:
            shrunk, cut_short = f"{len(self.ops)} ops generated in the guest", " (not minimized)"
        where = self.files.get("shell") or self.files.get("guest_script") or ""
        return (
            f"reproduced by {self.method} replay ({self.candidate}), {shrunk}"
            f"{'' if self.complete else cut_short}"
            f"{f', verified {self.verified}' if self.verified else ''}: {describe_ops(self.ops, 6)}"
            f"{f'; reproducer {where}' if where else ''}"
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["expected"] = self.expected.as_dict()
        data["signature"] = self.signature.as_dict() if self.signature else None
        # ops the guest generated itself are too many to list (hundreds of thousands): guest_command says which
        data["ops"] = [] if self.guest_command else format_script(self.ops).splitlines()
        data["ops_count"] = len(self.ops)
        data["summary"] = self.summary()
        return data


def signature_matches(expected: CrashSignature, actual: CrashSignature) -> bool:
    """Whether a replay shows the finding: same kind, same status/signal, same message and frame where known.

    A finding recorded without a message (QEMU's stderr was lost) is matched
    by kind and exit alone.
    """
    if expected.kind != actual.kind:
        return False
    if expected.kind != KIND_CRASH:
        return True
    exit_known = expected.status not in (None, -1) or expected.signal is not None
    if exit_known and (expected.status, expected.signal) != (actual.status, actual.signal):
        return False
    if expected.message and expected.stable_message != actual.stable_message:
        return False
    return not expected.frame or expected.frame == actual.frame


# -- stage: extract --------------------------------------------------------------------------


def stage_extract(trace_path: str | os.PathLike[str], options: TriageOptions) -> Extracted:
    return extract(
        trace_path,
        kind=options.kind,
        occurrence=options.occurrence,
        max_prefix_ops=options.max_prefix_ops,
        qemu_binary=options.qemu_binary,
    )


# -- stage: replay ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reproduction:
    method: str
    candidate: str
    ops: list[Op]
    signature: CrashSignature
    synchronous: bool  # QEMU died (or stalled) before answering every op
    target: QtestTarget | None = None  # the qtest machine that reproduced it
    late: float | None = None  # seconds from the last answer to QEMU's death (a timer), if it came after
    guest_command: str = ""  # the executor generated the ops in the guest (see regenerating_command)


def round_linger(reproduction: Reproduction, default: float) -> float:
    """How long a minimization round watches QEMU after its last answer.

    A death before the last answer needs none; a timer's death came ``late``
    seconds after it in the reproducing replay: a few times that covers its
    jitter without waiting the full default in every round that does not crash.
    """
    if reproduction.synchronous:
        return SYNCHRONOUS_LINGER
    if reproduction.late is None:
        return default
    return min(default, max(SYNCHRONOUS_LINGER, TIMER_LINGER_FACTOR * reproduction.late))


def qtest_judge(
    target: QtestTarget,
    expected: CrashSignature,
    linger: float,
    stall_timeout: float,
    attempts: int = 1,
    max_linger: float | None = None,
) -> Callable:
    """Whether a candidate's qtest replay shows ``expected``.

    With the clock running, a timer's crash comes when QEMU's timer fires,
    not at a fixed op: on a loaded host, or when the rounds' linger came from
    a replay whose timer was armed before its last op (a long candidate), a
    replay can stop watching before the timer fired. Such a replay (QEMU
    alive, no failure) does not yet mean "the finding is gone": it is
    replayed, up to ``attempts`` times in all, each watching twice as long
    as the one before, and a linger that showed the finding on a retry is
    where later rounds start (at most ``max_linger``, default ``linger``).
    A replay that ended another way (another crash, a hang) is final.
    """
    start = {"linger": linger}
    cap = max(linger, max_linger if max_linger is not None else linger)

    def judge(ops: Sequence[Op]) -> bool:
        watch = start["linger"]
        for attempt in range(1, max(1, attempts) + 1):
            outcome = run_qtest(target, ops, linger=watch, stall_timeout=stall_timeout)
            if signature_matches(expected, outcome.signature):
                if attempt > 1:
                    start["linger"] = min(max(start["linger"], watch), cap)
                    LOG.info(
                        "minimize: the finding showed in running-clock replay %d (linger %.2f s); "
                        "rounds now linger %.2f s",
                        attempt, watch, start["linger"],
                    )  # fmt: skip
                return True
            if outcome.signature.is_failure:
                return False
            watch *= 2
        return False

    return judge


def stage_replay_qtest(extracted: Extracted, options: TriageOptions, notes: list[str]) -> Reproduction | None:
    """Each candidate (PCI setup in front) as a qtest replay, until one shows the finding's signature.

    First with the clock stopped (``-S``), then, if none reproduced, with it
    running under the halting firmware: crashes that come from a device timer
    (DMA engines, audio, interrupt throttling) need virtual time to pass. Such
    a replay is tried up to ``timer_attempts`` times: first as fast as QEMU
    reads, so that a timer that fires after the ops (edu's DMA engine, 100 ms)
    shows how late it comes, which sets the rounds' linger; then paced (see
    :class:`~avocado_iofuzz.repro.qtest_run.Pacing`), so that timers fire
    between the ops as they did in the guest (e1000e's interrupt throttling).

    The replays together get ``options.budget`` seconds (the first always
    runs): a candidate of millions of ops takes minutes per replay, and
    triage must end in a time the user chose.
    """
    budget = Budget(seconds=options.budget)
    stopped = extracted.qtest_target
    if stopped is None:
        notes.append(f"no qtest replay: {extracted.qtest_problem}")
        return None
    expected = extracted.finding.expected
    mismatches: list[str] = []
    for clock in (CLOCK_STOPPED, CLOCK_RUNNING):
        target = stopped if clock == CLOCK_STOPPED else stopped.running(replay_firmware())
        attempts = max(1, options.timer_attempts) if clock == CLOCK_RUNNING else 1
        # every candidate once before any again: the one that shows it is often a longer one
        settled: set[str] = set()  # candidates that ended another way or broke the harness: no retry
        for attempt in range(1, attempts + 1):
            for candidate in extracted.candidates:
                if candidate.name in settled:
                    continue
                if budget.tests and budget.exhausted():
                    notes.append(
                        f"qtest replays stopped after {budget.tests} in {budget.elapsed:.0f} s "
                        f"(minimize_budget {options.budget:.0f} s), before {candidate.name} (clock {clock})"
                    )
                    return None
                budget.tests += 1
                ops = extracted.setup + candidate.ops
                # a paced replay stretches the script: a late timer's crash would land mid-script and
                # pass for the op's own (50 ms linger); unpaced, it comes after the ops, its delay measured
                pacing = UNPACED if attempt == 1 else None
                try:
                    outcome = run_qtest(
                        target, ops, linger=options.linger, stall_timeout=options.stall_timeout, pacing=pacing
                    )
                except QtestStartError as err:
                    notes.append(f"qtest replay impossible: {err}")
                    return None
                except QtestHarnessError as err:
                    notes.append(f"qtest replay of {candidate.name} broke the harness: {err}")
                    settled.add(candidate.name)
                    continue
                LOG.info(
                    "qtest replay (clock %s, attempt %d/%d) of %s (%d ops): %s, %d answered in %.2f s",
                    clock, attempt, attempts, candidate.name, len(ops), outcome.signature.describe(),
                    outcome.answered, outcome.elapsed,
                )  # fmt: skip
                if signature_matches(expected, outcome.signature):
                    if attempt > 1:
                        notes.append(f"{candidate.name} showed the finding in running-clock replay {attempt}")
                    failing = outcome.failing_op
                    kept = ops[: failing + 1] if failing is not None else ops
                    return Reproduction(
                        "qtest", candidate.name, kept, outcome.signature, failing is not None, target, outcome.late
                    )
                if outcome.signature.is_failure:
                    mismatches.append(f"{candidate.name} (clock {clock}): {outcome.signature.describe()}")
                    settled.add(candidate.name)  # another ending: no retry makes it this finding's
    if mismatches:
        notes.append("qtest replays ended differently: " + "; ".join(mismatches))
    notes.append("no qtest replay showed the finding's signature")
    return None


def stage_replay_guest(
    extracted: Extracted, replayer: GuestReplayer, options: TriageOptions, budget: Budget, notes: list[str]
) -> Reproduction | None:
    """The candidates as in-guest replays (every kind), shortest first, within the guest budget.

    A candidate too big to upload over the serial console is generated by
    the executor itself in the guest when it is one run of the trace's plans
    (:func:`~avocado_iofuzz.repro.guest_replay.regenerating_command`).
    """
    expected = extracted.finding.expected
    for candidate in extracted.candidates:
        if budget.exhausted():
            notes.append("in-guest replay budget exhausted")
            return None
        command = ""
        try:
            budget.charge()
            try:
                outcome = replayer.run_ops(candidate.ops)
            except ScriptTooBig as err:
                generated = regenerating_command(
                    extracted.plans, candidate.spans, replayer.executor, replayer.report_every,
                    pci_restore=extracted.pci_restore,
                )  # fmt: skip
                if generated is None:
                    notes.append(f"in-guest replay of {candidate.name}: {err}; its ops are no single run of the plans")
                    return None
                command = generated
                notes.append(
                    f"in-guest replay of {candidate.name}: {err}: the executor generated its {len(candidate.ops)} "
                    "ops in the guest from the run's seed instead"
                )
                outcome = replayer.run_command(command, len(candidate.ops))
        except GuestReplayError as err:
            notes.append(f"in-guest replay of {candidate.name}: {err}")
            return None
        LOG.info(
            "in-guest replay of %s (%d ops%s): %s in %.1f s",
            candidate.name, len(candidate.ops), ", generated in the guest" if command else "",
            outcome.signature.describe(), outcome.elapsed,
        )  # fmt: skip
        if signature_matches(expected, outcome.signature):
            return Reproduction(
                "guest", candidate.name, list(candidate.ops), outcome.signature, True, guest_command=command
            )
    notes.append("no in-guest replay showed the finding's signature")
    return None


# -- stages: minimize and simplify ----------------------------------------------------------------


def stage_minimize(ops: Sequence[Op], judge: CachedJudge) -> list[Op]:
    """Big heuristic cuts, then drop the prefix that does not matter, then delta-debug what is left."""
    return ddmin(trim_prefix(reduce_heuristically(ops, judge), judge), judge)


def stage_simplify(ops: Sequence[Op], judge: CachedJudge) -> list[Op]:
    return simplify(ops, judge)


def _guest_judge(replayer: GuestReplayer, expected: CrashSignature) -> Callable:
    def judge(ops: Sequence[Op]) -> bool:
        try:
            return signature_matches(expected, replayer.run_ops(ops).signature)
        except GuestReplayError as err:
            LOG.warning("in-guest minimization round failed: %s", err)
            return False

    return judge


# -- stage: reproducer ----------------------------------------------------------------------------


def stage_reproducer(result: TriageResult, target: QtestTarget, outdir: Path) -> None:
    """Write reproducer.qtest and the self-contained reproducer.sh; fill ``result.files`` and ``result.command``."""
    outdir.mkdir(parents=True, exist_ok=True)
    qtest_path = outdir / REPRODUCER_QTEST
    qtest_path.write_text(format_script(result.ops), encoding="utf-8")
    result.files["qtest"] = str(qtest_path)
    result.qemu_args = list(target.args)
    result.clock = target.clock
    comments = [
        f"iofuzz reproducer: {(result.signature or result.expected).describe()}",
        f"finding: {result.finding}",
        f"{len(result.ops)} ops" + (f" (minimized from {result.original_ops})" if result.original_ops else ""),
    ]
    result.files["shell"] = str(write_shell(outdir / REPRODUCER_SHELL, target, result.ops, comments))
    result.command = f"sh {REPRODUCER_SHELL}"
    if target.clock == CLOCK_RUNNING:
        # for `avocado iofuzz replay reproducer.qtest` and by-hand runs; reproducer.sh makes its own
        write_halt_firmware(outdir / FIRMWARE)
        result.files["firmware"] = str(outdir / FIRMWARE)


def stage_guest_reproducer(result: TriageResult, outdir: Path) -> None:
    """The in-guest script (port I/O, PCI config as 0xcf8/0xcfc cycles) for a finding only a guest shows."""
    outdir.mkdir(parents=True, exist_ok=True)
    guest_path = outdir / REPRODUCER_GUEST
    guest_path.write_text(guest_script_file(result.ops, command=result.guest_command), encoding="utf-8")
    guest_path.chmod(0o755)
    result.files["guest_script"] = str(guest_path)


def _write_json(result: TriageResult, outdir: Path) -> None:
    json_path = outdir / TRIAGE_JSON
    result.files["json"] = str(json_path)
    json_path.write_text(json.dumps(result.as_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")


# -- the pipeline -------------------------------------------------------------------------------------


class _Stages:
    """Times the stages and records them in the result."""

    def __init__(self, result: TriageResult) -> None:
        self.result = result

    def run(self, name: str, action: Callable[[], Any], describe: Callable[[Any], str] = str) -> Any:
        started = time.monotonic()
        value = action()
        seconds = time.monotonic() - started
        detail = describe(value)
        self.result.stages.append(StageRecord(name, round(seconds, 3), detail))
        LOG.info("triage stage %s: %s (%.1f s)", name, detail, seconds)
        return value


def triage(
    trace_path: str | os.PathLike[str],
    outdir: str | os.PathLike[str],
    options: TriageOptions = TriageOptions(),
    guest: GuestReplayer | None = None,
    extracted: Extracted | None = None,
) -> TriageResult:
    """Reproduce and shrink a trace's finding; write the reproducer files into ``outdir``."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    if extracted is None:
        extracted = stage_extract(trace_path, options)
    finding = extracted.finding
    result = TriageResult(str(extracted.trace_path), finding.describe(), finding.expected)
    if finding.expected.from_outside and not options.outside_kills:
        result.notes.append(
            f"{finding.expected.describe()} with no fatal message: killed from outside (a user, a timeout, "
            "the OOM killer), not by a device; no replay can show that"
        )
        result.triaged = False
        _write_json(result, outdir)
        return result
    stages = _Stages(result)
    stages.result.stages.append(
        StageRecord("extract", 0.0, ", ".join(f"{c.name}: {len(c.ops)} ops" for c in extracted.candidates))
    )
    reproduction: Reproduction | None = None
    if options.qtest:
        reproduction = stages.run(
            "replay", lambda: stage_replay_qtest(extracted, options, result.notes), _describe_reproduction
        )
    guest_budget = Budget(seconds=options.guest_budget)
    if reproduction is None and guest is not None and options.guest_fallback:
        reproduction = stages.run(
            "replay-guest",
            lambda: stage_replay_guest(extracted, guest, options, guest_budget, result.notes),
            _describe_reproduction,
        )
    if reproduction is None:
        # no reproducer file for what no replay showed: triage.json says what was tried
        _write_json(result, outdir)
        return result
    _minimize_and_hand_over(result, reproduction, extracted, guest, guest_budget, options, outdir, stages)
    return result


def _minimize_and_hand_over(
    result: TriageResult,
    reproduction: Reproduction,
    extracted: Extracted | None,
    guest: GuestReplayer | None,
    guest_budget: Budget,
    options: TriageOptions,
    outdir: Path,
    stages: _Stages,
) -> None:
    result.reproduced = True
    result.method = reproduction.method
    result.candidate = reproduction.candidate
    result.signature = reproduction.signature
    result.original_ops = len(reproduction.ops)
    result.guest_command = reproduction.guest_command
    ops = reproduction.ops
    if options.minimize and reproduction.guest_command:
        # every in-guest minimization round uploads its ops over the console: not these
        result.notes.append(
            f"not minimized: {len(ops)} ops generated in the guest are too many to upload for in-guest minimization"
        )
        result.complete = False
    elif options.minimize:
        if reproduction.target is not None:
            stall = options.hang_stall_timeout if reproduction.signature.kind != KIND_CRASH else options.stall_timeout
            linger = round_linger(reproduction, options.linger)
            # a stopped clock replays the same way every time; a running one depends on when its timer fires
            attempts = options.round_attempts if reproduction.target.clock == CLOCK_RUNNING else 1
            judge = CachedJudge(
                qtest_judge(reproduction.target, reproduction.signature, linger, stall, attempts, options.linger),
                Budget(options.budget),
            )
        else:
            judge = CachedJudge(_guest_judge(guest, reproduction.signature), guest_budget)  # type: ignore[arg-type]
        judge.cache[tuple(ops)] = True
        ops = stages.run(
            "minimize", lambda: stage_minimize(ops, judge), lambda v: f"{len(reproduction.ops)} -> {len(v)} ops"
        )
        ops = stages.run("simplify", lambda: stage_simplify(ops, judge), lambda v: describe_ops(v, 6))
        result.replays = judge.budget.tests
        result.complete = not judge.ran_out
    result.ops = list(ops)
    _hand_over(result, reproduction, extracted, guest, options, outdir, stages)


def triage_script(
    ops: Sequence[Op],
    target: QtestTarget,
    outdir: str | os.PathLike[str],
    options: TriageOptions = TriageOptions(),
    expected: CrashSignature | None = None,
    source: str = "<script>",
) -> TriageResult:
    """Minimize any qtest script on ``target``: the same signature (``expected``, or what it shows), smallest script.

    The script is replayed with the clock stopped, then running (a timer's
    crash needs virtual time); the first replay that fails the way it should
    is minimized like a trace's finding, and the reproducer files go to ``outdir``.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    wanted = expected or CrashSignature(KIND_CRASH)
    result = TriageResult(source, f"qtest script {source} ({len(ops)} ops)", wanted)
    stages = _Stages(result)
    reproduction = stages.run(
        "replay", lambda: _replay_script(ops, target, expected, options, outdir, result.notes), _describe_reproduction
    )
    if reproduction is None:
        _write_json(result, outdir)
        return result
    if expected is None:
        result.expected = reproduction.signature
    _minimize_and_hand_over(result, reproduction, None, None, Budget(0), options, outdir, stages)
    return result


def _replay_script(
    ops: Sequence[Op],
    stopped: QtestTarget,
    expected: CrashSignature | None,
    options: TriageOptions,
    outdir: Path,
    notes: list[str],
) -> Reproduction | None:
    running = stopped.running(replay_firmware())
    # unpaced first (a late timer's delay is measured), then paced (timers fire between the ops)
    for target, pacing in ((stopped, UNPACED), (running, UNPACED), (running, None)):
        outcome = run_qtest(target, ops, linger=options.linger, stall_timeout=options.stall_timeout, pacing=pacing)
        paced = "" if pacing is UNPACED else ", paced"
        LOG.info("qtest replay (clock %s%s) of the script: %s", target.clock, paced, outcome.signature.describe())
        shows = signature_matches(expected, outcome.signature) if expected else outcome.signature.is_failure
        if shows:
            failing = outcome.failing_op
            kept = list(ops[: failing + 1]) if failing is not None else list(ops)
            return Reproduction("qtest", "script", kept, outcome.signature, failing is not None, target, outcome.late)
        notes.append(f"clock {target.clock}{paced}: {outcome.signature.describe()}")
    notes.append("no qtest replay of the script " + ("showed the expected signature" if expected else "failed"))
    return None


def _hand_over(
    result: TriageResult,
    reproduction: Reproduction,
    extracted: Extracted | None,
    guest: GuestReplayer | None,
    options: TriageOptions,
    outdir: Path,
    stages: _Stages,
) -> None:
    """Write the reproducer that was verified: the qtest one if qtest shows the finding, else the guest one."""
    target = reproduction.target
    if target is None and extracted is not None and extracted.qtest_target is not None and options.qtest:
        # a guest-only reproduction: a qtest command is handed over only if qtest shows it too
        target = stages.run(
            "qtest-check",
            lambda: _qtest_showing(result, extracted, options),
            lambda t: f"qtest shows it (clock {t.clock})" if t else "qtest does not show it",
        )
    if target is not None:
        chosen = target
        if options.minimize and result.signature is not None and result.signature.kind == KIND_CRASH:
            linger = round_linger(reproduction, options.linger)
            chosen = stages.run("arguments", lambda: _minimal_args(result, target, linger), _describe_args)
        stages.run("reproducer", lambda: stage_reproducer(result, chosen, outdir), lambda _: str(outdir))
        result.verified = stages.run("verify", lambda: _verify_shell(result, chosen, options, outdir), str)
    elif guest is not None:
        if not options.qtest:
            why = "qtest replays were off"
        elif extracted is not None and extracted.qtest_target is None:
            why = "no qtest machine for this trace"
        else:
            why = "qtest does not show this finding"
        stages.run("reproducer", lambda: stage_guest_reproducer(result, outdir), lambda _: str(outdir))
        result.verified = stages.run("verify", lambda: _verify_guest(result, guest, options, why), str)
    _write_json(result, outdir)


def _qtest_showing(result: TriageResult, extracted: Extracted, options: TriageOptions) -> QtestTarget | None:
    """The qtest machine on which the guest's final ops (PCI setup in front, then without) show the signature."""
    assert extracted.qtest_target is not None and result.signature is not None
    stopped = extracted.qtest_target
    running = stopped.running(replay_firmware())
    for target in (stopped, running):
        for ops in ([*extracted.setup, *result.ops], result.ops) if extracted.setup else (result.ops,):
            try:
                outcome = run_qtest(target, ops, linger=options.linger, stall_timeout=options.stall_timeout)
            except (QtestStartError, QtestHarnessError) as err:
                result.notes.append(f"qtest check of the guest's reproducer: {err}")
                return None
            if signature_matches(result.signature, outcome.signature):
                result.ops = list(ops)
                return target
    result.notes.append("qtest replays of the guest's reproducer do not show the finding")
    return None


def _minimal_args(result: TriageResult, target: QtestTarget, linger: float) -> QtestTarget:
    """The target with only the QEMU options (and sub-options) the crash needs."""
    assert result.signature is not None
    signature = result.signature

    def still_fails(args: Sequence[str]) -> bool:
        try:
            outcome = run_qtest(target.with_args(args), result.ops, linger=linger)
        except (QtestStartError, QtestHarnessError):
            return False  # QEMU needs it to start at all
        return signature_matches(signature, outcome.signature)

    return target.with_args(minimize_args(target.args, still_fails))


def _describe_args(target: QtestTarget) -> str:
    return shlex.join(target.args)


def _verify_shell(result: TriageResult, target: QtestTarget, options: TriageOptions, outdir: Path) -> str:
    """Run reproducer.sh as written, ``verify_runs`` times; a hang is judged by qtest replays instead."""
    assert result.signature is not None
    signature = result.signature
    runs = max(1, options.verify_runs)
    if signature.kind != KIND_CRASH:
        # reproducer.sh stops a QEMU that never ends: a hang shows as no answer under qtest
        stall = options.hang_stall_timeout
        outcomes = (run_qtest(target, result.ops, linger=options.linger, stall_timeout=stall) for _ in range(runs))
        hits = sum(signature_matches(signature, outcome.signature) for outcome in outcomes)
        return f"{hits}/{runs}"
    hits = verify_shell(outdir / REPRODUCER_SHELL, lambda seen: signature_matches(signature, seen), runs)
    if not hits:
        _withdraw(result, ("shell", "qtest", "firmware"))
        result.notes.append(f"{REPRODUCER_SHELL} run as written did not crash QEMU ({runs} runs): withdrawn")
    else:
        result.notes.append(
            f"the verified reproducer is {REPRODUCER_SHELL} (qtest, clock {target.clock}): run as written, "
            f"{hits}/{runs} times {signature.describe()}"
        )
    return f"{hits}/{runs}"


def _verify_guest(result: TriageResult, guest: GuestReplayer, options: TriageOptions, why: str) -> str:
    """The guest reproducer run ``verify_runs`` times (at most 3) as handed over; ``why``: why no qtest one."""
    assert result.signature is not None
    runs = max(1, min(options.verify_runs, 3))  # every in-guest run boots a machine
    hits = 0
    for _ in range(runs):
        try:
            if result.guest_command:
                outcome = guest.run_command(result.guest_command, len(result.ops))
            else:
                outcome = guest.run_ops(result.ops)
            hits += signature_matches(result.signature, outcome.signature)
        except GuestReplayError as err:
            result.notes.append(f"verification replay failed: {err}")
    if hits:
        result.notes.append(
            f"the verified reproducer is {REPRODUCER_GUEST} (in a guest of the recorded machine, {hits}/{runs}): {why}"
        )
    else:
        _withdraw(result, ("guest_script",))
    return f"{hits}/{runs}"


def _withdraw(result: TriageResult, names: Sequence[str]) -> None:
    """Remove reproducer files a verification did not confirm: only verified reproducers are handed over."""
    for name in names:
        path = result.files.pop(name, None)
        if path:
            Path(path).unlink(missing_ok=True)
    if "shell" in names:
        result.command = ""


def _describe_reproduction(reproduction: Reproduction | None) -> str:
    if reproduction is None:
        return "not reproduced"
    return f"{reproduction.candidate}: {len(reproduction.ops)} ops, {reproduction.signature.describe()}"
