"""The triage pipeline's orchestration, with a stand-in guest: the in-guest fallback path."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from avocado_iofuzz.campaign.trace import TraceWriter
from avocado_iofuzz.executor.build import build_executor
from avocado_iofuzz.executor.protocol import executor_command, parse_dry_run_op
from avocado_iofuzz.model.program import Op, RangePlan, plan_ranges
from avocado_iofuzz.repro.guest_replay import GuestOutcome, ScriptTooBig, regenerating_command
from avocado_iofuzz.repro.pipeline import TriageOptions, triage
from avocado_iofuzz.repro.signature import NO_CRASH, crash_signature
from avocado_iofuzz.repro.vt_triage import fail_reason

ABORT = "qemu-system-x86_64: ../hw/x.c:9: f: Assertion `n' failed.\n"
PLAN = RangePlan(0, 0x300, 0x30F, "unclaimed", 9, 40)


class StandInGuest:
    """Crashes QEMU (in its answers) when ops 10 and 20 of the plan were both replayed, in order."""

    def __init__(self) -> None:
        self.needed = [PLAN.op(10), PLAN.op(20)]
        self.runs = 0

    def run_ops(self, ops: Sequence[Op], fresh: bool = True) -> GuestOutcome:
        self.runs += 1
        it = iter(ops)
        crashed = all(op in it for op in self.needed)
        signature = crash_signature(None, 6, ABORT) if crashed else NO_CRASH
        return GuestOutcome(signature, len(ops), len(ops), 1.0)


def write_trace(path: Path, header: dict, signal: int = 6, stderr: str = ABORT) -> Path:
    with TraceWriter(path, header, [PLAN], mark_interval=0) as trace:
        trace.write_ops(PLAN, 0, PLAN.op_count)
        trace.event("start", range=0, op=0)
        exit_info = {"status": None, "signal": signal, "stderr_tail": stderr}
        trace.event("crash", range=0, window=[0, 64], qemu_exit=exit_info)
    return path


def test_without_a_qtest_machine_the_guest_replays_and_minimizes(tmp_path):
    trace = write_trace(tmp_path / "trace.iofuzz", {})  # no qemu_cmdline: no qtest replay possible
    guest = StandInGuest()
    result = triage(trace, tmp_path / "out", TriageOptions(), guest=guest)  # type: ignore[arg-type]
    assert result.reproduced and result.method == "guest" and result.candidate == "window"
    assert result.ops == guest.needed
    assert result.verified == "3/3"
    assert any("qemu_cmdline" in note for note in result.notes)
    # the one handed over is the one verified: the guest script, no qtest files nobody ran
    assert sorted(result.files) == ["guest_script", "json"]
    assert any("the verified reproducer is reproducer-guest.sh" in note for note in result.notes)
    assert result.replays == guest.runs - 3  # the guest budget counted every run but the verification


def test_a_guest_budget_of_zero_leaves_the_finding_unreproduced(tmp_path):
    trace = write_trace(tmp_path / "trace.iofuzz", {})
    result = triage(trace, tmp_path / "out", TriageOptions(guest_budget=0), guest=StandInGuest())  # type: ignore[arg-type]
    assert not result.reproduced
    assert "not reproduced" in fail_reason(result)
    assert (tmp_path / "out" / "triage.json").is_file()
    # no reproducer file for a finding no replay showed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["triage.json"]
    assert json.loads((tmp_path / "out" / "triage.json").read_text())["reproduced"] is False


def test_an_outside_kill_is_not_triaged_by_default(tmp_path):
    killed = "qemu-system-x86_64: warning: nic e1000e.0 has no peer\n/tmp/aexpect_x/a.sh: line 1: 99 Killed  qemu\n"
    trace = write_trace(tmp_path / "trace.iofuzz", {}, signal=9, stderr=killed)
    guest = StandInGuest()
    result = triage(trace, tmp_path / "out", TriageOptions(), guest=guest)  # type: ignore[arg-type]
    assert not result.triaged and not result.reproduced and guest.runs == 0
    assert "not triaged" in fail_reason(result) and "killed from outside" in fail_reason(result)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["triage.json"]
    # asked for, it is tried like any other finding
    tried = triage(trace, tmp_path / "again", TriageOptions(outside_kills=True), guest=guest)  # type: ignore[arg-type]
    assert tried.triaged and guest.runs > 0


def test_in_guest_replays_of_the_vt_test_run_on_a_twin_without_the_users_files(tmp_path, monkeypatch):
    """Restarting the test's VM would re-open (and truncate) its -chardev file outputs: the twin has none."""
    import shutil
    from types import SimpleNamespace

    import pytest

    from avocado_iofuzz.repro import recorded_vm
    from avocado_iofuzz.repro.vt_triage import replay_machine

    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 not installed")
    evidence = tmp_path / "console.log"
    cmdline = (
        f"/usr/bin/qemu-system-x86_64 -machine pc -chardev file,id=c0,path={evidence} "
        "-device isa-serial,chardev=c0 -device e1000e"
    )
    trace = write_trace(tmp_path / "trace.iofuzz", {"qemu_cmdline": cmdline, "accelerator": "tcg", "guest": "busybox"})
    artifacts = SimpleNamespace(kernel=tmp_path / "vmlinux", initrd=tmp_path / "initrd", kernel_params="console=ttyS0")
    monkeypatch.setattr(recorded_vm, "guest_for", lambda header: artifacts)
    with replay_machine(trace, tmp_path / "guest", wanted=True) as machine:
        argv = machine.build_argv(tmp_path / "serial.sock", tmp_path / "qmp.sock")
    assert not [word for word in argv if str(evidence) in word]
    assert "e1000e" in argv and machine.accel == "tcg"
    with replay_machine(trace, tmp_path / "guest", wanted=False) as nothing:
        assert nothing is None


def test_minimization_rounds_linger_as_long_as_the_reproducing_crash_took():
    from avocado_iofuzz.repro.pipeline import SYNCHRONOUS_LINGER, Reproduction, round_linger
    from avocado_iofuzz.repro.signature import crash_signature as signature_of

    abort = signature_of(None, 6, ABORT)
    died_mid_script = Reproduction("qtest", "window", [], abort, True)
    timer = Reproduction("qtest", "window", [], abort, False, late=0.1)
    unknown = Reproduction("qtest", "window", [], abort, False)
    quick_timer = Reproduction("qtest", "window", [], abort, False, late=0.001)
    assert round_linger(died_mid_script, 0.5) == SYNCHRONOUS_LINGER
    assert round_linger(timer, 0.5) == pytest.approx(0.3)  # three times the timer's delay
    assert round_linger(unknown, 0.5) == 0.5 and round_linger(quick_timer, 0.5) == SYNCHRONOUS_LINGER
    assert round_linger(Reproduction("qtest", "w", [], abort, False, late=2.0), 0.5) == 0.5  # never above it


def test_after_a_guest_only_reproduction_no_qtest_reproducer_is_handed_over_unless_qtest_shows_it(tmp_path):
    """qtest replays of the trace show nothing; the guest does: reproducer.sh is not written, the guest script is."""
    import shutil

    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 not installed")
    header = {"qemu_cmdline": f"{shutil.which('qemu-system-x86_64')} -machine pc -nodefaults"}
    trace = write_trace(tmp_path / "trace.iofuzz", header)
    guest = StandInGuest()
    result = triage(trace, tmp_path / "out", TriageOptions(linger=0.05), guest=guest)  # type: ignore[arg-type]
    assert result.reproduced and result.method == "guest" and result.verified == "3/3"
    assert [stage.name for stage in result.stages if stage.name == "qtest-check"] == ["qtest-check"]
    assert any("do not show the finding" in note for note in result.notes)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["reproducer-guest.sh", "triage.json"]


class GeneratingGuest(StandInGuest):
    """A guest whose console is too slow for any script: the executor (built here, --dry-run) generates the ops.

    The crash rule is StandInGuest's, applied to the ops the executor printed.
    """

    report_every = 64

    def __init__(self, executor: Path) -> None:
        super().__init__()
        self.executor = "/usr/bin/iofuzz-exec"
        self.built = executor
        self.commands: list[str] = []

    def run_ops(self, ops: Sequence[Op], fresh: bool = True) -> GuestOutcome:
        raise ScriptTooBig(f"{len(ops)} ops make a script, more than the console carries")

    def run_command(self, command: str, total: int, fresh: bool = True) -> GuestOutcome:
        self.commands.append(command)
        argv = shlex.split(command)
        assert argv[0] == self.executor
        printed = subprocess.run([str(self.built), "--dry-run", *argv[1:]], capture_output=True, text=True, timeout=60)
        ops = [parse_dry_run_op(line)[2] for line in printed.stdout.splitlines() if not line.startswith("@")]
        return super().run_ops(ops)


def test_ops_too_many_to_upload_are_generated_in_the_guest_and_that_command_is_handed_over(tmp_path):
    trace = write_trace(tmp_path / "trace.iofuzz", {})
    guest = GeneratingGuest(build_executor(tmp_path / "exe"))
    result = triage(trace, tmp_path / "out", TriageOptions(), guest=guest)  # type: ignore[arg-type]
    assert result.reproduced and result.method == "guest" and result.verified == "3/3"
    assert result.guest_command == guest.commands[0] == executor_command([PLAN], 64, binary=guest.executor)
    # the verification ran the very command handed over
    assert guest.commands == [result.guest_command] * 4
    assert any("generated its 64 ops in the guest" in note for note in result.notes)
    assert any(note.startswith("not minimized") for note in result.notes) and not result.complete
    assert "64 ops generated in the guest (not minimized), verified 3/3" in result.summary()
    assert any(note.endswith("3/3): no qtest machine for this trace") for note in result.notes)
    handed_over = (tmp_path / "out" / "reproducer-guest.sh").read_text()
    assert f"exec {result.guest_command}\n" in handed_over and "--script" not in handed_over
    data = json.loads((tmp_path / "out" / "triage.json").read_text())
    assert data["guest_command"] == result.guest_command and data["ops_count"] == 64 and data["ops"] == []


def test_the_executor_generates_exactly_the_spans_of_a_candidate(tmp_path):
    plans = {p.index: p for p in plan_ranges(7, [(0x300, 0x303, "a"), (0x310, 0x311, "b"), (0x320, 0x327, "c")], 2)}
    spans = [(0, 5, plans[0].op_count), (1, 0, plans[1].op_count), (2, 0, 9)]
    command = regenerating_command(plans, spans, executor="/usr/bin/iofuzz-exec", report_every=4)
    assert command is not None and "--resume 0:5" in command
    printed = subprocess.run(
        [str(build_executor(tmp_path)), "--dry-run", *shlex.split(command)[1:]], capture_output=True, text=True
    )
    generated = [parse_dry_run_op(line)[2] for line in printed.stdout.splitlines() if not line.startswith("@")]
    wanted = [op for index, first, stop in spans for op in plans[index].ops(first, stop)]
    # the same ops in the same order, then the rest of the last range (ops after a crash never run)
    assert [(o.kind, o.port, o.width, o.value) for o in generated[: len(wanted)]] == [
        (o.kind, o.port, o.width, o.value) for o in wanted
    ]
    assert len(generated) == len(wanted) - 9 + plans[2].op_count


def test_batches_with_their_own_seeds_are_generated_in_the_guest_as_they_ran(tmp_path):
    """A guided round: each batch its own seed; the in-guest replay command carries them (``@S``)."""
    base = plan_ranges(7, [(0x300, 0x303, "a"), (0x310, 0x311, "b"), (0x320, 0x327, "c")], 2)
    plans = {p.index: replace(p, seed=seed) for p, seed in zip(base, (7, 2**63 + 5, 11), strict=True)}
    spans = [(0, 2, plans[0].op_count), (1, 0, plans[1].op_count), (2, 0, plans[2].op_count)]
    command = regenerating_command(plans, spans, executor="/usr/bin/iofuzz-exec", report_every=4)
    assert command is not None and f"1:0x310-0x311@{2**63 + 5}" in command and "2:0x320-0x327@11" in command
    printed = subprocess.run(
        [str(build_executor(tmp_path)), "--dry-run", *shlex.split(command)[1:]], capture_output=True, text=True
    )
    generated = [parse_dry_run_op(line)[2] for line in printed.stdout.splitlines() if not line.startswith("@")]
    wanted = [op for index, first, stop in spans for op in plans[index].ops(first, stop)]
    assert [(o.kind, o.port, o.width, o.value) for o in generated] == [
        (o.kind, o.port, o.width, o.value) for o in wanted
    ]


@pytest.mark.parametrize(
    "spans",
    [
        [],
        [(0, 0, 3), (1, 0, 2)],  # the first span stops before its range's end: a gap
        [(0, 0, 100), (1, 4, 8)],  # the second starts inside its range
        [(0, 0, 100), (2, 0, 8)],  # skips a range
        [(1, 0, 8), (0, 0, 100)],  # not in the plans' order
        [(9, 0, 1)],  # no such range
    ],
)
def test_ops_that_are_no_single_run_of_the_plans_cannot_be_generated(spans):
    plans = {p.index: p for p in plan_ranges(7, [(0x300, 0x303, "a"), (0x310, 0x311, "b"), (0x320, 0x327, "c")], 2)}
    spans = [(i, f, plans[i].op_count if s == 100 else s) if i in plans else (i, f, s) for i, f, s in spans]
    assert regenerating_command(plans, spans) is None


def test_running_clock_replays_are_tried_again_before_a_candidate_counts_as_not_showing_it(tmp_path, monkeypatch):
    """A timer's crash shows in some running-clock replays only: the stand-in QEMU shows it in the third."""
    from avocado_iofuzz.repro import pipeline
    from avocado_iofuzz.repro.extract import extract
    from avocado_iofuzz.repro.qtest_run import CLOCK_RUNNING, UNPACED, QtestOutcome

    trace = write_trace(tmp_path / "trace.iofuzz", {"qemu_cmdline": "/usr/bin/qemu-system-x86_64 -machine pc"})
    replays: list[str] = []

    pacings: list[object] = []

    def timer_crash_in_third_running_replay(target, ops, pacing=None, **_):
        replays.append(target.clock)
        pacings.append(pacing)
        shows = replays.count(CLOCK_RUNNING) == 3
        return QtestOutcome(crash_signature(None, 6, ABORT) if shows else NO_CRASH, len(ops), len(ops), 0.1)

    monkeypatch.setattr(pipeline, "run_qtest", timer_crash_in_third_running_replay)
    notes: list[str] = []
    reproduction = pipeline.stage_replay_qtest(extract(trace), TriageOptions(), notes)
    assert reproduction is not None and reproduction.target is not None
    assert reproduction.target.clock == CLOCK_RUNNING and replays == ["stopped", "running", "running", "running"]
    assert notes == ["window showed the finding in running-clock replay 3"]
    # first as fast as QEMU reads (a late timer's delay is measured), then paced (the clock's default)
    assert pacings == [UNPACED, UNPACED, None, None]
    replays.clear()
    assert pipeline.stage_replay_qtest(extract(trace), TriageOptions(timer_attempts=2), notes) is None
    assert replays == ["stopped", "running", "running"]


def test_the_replays_looking_for_the_finding_stop_when_the_budget_is_spent(tmp_path, monkeypatch):
    """Each replay of a huge candidate takes minutes: the stage ends within minimize_budget, the first always runs."""
    from avocado_iofuzz.repro import pipeline
    from avocado_iofuzz.repro.extract import extract
    from avocado_iofuzz.repro.qtest_run import QtestOutcome

    trace = write_trace(tmp_path / "trace.iofuzz", {"qemu_cmdline": "/usr/bin/qemu-system-x86_64 -machine pc"})
    clock = [0.0]
    replays: list[str] = []

    def slow_replay_showing_nothing(target, ops, **_):
        replays.append(target.clock)
        clock[0] += 100.0
        return QtestOutcome(NO_CRASH, len(ops), len(ops), 100.0)

    monkeypatch.setattr(pipeline, "run_qtest", slow_replay_showing_nothing)
    real_budget = pipeline.Budget
    monkeypatch.setattr(pipeline, "Budget", lambda seconds: real_budget(seconds=seconds, clock=lambda: clock[0]))
    notes: list[str] = []
    assert pipeline.stage_replay_qtest(extract(trace), TriageOptions(budget=250.0, timer_attempts=3), notes) is None
    assert replays == ["stopped", "running", "running"]  # 300 s spent: no fourth replay
    assert notes == ["qtest replays stopped after 3 in 300 s (minimize_budget 250 s), before window (clock running)"]
    replays.clear()
    assert pipeline.stage_replay_qtest(extract(trace), TriageOptions(budget=0.0), notes) is None
    assert replays == ["stopped"]  # the first replay runs whatever the budget


def test_a_running_clock_round_that_shows_nothing_is_replayed_watching_longer(monkeypatch):
    """A timer can fire after a round's linger: "nothing" is replayed watching longer, a different ending is final."""
    from avocado_iofuzz.repro import pipeline
    from avocado_iofuzz.repro.qtest_run import QtestOutcome, QtestTarget

    expected = crash_signature(None, 6, ABORT)
    other = crash_signature(None, 11, "")
    target = QtestTarget("qemu-system-x86_64", ("-machine", "pc"))
    endings: list[object] = []
    lingers: list[float] = []

    def replay(target, ops, linger, **_):
        lingers.append(linger)
        return QtestOutcome(endings.pop(0), len(ops), len(ops), 0.1)

    def rounds(judge, *shown):
        endings[:], lingers[:] = list(shown), []
        return judge([PLAN.op(1)]), list(lingers)

    monkeypatch.setattr(pipeline, "run_qtest", replay)
    judge = pipeline.qtest_judge(target, expected, 0.1, 5.0, attempts=3, max_linger=0.3)
    assert rounds(judge, NO_CRASH, NO_CRASH, NO_CRASH, expected) == (False, [0.1, 0.2, 0.4])  # then it counts as gone
    assert rounds(judge, other, expected) == (False, [0.1])  # another crash: no retry makes it this finding's
    assert rounds(judge, NO_CRASH, expected) == (True, [0.1, 0.2])
    # the linger that showed it is where the next rounds start
    assert rounds(judge, NO_CRASH, NO_CRASH, expected) == (True, [0.2, 0.4, 0.8])
    assert rounds(judge, expected) == (True, [0.3])  # ... at most max_linger
    stopped = pipeline.qtest_judge(target, expected, 0.1, 5.0)
    assert rounds(stopped, NO_CRASH, expected) == (False, [0.1])  # a stopped clock: one replay decides
