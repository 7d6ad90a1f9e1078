"""Crash triage inside the ``iofuzz`` VT test: params, triage after a finding, and replay mode.

Params (see cfg/iofuzz.cfg):

``minimize`` (yes)
    after a QEMU crash, reproduce and minimize it (qtest replays first,
    in-guest replays as the fallback) and write the reproducer files into
    the test's output dir; the FAIL reason names them.
``minimize_hangs`` (no)
    the same for a hang (slower: every hanging replay waits out a timeout).
``minimize_budget`` (300) / ``minimize_guest_budget`` (600)
    seconds for qtest minimization and for in-guest replays (0: no in-guest
    fallback: it restarts the VM for every attempt).
``iofuzz_replay`` (empty)
    a trace (or a qtest reproducer) to replay in this test's VM instead of
    fuzzing: the test FAILs if the finding comes back, PASSes if not.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avocado_iofuzz.campaign.runner import CampaignConfig
from avocado_iofuzz.campaign.trace import MAGIC
from avocado_iofuzz.repro.extract import PCI_LISTING_KEY, ExtractError, extract
from avocado_iofuzz.repro.guest_replay import GuestReplayer, GuestReplayError, replay_trace_in_guest
from avocado_iofuzz.repro.pipeline import TriageOptions, TriageResult, signature_matches, triage
from avocado_iofuzz.repro.qemu_args import ReplayArgsError, replay_args
from avocado_iofuzz.repro.qtest import QtestScriptError, describe_ops, read_script

LOG = logging.getLogger("avocado.test.iofuzz")

TRIAGE_DIR = "triage"
HEADER_HANG_AT = "debug_hang_at"
HEADER_REPORT_EVERY = "report_every"


@dataclass(frozen=True)
class TriageParams:
    minimize: bool = True
    minimize_hangs: bool = False
    budget: float = 300.0
    guest_budget: float = 600.0
    replay: str = ""


def header_extras(pci_listing: str, hang_at: tuple[int, int] | None, report_every: int) -> dict[str, Any]:
    """What a trace header needs for replays beyond the command line: the PCI setup, the
    executor's progress interval (a replay's windows then match the run's) and fault injection."""
    extras: dict[str, Any] = {HEADER_REPORT_EVERY: report_every}
    if pci_listing.strip():
        extras[PCI_LISTING_KEY] = pci_listing
    if hang_at is not None:
        extras[HEADER_HANG_AT] = list(hang_at)
    return extras


def triage_finding(
    trace_path: Path,
    outdir: Path,
    kind: str,
    triage_params: TriageParams,
    guest: Any,
    executor: str,
    hang_timeout: float,
    login_timeout: float,
) -> TriageResult | None:
    """Triage the run's ``kind`` finding into ``outdir/triage``; None when the params say not to.

    Never raises for a triage that fails: the run's own verdict must stand,
    so problems become notes in the result (and the log). ``guest`` (the
    test's VM) is left alone: in-guest replays run on a twin of the recorded
    machine (:func:`replay_machine`).
    """
    wanted = triage_params.minimize if kind == "crash" else triage_params.minimize_hangs
    if not wanted:
        return None
    options = TriageOptions(
        budget=triage_params.budget,
        guest_budget=triage_params.guest_budget,
        guest_fallback=triage_params.guest_budget > 0,
        kind=kind,
    )
    try:
        with replay_machine(trace_path, outdir / TRIAGE_DIR / "guest", options.guest_fallback) as machine:
            replayer = None
            if machine is not None:
                replayer = GuestReplayer(
                    machine, executor=executor, hang_timeout=hang_timeout, login_timeout=login_timeout
                )
            result = triage(trace_path, outdir / TRIAGE_DIR, options, guest=replayer)
    except Exception as err:  # the run's verdict must not be lost to a triage problem
        LOG.exception("crash triage failed: %s", err)
        return None
    LOG.info("triage: %s", result.summary())
    for note in result.notes:
        LOG.info("triage note: %s", note)
    return result


@contextlib.contextmanager
def replay_machine(trace_path: Path, run_dir: Path, wanted: bool) -> Iterator[Any]:
    """A bare QEMU of the recorded machine for in-guest replays (not started yet), or None.

    Not the test's own VM: restarting it would run the user's command line
    again, which re-opens and truncates the files it names (``-chardev file``
    outputs, logs): the evidence of the crash. The recorded machine comes
    without them (:mod:`~avocado_iofuzz.repro.qemu_args`). A user's disk
    image guest has no such twin: no in-guest replay then.
    """
    if not wanted:
        yield None
        return
    from avocado_iofuzz.repro.extract import load_trace
    from avocado_iofuzz.repro.recorded_vm import RecordedQemu, guest_for
    from avocado_iofuzz.vm.bare import BareQemuError

    header = load_trace(trace_path).header
    try:
        accel = header.get("accelerator") if header.get("accelerator") in ("kvm", "tcg") else None
        machine = RecordedQemu(str(header.get("qemu_cmdline") or ""), guest_for(header), run_dir, accel=accel)
    except BareQemuError as err:
        LOG.warning("triage: no in-guest replay: %s", err)
        yield None
        return
    try:
        yield machine
    finally:
        machine.stop()
        with contextlib.suppress(OSError):  # never booted: leave no empty folder behind
            run_dir.rmdir()


def fail_reason(result: TriageResult | None) -> str:
    """The triage part of the FAIL reason: what reproduces it and where the reproducer is."""
    if result is None:
        return ""
    if not result.reproduced:
        return f"; triage: {result.summary()}"
    text = f"; triage: {result.summary()}"
    if result.files.get("shell"):
        text += f"; run {result.files['shell']}"
    return text


def _device_differences(recorded: str, current: str) -> list[str]:
    """Machine/device args of the recorded VM that this VM lacks (a replay on another machine proves little)."""
    try:
        _, then = replay_args(recorded)
        _, now = replay_args(current)
    except ReplayArgsError:
        return []
    return sorted(f"{a} {b}" for a, b in _machine_pairs(then) - _machine_pairs(now))


def _machine_pairs(args: list[str]) -> set[tuple[str, str]]:
    return {(a, b) for a, b in itertools.pairwise(args) if a in ("-device", "-machine")}


def run_replay(test: Any, replay: str, guest: Any, outdir: Path, settings: Any, executor: str) -> None:
    """Replay mode: re-execute ``replay`` (a trace or a qtest reproducer) in this VM and judge."""
    path = Path(replay)
    with path.open("rb") as stream:
        is_trace = stream.read(len(MAGIC)) == MAGIC.encode()
    if not is_trace:
        try:
            ops = read_script(path)
        except QtestScriptError as err:
            test.error(f"param iofuzz_replay: neither an iofuzz trace nor a qtest script: {err}")
        replayer = GuestReplayer(
            guest, executor=executor, hang_timeout=settings.hang_timeout, login_timeout=settings.login_timeout
        )
        try:
            outcome = replayer.run_ops(ops, fresh=False)
        except GuestReplayError as err:
            test.error(f"replay of {path} could not run: {err}")
        LOG.info("replay of %s (%d ops): %s", path, len(ops), outcome.signature.describe())
        if outcome.signature.is_failure:
            test.fail(f"reproduced: {outcome.signature.describe()} by {describe_ops(ops, 6)} ({path})")
        LOG.info("not reproduced: all %d ops ran, QEMU and the guest kept going", len(ops))
        return
    try:
        extracted = extract(path)
    except ExtractError as err:
        test.error(f"param iofuzz_replay: {err}")
    missing = _device_differences(str(extracted.header.get("qemu_cmdline", "")), guest.qemu_cmdline())
    if missing:
        LOG.warning("this VM lacks the recorded %s: add them (extra_params) for a faithful replay", missing)
    finding = extracted.finding
    LOG.info("replaying %s: %s", path, finding.describe())
    hang_at = extracted.header.get(HEADER_HANG_AT)
    config = CampaignConfig(
        report_every=int(extracted.header.get(HEADER_REPORT_EVERY) or settings.report_every),
        hang_timeout=settings.hang_timeout,
        max_hangs=1,
        login_timeout=settings.login_timeout,
        hang_at=tuple(hang_at) if isinstance(hang_at, list) and len(hang_at) == 2 else None,
        executor=executor,
        pci_restore=extracted.pci_restore,
    )
    try:
        outcome, replay_trace = replay_trace_in_guest(guest, extracted, outdir, config, fresh=False)
    except GuestReplayError as err:
        test.error(f"replay of {path} could not run: {err}")
    LOG.info("replay: %s (%s); its trace: %s", outcome.signature.describe(), outcome.detail, replay_trace)
    if signature_matches(finding.expected, outcome.signature):
        test.fail(f"reproduced {finding.kind}: {outcome.signature.describe()} ({outcome.detail}); replay of {path}")
    LOG.info("not reproduced: %s", outcome.detail)
