"""What ``avocado iofuzz replay|export`` do; the avocado plugin only parses the command line.

Every function takes the parsed options (a dict, avocado's ``config``) and a
``say`` callable for the lines meant for the user, and raises
:class:`CliError` with a message naming what is wrong.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from avocado_iofuzz.campaign.runner import CampaignConfig
from avocado_iofuzz.campaign.trace import MAGIC
from avocado_iofuzz.model.program import Op
from avocado_iofuzz.repro.extract import Extracted, ExtractError, extract, qtest_target_for
from avocado_iofuzz.repro.guest_replay import GuestReplayer, GuestReplayError, replay_trace_in_guest
from avocado_iofuzz.repro.pipeline import (
    TRIAGE_JSON,
    TriageOptions,
    signature_matches,
    stage_replay_qtest,
    triage,
    triage_script,
)
from avocado_iofuzz.repro.qemu_args import ReplayArgsError, replay_args
from avocado_iofuzz.repro.qtest import QtestScriptError, read_script
from avocado_iofuzz.repro.qtest_ops import format_script
from avocado_iofuzz.repro.qtest_run import (
    QtestHarnessError,
    QtestStartError,
    QtestTarget,
    replay_firmware,
    run_qtest,
)
from avocado_iofuzz.repro.signature import CrashSignature

Say = Callable[[str], None]
REPLAY_REPORT_EVERY = 4096
HEADER_HANG_AT = "debug_hang_at"  # the run's fault injection, replayed the same way


class CliError(Exception):
    """Bad input or a replay that cannot run; the message is for the user."""


def is_trace(path: Path) -> bool:
    try:
        with path.open("rb") as stream:
            return stream.read(len(MAGIC)) == MAGIC.encode()
    except OSError as err:
        raise CliError(f"{path}: cannot read: {err.strerror}") from None


def occurrence_index(value: int | None) -> int:
    """``--occurrence``'s N (1-based, negative from the end) as a list index; the last finding by default."""
    if value is None:
        return -1
    if value == 0:
        raise CliError("--occurrence counts from 1 (the first finding) or from -1 (the last)")
    return value - 1 if value > 0 else value


def _extract(path: Path, config: dict[str, Any]) -> Extracted:
    try:
        return extract(
            path, kind=config.get("iofuzz_finding"), occurrence=occurrence_index(config.get("iofuzz_occurrence")),
            qemu_binary=config.get("iofuzz_qemu"),
        )  # fmt: skip
    except ExtractError as err:
        raise CliError(str(err)) from None


def _options(config: dict[str, Any], guest_fallback: bool = True) -> TriageOptions:
    if config.get("iofuzz_no_qtest") and config.get("iofuzz_no_guest"):
        raise CliError("--no-qtest with --no-guest-fallback leaves no way to replay")
    return TriageOptions(
        qtest=not config.get("iofuzz_no_qtest"),
        budget=float(config.get("iofuzz_budget") or 300.0),
        guest_budget=float(config.get("iofuzz_guest_budget") or 900.0),
        guest_fallback=guest_fallback and not config.get("iofuzz_no_guest"),
        qemu_binary=config.get("iofuzz_qemu"),
        kind=config.get("iofuzz_finding"),
        occurrence=occurrence_index(config.get("iofuzz_occurrence")),
        outside_kills=bool(config.get("iofuzz_outside_kills")),
    )


@contextlib.contextmanager
def recorded_guest(header: dict[str, Any], run_dir: Path) -> Iterator[Any]:
    """A (not yet started) bare QEMU of the trace's machine; stopped by PID on the way out."""
    from avocado_iofuzz.repro.recorded_vm import RecordedQemu, guest_for
    from avocado_iofuzz.vm.bare import BareQemuError

    try:
        vm = RecordedQemu(header["qemu_cmdline"], guest_for(header), run_dir)
    except (BareQemuError, KeyError) as err:
        raise CliError(f"cannot build a guest of the recorded machine: {err}") from None
    try:
        yield vm
    finally:
        vm.stop()


@contextlib.contextmanager
def optional_guest(header: dict[str, Any], run_dir: Path, wanted: bool, say: Say) -> Iterator[Any]:
    """A guest for the in-guest fallback if wanted and one can be built (booted only if the fallback runs)."""
    if not wanted:
        yield None
        return
    try:
        guest = recorded_guest(header, run_dir)
        vm = guest.__enter__()
    except CliError as err:
        say(f"no in-guest fallback: {err}")
        yield None
        return
    try:
        yield vm
    finally:
        guest.__exit__(None, None, None)


def _hang_at(header: dict[str, Any]) -> tuple[int, int] | None:
    value = header.get(HEADER_HANG_AT)
    if isinstance(value, list | tuple) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None


def replay_command(config: dict[str, Any], say: Say) -> bool:
    path = Path(config["iofuzz_path"])
    if not path.exists():
        raise CliError(f"{path}: no such file")
    if is_trace(path):
        if config.get("iofuzz_in_guest"):
            raise CliError("--in-guest is for qtest scripts: a trace replays in a guest by default")
        return _replay_trace(path, config, say)
    return _replay_script(path, config, say)


def _replay_trace(path: Path, config: dict[str, Any], say: Say) -> bool:
    extracted = _extract(path, config)
    finding = extracted.finding
    say(f"finding: {finding.describe()}")
    if config.get("iofuzz_minimize"):
        outdir = Path(config.get("iofuzz_output") or path.with_name("triage"))
        options = _options(config)
        with optional_guest(extracted.header, outdir / "guest", options.guest_fallback, say) as vm:
            replayer = None
            if vm is not None:
                replayer = GuestReplayer(vm, hang_timeout=float(config.get("iofuzz_hang_timeout") or 20.0))
            result = triage(path, outdir, options, guest=replayer, extracted=extracted)
        say(result.summary())
        for name, file in sorted(result.files.items()):
            say(f"  {name}: {file}")
        if result.command:
            say(f"  run: {result.command}  (in {outdir})")
        return result.reproduced
    if config.get("iofuzz_qtest"):
        notes: list[str] = []
        reproduction = stage_replay_qtest(extracted, _options(config), notes)
        for note in notes:
            say(f"  {note}")
        if reproduction is None:
            say("qtest replay: not reproduced")
            return False
        say(
            f"qtest replay: reproduced by {reproduction.candidate} ({len(reproduction.ops)} ops, clock "
            f"{reproduction.target.clock if reproduction.target else '?'}): {reproduction.signature.describe()}"
        )
        return True
    outdir = Path(config.get("iofuzz_output") or path.with_name("replay"))
    hang_timeout = float(config.get("iofuzz_hang_timeout") or 20.0)
    campaign = CampaignConfig(
        report_every=int(extracted.header.get("report_every") or REPLAY_REPORT_EVERY),
        hang_timeout=hang_timeout,
        max_hangs=1,
        hang_at=_hang_at(extracted.header),
        pci_restore=extracted.pci_restore,
    )
    with recorded_guest(extracted.header, outdir / "guest") as vm:
        try:
            outcome, replay_trace = replay_trace_in_guest(vm, extracted, outdir, campaign)
        except GuestReplayError as err:
            raise CliError(str(err)) from None
    reproduced = signature_matches(finding.expected, outcome.signature)
    say(
        f"in-guest replay: {'REPRODUCED' if reproduced else 'not reproduced'}: {outcome.signature.describe()} "
        f"({outcome.detail}; {outcome.done} of {outcome.ops} ops in {outcome.elapsed:.1f} s)"
    )
    say(f"  replay trace: {replay_trace}")
    return reproduced


def _expected_from_triage(script: Path) -> CrashSignature | None:
    """A reproducer written by triage has triage.json next to it: the signature it must show."""
    data_path = script.with_name(TRIAGE_JSON)
    if not data_path.is_file():
        return None
    try:
        data = json.loads(data_path.read_text(encoding="utf-8"))
        return CrashSignature.from_dict(data.get("signature") or data["expected"])
    except (ValueError, KeyError, TypeError):
        return None


def _replay_script(path: Path, config: dict[str, Any], say: Say) -> bool:
    notes: list[str] = []
    try:
        ops = read_script(path, notes)
    except QtestScriptError as err:
        raise CliError(f"neither an iofuzz trace nor a valid qtest script: {err}") from None
    for note in notes:
        say(f"  {note}")
    machine, qemu_args = config.get("iofuzz_machine_from"), config.get("iofuzz_qemu_args")
    if machine and qemu_args:
        raise CliError("give the machine once: --machine-from TRACE or --qemu-args ARGS, not both")
    if not machine and not qemu_args:
        how = 'give --qemu-args "ARGS" or --machine-from TRACE'
        raise CliError(f"{path} is a qtest script: it names no machine; {how}")
    header = _extract_header(_trace_path(machine)) if machine else {}
    expected = _expected_from_triage(path)
    if config.get("iofuzz_in_guest"):
        if not machine:
            raise CliError("--in-guest needs --machine-from TRACE: the guest is built from the trace's machine")
        return _script_in_guest(path, ops, header, expected, config, say)
    target = _script_target(header, qemu_args, config)
    if config.get("iofuzz_minimize"):
        return _minimize_script(path, ops, target, expected, config, say)
    try:
        outcome_q = run_qtest(target, ops)
        if not outcome_q.signature.is_failure:
            # timer-driven crashes need the clock running
            running = target.running(replay_firmware())
            outcome_q = run_qtest(running, ops)
    except QtestStartError as err:
        raise CliError(str(err)) from None
    signature = outcome_q.signature
    say(f"qtest replay of {len(ops)} ops: {signature.describe()}")
    if expected is not None:
        reproduced = signature_matches(expected, signature)
        say(f"expected (triage.json): {expected.describe()} -> {'REPRODUCED' if reproduced else 'not reproduced'}")
        return reproduced
    return signature.is_failure


def _trace_path(machine: str) -> Path:
    machine_path = Path(machine)
    if not machine_path.is_file() or not is_trace(machine_path):
        raise CliError(f"--machine-from {machine}: not an iofuzz trace")
    return machine_path


def _script_target(header: dict[str, Any], qemu_args: str | None, config: dict[str, Any]) -> QtestTarget:
    """The qtest machine: the trace's, or the ARGS given (any binary named first is the default one)."""
    if not qemu_args:
        try:
            return qtest_target_for(header, config.get("iofuzz_qemu"))
        except ExtractError as err:
            raise CliError(str(err)) from None
    try:
        words = shlex.split(qemu_args)
    except ValueError as err:
        raise CliError(f"--qemu-args: {err}") from None
    if not words:
        raise CliError("--qemu-args is empty")
    named = "" if words[0].startswith("-") else words[0]
    binary = config.get("iofuzz_qemu") or named or shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
    try:
        # the replay rules: no host plumbing, chardev files nulled, drives snapshotted
        _, args = replay_args([binary, *(words[1:] if named else words)])
    except ReplayArgsError as err:
        raise CliError(f"--qemu-args: {err}") from None
    return QtestTarget(binary, tuple(args))


def _minimize_script(
    path: Path, ops: list[Op], target: QtestTarget, expected: CrashSignature | None, config: dict[str, Any], say: Say
) -> bool:
    outdir = Path(config.get("iofuzz_output") or path.with_name(path.stem + "-minimized"))
    options = TriageOptions(budget=float(config.get("iofuzz_budget") or 300.0))
    try:
        result = triage_script(ops, target, outdir, options, expected, source=str(path))
    except (QtestStartError, QtestHarnessError) as err:
        raise CliError(str(err)) from None
    say(result.summary())
    for note in result.notes:
        say(f"  note: {note}")
    for name, file in sorted(result.files.items()):
        say(f"  {name}: {file}")
    return result.reproduced


def _script_in_guest(
    path: Path, ops: list[Op], header: dict[str, Any], expected: CrashSignature | None, config: dict[str, Any],
    say: Say,
) -> bool:  # fmt: skip
    outdir = Path(config.get("iofuzz_output") or path.with_name("replay"))
    with recorded_guest(header, outdir / "guest") as vm:
        replayer = GuestReplayer(vm, hang_timeout=float(config.get("iofuzz_hang_timeout") or 20.0))
        try:
            outcome = replayer.run_ops(ops)
        except GuestReplayError as err:
            raise CliError(str(err)) from None
    say(f"in-guest replay of {len(ops)} ops: {outcome.signature.describe()} ({outcome.detail})")
    if expected is not None:
        reproduced = signature_matches(expected, outcome.signature)
        say(f"expected (triage.json): {expected.describe()} -> {'REPRODUCED' if reproduced else 'not reproduced'}")
        return reproduced
    return outcome.signature.is_failure


def _extract_header(path: Path) -> dict[str, Any]:
    from avocado_iofuzz.repro.extract import load_trace

    try:
        return load_trace(path).header
    except ExtractError as err:
        raise CliError(str(err)) from None


def export_command(config: dict[str, Any], say: Say) -> int:
    path = Path(config["iofuzz_path"])
    if not path.exists():
        raise CliError(f"{path}: no such file")
    if not is_trace(path):
        raise CliError(f"{path}: not an iofuzz trace (no {MAGIC.strip()} header)")
    extracted = _extract(path, config)
    part = config.get("iofuzz_part") or "window"
    candidate = next((c for c in extracted.candidates if c.name == part), None)
    if candidate is None:
        # a part with the same ops as a shorter one was folded into it
        candidate = extracted.candidates[-1] if part == "since-reset" else extracted.candidates[0]
    text = format_script([*extracted.setup, *candidate.ops])
    output = config.get("iofuzz_output")
    if output:
        Path(output).write_text(text, encoding="utf-8")
        say(f"{extracted.finding.describe()}: {len(candidate.ops)} ops ({candidate.name}) -> {output}")
    else:
        sys.stdout.write(text)
    return 0
