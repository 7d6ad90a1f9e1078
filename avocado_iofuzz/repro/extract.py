"""Stage *extract*: from a trace to the finding and the op lists that may reproduce it.

A finding is a ``crash``, ``hang`` or ``reboot`` event of the trace (the
last one, or the one asked for). The ops that led to it are rebuilt from the
trace's events in execution order: every ``start`` of the executor ran its
plans from that position on until the next finding stopped it; a ``reset``,
``restart`` or ``reboot`` gave the devices a fresh state, so the ops before
it do not count. Candidates, shortest first:

``window``
    the ops the finding's window names (ops in flight when it happened);
``range``
    the finding's range from where the executor last (re)started in it up to
    the window's end (the device's own history);
``since-reset``
    everything executed since the devices last had a fresh state, capped to
    the most recent ``max_prefix_ops`` (the other devices' history too).

Where the executor put a ``pci`` range's function header back (event
``pci_restore``, see :mod:`avocado_iofuzz.model.pci_restore`), its config
writes follow the range's ops in every candidate: they are part of what QEMU
saw. Minimization may drop them like any other op; a reproducer is only kept
when a replay of it, as written, still shows the finding.

Under ``-qtest`` no firmware ran: the PCI setup (BARs and decoding the guest's
firmware had assigned, from the PCI listing the run recorded) is put in
front of every candidate as ops, so minimization keeps only what the finding
needs of it.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avocado_iofuzz.campaign.trace import Event, Trace, TraceError, read_trace
from avocado_iofuzz.model import pci_restore
from avocado_iofuzz.model.program import Op, RangePlan
from avocado_iofuzz.repro.qemu_args import ReplayArgsError, replay_args
from avocado_iofuzz.repro.qtest import parse_script
from avocado_iofuzz.repro.qtest_run import QtestTarget
from avocado_iofuzz.repro.signature import HANG, CrashSignature, signature_of_exit

LOG = logging.getLogger("avocado.test.iofuzz")

FINDING_KINDS = ("crash", "hang", "reboot")
_FRESH_STATE_EVENTS = ("reset", "restart")
DEFAULT_MAX_PREFIX_OPS = 2_000_000  # a timer bug may need ops from the first range (e1000e: 644 k ops back)
PCI_LISTING_KEY = "pci_listing"  # trace header key holding the guest's PCI listing
PCI_LISTING_FILE = "pci-resources.txt"  # ...or this file next to the trace


# written after each round of a guided run (avocado_iofuzz.guided.rounds); "ran_to": [range, op] when it ran to its end
ROUND_RAN = "guided_events"


class ExtractError(ValueError):
    """The trace holds nothing to reproduce, or not enough to replay it; the message says what."""


@dataclass(frozen=True)
class TraceFinding:
    """One finding of a trace: what happened, where, and the signature a replay must show."""

    kind: str  # crash, hang or reboot
    range_index: int
    range_name: str
    window: tuple[int, int]
    expected: CrashSignature
    event_line: int
    detail: str = ""

    def describe(self) -> str:
        return (
            f"{self.kind} in range {self.range_index} ({self.range_name}) ops [{self.window[0]}, {self.window[1]}): "
            f"{self.expected.describe()}"
        )


@dataclass(frozen=True)
class Candidate:
    """An op list that may reproduce the finding; ``setup`` ops go in front of it in a qtest replay."""

    name: str
    ops: list[Op] = field(repr=False)
    # (range_index, first, stop) spans of the trace's plans the ops are, in order: the in-guest
    # executor can generate them itself (see guest_replay.regenerating_command)
    spans: tuple[tuple[int, int, int], ...] = ()


@dataclass(frozen=True)
class Extracted:
    trace_path: Path
    header: dict[str, Any]
    plans: dict[int, RangePlan]
    finding: TraceFinding
    candidates: list[Candidate]
    setup: list[Op]  # PCI setup for qtest replays (empty without a recorded PCI listing)
    qtest_target: QtestTarget | None  # None: the recorded command line cannot be replayed under qtest
    qtest_problem: str = ""  # why there is no qtest target
    pci_restore: bool = False  # the run's executor put pci headers back (replays that run the executor do too)


def load_trace(path: str | os.PathLike[str]) -> Trace:
    """Read a trace for replay; a trace whose writer died mid-line is accepted (the crash case)."""
    path = Path(path)
    if not path.exists():
        raise ExtractError(f"{path}: no such trace file")
    if path.is_dir():
        raise ExtractError(f"{path}: is a directory, expected a trace file (trace.iofuzz)")
    try:
        return read_trace(path, allow_truncated_tail=True)
    except TraceError as err:
        raise ExtractError(f"not a usable iofuzz trace: {err}") from None


def find_finding(trace: Trace, kind: str | None = None, occurrence: int = -1) -> tuple[TraceFinding, Event]:
    """The finding event to reproduce: the last one (of ``kind`` if given), or the ``occurrence``-th."""
    if kind is not None and kind not in FINDING_KINDS:
        raise ExtractError(f"finding kind {kind!r} is not one of {', '.join(FINDING_KINDS)}")
    events = [e for e in trace.events if e.kind in FINDING_KINDS and (kind is None or e.kind == kind)]
    if not events:
        what = f"no {kind} event" if kind else "no crash, hang or reboot event"
        raise ExtractError(f"{trace.path}: {what}: nothing to reproduce (the run found nothing)")
    try:
        event = events[occurrence]
    except IndexError:
        raise ExtractError(f"{trace.path}: finding #{occurrence} asked for, the trace has {len(events)}") from None
    data = event.data
    try:
        range_index = int(data["range"])
        first, stop = (int(v) for v in data["window"])
    except (KeyError, TypeError, ValueError):
        raise ExtractError(f"{trace.path}:{event.line}: {event.kind} event lacks a range and window") from None
    plan = trace.plans.get(range_index)
    if plan is None:
        raise ExtractError(f"{trace.path}:{event.line}: {event.kind} event names range {range_index}, never recorded")
    if not 0 <= first <= stop <= plan.op_count:
        raise ExtractError(f"{trace.path}:{event.line}: window [{first}, {stop}) is outside range {range_index}")
    if event.kind == "crash":
        expected = signature_of_exit(data.get("qemu_exit") or {"status": None, "signal": None, "stderr_tail": ""})
    else:
        expected = HANG
    finding = TraceFinding(
        event.kind, range_index, plan.name, (first, stop), expected, event.line, str(data.get("detail", ""))
    )
    return finding, event


def executed_spans(trace: Trace, until: Event) -> list[tuple[int, int, int]]:
    """``(range_index, first, stop)`` spans the executor ran, in order, since the devices' last fresh state.

    Each ``start`` event ran the plans from its position on, in index order,
    until the next finding stopped it at that finding's window end (the run
    ended at ``until``'s window end).
    """
    order = sorted(trace.plans)
    spans: list[tuple[int, int, int]] = []
    position: tuple[int, int] | None = None
    for event in trace.events:
        if event.line > until.line:
            break
        if event.kind == "start":
            position = (int(event.data["range"]), int(event.data["op"]))
        elif event.kind in FINDING_KINDS and position is not None:
            end = (int(event.data["range"]), int(event.data["window"][1]))
            spans += _spans_between(trace, order, position, end)
            position = None
        elif event.kind == ROUND_RAN and position is not None and event.data.get("ran_to"):
            # a guided round that ran to its end (@DONE): the next round's start comes next
            end = (int(event.data["ran_to"][0]), int(event.data["ran_to"][1]))
            spans += _spans_between(trace, order, position, end)
            position = None
        if event.kind in _FRESH_STATE_EVENTS or (event.kind == "reboot" and event is not until):
            spans = []
    return spans


def restore_points(trace: Trace, until: Event) -> dict[tuple[int, int], list[Op]]:
    """``(range_index, op_index) -> config writes`` the executor made leaving a pci range there.

    Only since the devices' last fresh state, as :func:`executed_spans`.
    """
    points: dict[tuple[int, int], list[Op]] = {}
    for event in trace.events:
        if event.line > until.line:
            break
        if event.kind in _FRESH_STATE_EVENTS or (event.kind == "reboot" and event is not until):
            points = {}
        elif event.kind == pci_restore.RESTORE_EVENT:
            try:
                where = (int(event.data["range"]), int(event.data["op"]))
                points[where] = pci_restore.restore_ops(event.data)
            except (KeyError, TypeError, ValueError) as err:
                raise ExtractError(f"{trace.path}:{event.line}: unusable {event.kind} event: {err}") from None
    return points


def restoring_executor(trace: Trace, until: Event) -> bool:
    """Whether the executor that ran up to ``until`` put pci headers back (older runs' did not)."""
    setting = False
    for event in trace.events:
        if event.line > until.line:
            break
        if event.kind == "start":
            setting = bool(event.data.get(pci_restore.START_KEY, False))
    return setting


def _spans_between(
    trace: Trace, order: Sequence[int], start: tuple[int, int], end: tuple[int, int]
) -> list[tuple[int, int, int]]:
    spans = []
    for index in order[order.index(start[0]) : order.index(end[0]) + 1]:
        first = start[1] if index == start[0] else 0
        stop = end[1] if index == end[0] else trace.plans[index].op_count
        if first < stop:
            spans.append((index, first, stop))
    return spans


def _ops(
    plans: dict[int, RangePlan],
    spans: Sequence[tuple[int, int, int]],
    restores: dict[tuple[int, int], list[Op]] | None = None,
) -> Iterator[Op]:
    # each span is one start of the executor: a range with DMA-aware values had its scratch memory filled
    for index, first, stop in spans:
        yield from plans[index].ops_with_memory(first, stop)
        # leaving a pci range there, the executor put its header back
        yield from (restores or {}).get((index, stop), [])


def _last_spans(spans: Sequence[tuple[int, int, int]], limit: int) -> list[tuple[int, int, int]]:
    """The spans of the last ``limit`` ops of ``spans``."""
    kept: list[tuple[int, int, int]] = []
    remaining = limit
    for index, first, stop in reversed(spans):
        if remaining <= 0:
            break
        take = min(remaining, stop - first)
        kept.append((index, stop - take, stop))
        remaining -= take
    return list(reversed(kept))


def candidates_for(
    trace: Trace, finding: TraceFinding, event: Event, max_prefix_ops: int = DEFAULT_MAX_PREFIX_OPS
) -> list[Candidate]:
    plans = trace.plans
    index, (first, stop) = finding.range_index, finding.window
    spans = executed_spans(trace, event) or [(index, first, stop)]
    restores = restore_points(trace, event)
    # the device's own history: every span of this range since the fresh state
    own = [span for span in spans if span[0] == index] or [(index, first, stop)]
    wanted = [("window", [(index, first, stop)]), ("range", own), ("since-reset", spans)]
    candidates: list[Candidate] = []
    seen: set[int] = set()
    for name, candidate_spans in wanted:
        size = sum(s - f for _, f, s in candidate_spans)
        if not size or size in seen:
            continue  # same span as a shorter candidate (every span ends at the window's end)
        seen.add(size)
        if size > max_prefix_ops:
            LOG.info("candidate %s: %d ops, keeping the last %d", name, size, max_prefix_ops)
        kept = _last_spans(candidate_spans, max_prefix_ops)
        candidates.append(Candidate(name, list(_ops(plans, kept, restores)), tuple(kept)))
    return candidates


def pci_listing_of(trace_path: Path, header: dict[str, Any]) -> str:
    """The guest's PCI listing the run recorded: in the trace header, or the file next to the trace."""
    listing = header.get(PCI_LISTING_KEY)
    if isinstance(listing, str) and listing.strip():
        return listing
    sibling = trace_path.with_name(PCI_LISTING_FILE)
    if sibling.is_file():
        return sibling.read_text(encoding="utf-8", errors="replace")
    return ""


def pci_setup_ops(listing: str) -> list[Op]:
    """The config writes giving each PCI function its guest BARs, decoding on, as port ops."""
    if not listing.strip():
        return []
    from avocado_iofuzz.model.pci import PciListingError, parse_pci_listing
    from avocado_iofuzz.repro.qtest_ops import pci_setup_commands

    try:
        functions = parse_pci_listing(listing)
    except PciListingError as err:
        LOG.warning("recorded PCI listing unusable, no PCI setup for qtest replays: %s", err)
        return []
    return parse_script("\n".join(pci_setup_commands(functions)), "PCI setup")


def qtest_target_for(header: dict[str, Any], qemu_binary: str | None = None) -> QtestTarget:
    """The QEMU binary and machine/device args of a qtest replay of the recorded VM."""
    cmdline = header.get("qemu_cmdline")
    if not cmdline:
        raise ExtractError("the trace header records no qemu_cmdline: the machine to replay on is unknown")
    try:
        binary, args = replay_args(cmdline)
    except ReplayArgsError as err:
        raise ExtractError(f"recorded qemu_cmdline: {err}") from None
    if qemu_binary:
        binary = qemu_binary
    elif not Path(binary).is_file():
        found = shutil.which(Path(binary).name)
        if found is None:
            raise ExtractError(f"the recorded QEMU binary {binary} is not here, nor {Path(binary).name} on PATH")
        LOG.info("recorded QEMU binary %s is missing: using %s", binary, found)
        binary = found
    return QtestTarget(binary, tuple(args))


def extract(
    trace_path: str | os.PathLike[str],
    *,
    kind: str | None = None,
    occurrence: int = -1,
    max_prefix_ops: int = DEFAULT_MAX_PREFIX_OPS,
    qemu_binary: str | None = None,
) -> Extracted:
    """Stage *extract*: the finding, its candidate op lists, the PCI setup and the qtest target."""
    trace = load_trace(trace_path)
    finding, event = find_finding(trace, kind, occurrence)
    candidates = candidates_for(trace, finding, event, max_prefix_ops)
    setup = pci_setup_ops(pci_listing_of(trace.path, trace.header))
    target: QtestTarget | None = None
    problem = ""
    try:
        target = qtest_target_for(trace.header, qemu_binary)
    except ExtractError as err:
        problem = str(err)
    return Extracted(
        trace.path, trace.header, trace.plans, finding, candidates, setup, target, problem,
        pci_restore=restoring_executor(trace, event),
    )  # fmt: skip
