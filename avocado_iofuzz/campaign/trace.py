"""The trace: a write-ahead, line-oriented record of what a run sent to the guest.

The host records the ops of a batch *before* it starts the executor on them
(flushed and fsynced), then appends progress marks and events as they happen.
If QEMU or the guest dies, the trace names every op up to and including the
one in flight; ``Trace.window`` names the ops written but not confirmed done,
and the hang/crash events carry the exact window the campaign pinned down.

Format 2, one record per ``\\n``-terminated line::

    #IOFUZZ-TRACE {"format": 2, "generator": "<fingerprint>", "generator_parts": {...}, "seed": ..., <caller's keys>}
    R {"index": 0, "start": 96, "end": 100, "name": "keyboard", "seed": ..., "fuzz_count": 2, ...}
                                        (with "values": "dma" for DMA-aware values; no key: uniform)
    G <range_index> <first> <stop>      ops first..stop-1 of that range, as its generator makes them
    B <range_index> <first> <stop>      the same ops, listed one per line after it:
    r<port hex>                           read of the range's width
    w<port hex> <value hex>               write
    P <range_index> <ops_done>          executor confirmed ops 0..ops_done-1 of the range
    E {"kind": "hang", "t": <unix time>, "window": [first, stop], ...}   event: hang, crash, reset, ...

Why ``G``: the ops are a pure function of the range record (seed, bounds,
fuzz_count, width), so naming them costs a few bytes per batch however many
ops it holds, and writing them ahead costs one fsync, where listing them
costs ~7 bytes and ~2 µs of Python per op (a 10 M ops/s executor would wait
for its trace). The header's ``generator`` and ``generator_parts``
fingerprints pin the generator that gives ``G`` records their meaning: a
reader refuses a range whose ops (or scratch fills) its own generator would
make differently, instead of expanding it into other ops; a range that
uses only parts made the same way is read (see
:mod:`avocado_iofuzz.campaign.generator_parts`). ``B`` records
(format 1's only kind) list the ops for readers without the generator; they
are verified against it when read.

A range with DMA-aware values also writes the scratch memory: its contents
are a function of the range record too (``avocado_iofuzz.model.dma``), so
``G`` records name them as well; the header's ``scratch`` key records where
the memory is and when it is refilled, and the fingerprint covers the fills.

Progress marks are thinned to one per ``mark_interval`` seconds (the latest
is held and written before any other record, and a range's last mark at
once): a full-speed executor reports thousands of times per second, and a
mark matters only if the host itself dies before the campaign writes its
event -- then the window is wider, never wrong.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from avocado_iofuzz.campaign.generator_parts import (
    describe_changed_parts,
    format_op,
    generator_fingerprint,
    part_fingerprints,
    plan_parts,
    unchanged_parts,
)
from avocado_iofuzz.campaign.trace_ops import RangeOps
from avocado_iofuzz.model import dma
from avocado_iofuzz.model.dma_layouts import LAYOUT_GENERIC
from avocado_iofuzz.model.program import Op, RangePlan

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
MAGIC = "#IOFUZZ-TRACE "
# header keys the writer sets itself: a caller passing one (a replay copying a trace's header) is refused
WRITER_HEADER_KEYS = ("format", "generator", "generator_parts")
DEFAULT_MARK_INTERVAL = 1.0  # seconds between written progress marks
# Fields of a range record: everything RangePlan needs to regenerate the ops.
_PLAN_FIELDS = ("index", "start", "end", "name", "seed", "fuzz_count", "width", "space")
# ...and those written only when they differ from RangePlan's default, so that
# a uniform run's trace reads as it always did.
_OPTIONAL_PLAN_FIELDS: dict[str, str | int | None] = {
    "values": dma.VALUES_UNIFORM,
    "pause_every": 0,
    "pause_us": 0,
    "layout": LAYOUT_GENERIC,
    "fuzz_only": False,
    "fixed": None,
}
_EVENT_KIND = re.compile(r"[a-z][a-z0-9_]*\Z")
_INT_FIELDS = re.compile(r"(\d+) (\d+)\Z")
_BATCH_FIELDS = re.compile(r"(\d+) (\d+) (\d+)\Z")
_READ = re.compile(r"r([0-9a-f]+)\Z")
_WRITE = re.compile(r"w([0-9a-f]+) ([0-9a-f]+)\Z")


class TraceError(ValueError):
    """A trace file is malformed; the message starts with ``<path>:<line>:``."""


def scratch_header() -> dict[str, int | str]:
    """The header's ``scratch`` key: where the scratch memory of DMA-aware ranges is, and how it is kept."""
    return {
        "base": dma.SCRATCH_BASE,
        "size": dma.SCRATCH_SIZE,
        "epoch_ops": dma.SCRATCH_EPOCH_OPS,
        "kernel_param": dma.SCRATCH_KERNEL_PARAM,
    }


def _plan_record(plan: RangePlan) -> dict[str, Any]:
    record = {name: getattr(plan, name) for name in _PLAN_FIELDS}
    for name, default in _OPTIONAL_PLAN_FIELDS.items():
        if getattr(plan, name) != default:
            record[name] = getattr(plan, name)
    return record


_format_op = format_op


class TraceWriter:
    """Appends records to a new trace file; every batch is on disk before it returns.

    ``header`` is free-form (QEMU command line, machine config, ...) and must
    be JSON-serialisable. ``plans``, if given, are recorded up front and their
    seed, fuzz_count and ranges are added to the header. ``mark_interval``:
    progress marks closer together than this many seconds (``clock``) are
    held back, see the module doc; 0 writes every mark.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        header: dict[str, Any],
        plans: Sequence[RangePlan] = (),
        *,
        mark_interval: float = DEFAULT_MARK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = Path(path)
        self._plans: dict[int, RangePlan] = {}
        if mark_interval < 0:
            raise ValueError(f"mark_interval must be >= 0 seconds, got {mark_interval}")
        self._mark_interval = mark_interval
        self._clock = clock
        self._last_mark_time: float | None = None
        self._held_mark: tuple[int, int] | None = None
        for reserved in WRITER_HEADER_KEYS:
            if reserved in header:
                raise ValueError(f"trace header: {reserved!r} is reserved (set by the writer)")
        full_header = {
            "format": FORMAT_VERSION,
            "generator": generator_fingerprint(),
            "generator_parts": part_fingerprints(),
            **header,
        }
        if plans:
            if len({(p.seed, p.fuzz_count) for p in plans}) != 1:
                raise ValueError("trace plans must share seed and fuzz_count")
            summary = {
                "seed": plans[0].seed,
                "fuzz_count": plans[0].fuzz_count,
                "ranges": [[p.index, p.start, p.end, p.name, p.width] for p in plans],
            }
            if any(p.values != dma.VALUES_UNIFORM for p in plans):
                summary["scratch"] = scratch_header()
            for key, value in summary.items():
                if key in header and header[key] != value:
                    raise ValueError(f"trace header: {key}={header[key]!r} contradicts the plans ({value!r})")
            full_header.update(summary)
        try:
            header_line = MAGIC + json.dumps(full_header, sort_keys=True) + "\n"
        except (TypeError, ValueError) as exc:
            raise ValueError(f"trace header is not JSON-serialisable: {exc}") from None
        # "x": never clobber an earlier run's evidence.
        self._file: TextIO = open(self.path, "x", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._file.write(header_line)
        for plan in plans:
            self._record_plan(plan)
        self._sync()

    def write_ops(self, plan: RangePlan, first: int, stop: int, *, listed: bool = False) -> None:
        """Record ops ``first .. stop-1`` of ``plan``; durable on return.

        ``listed`` spells every op out (a ``B`` record, ~7 bytes per op)
        instead of naming the slice (a ``G`` record).
        """
        self.write_batches([(plan, first, stop)], listed=listed)

    def write_batches(self, batches: Iterable[tuple[RangePlan, int, int]], *, listed: bool = False) -> None:
        """Record several ``(plan, first, stop)`` op slices with one fsync; durable on return."""
        batches = list(batches)
        for plan, first, stop in batches:
            if not 0 <= first <= stop <= plan.op_count:
                raise ValueError(f"range {plan.index}: op slice {first}..{stop} is not within 0..{plan.op_count}")
        self._write_held_mark()
        write = self._file.write
        for plan, first, stop in batches:
            self._record_plan(plan)
            if listed:
                write(f"B {plan.index} {first} {stop}\n")
                write("".join(_format_op(op) for op in plan.ops(first, stop)))
            else:
                write(f"G {plan.index} {first} {stop}\n")
        self._sync()

    def progress(self, range_index: int, ops_done: int) -> None:
        """The executor confirmed ops ``0 .. ops_done-1`` of the range.

        Flushed, not fsynced: marks come often, and they only matter if the
        host process (not the machine) dies. Thinned, see the module doc.
        """
        plan = self._plans.get(range_index)
        if plan is None:
            raise ValueError(f"progress for range {range_index}, which has no ops in this trace")
        if not 0 <= ops_done <= plan.op_count:
            raise ValueError(f"progress for range {range_index}: {ops_done} is outside 0..{plan.op_count}")
        wrote = self._held_mark is not None and self._held_mark[0] != range_index
        if wrote:
            self._write_held_mark()
        now = self._clock()
        due = self._last_mark_time is None or now - self._last_mark_time >= self._mark_interval
        if due or ops_done == plan.op_count:
            self._held_mark = None
            self._write_mark(range_index, ops_done, now)
            wrote = True
        else:
            self._held_mark = (range_index, ops_done)
        if wrote:
            self._file.flush()

    def event(self, kind: str, /, **data: Any) -> None:
        """Record an event (hang, crash, reset, resume, ...) with a timestamp; durable on return."""
        if not _EVENT_KIND.match(kind):
            raise ValueError(f"event kind must be a lowercase word, got {kind!r}")
        if "kind" in data or "t" in data:
            raise ValueError("event data must not use the reserved keys 'kind' and 't'")
        try:
            payload = json.dumps({"kind": kind, "t": round(time.time(), 3), **data}, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"event {kind!r}: data is not JSON-serialisable: {exc}") from None
        self._write_held_mark()
        self._file.write(f"E {payload}\n")
        self._sync()

    def close(self) -> None:
        if not self._file.closed:
            self._write_held_mark()
            self._sync()
            self._file.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _write_mark(self, range_index: int, ops_done: int, now: float) -> None:
        self._file.write(f"P {range_index} {ops_done}\n")
        self._last_mark_time = now

    def _write_held_mark(self) -> None:
        """A held-back mark goes out before any other record, so records stay in time order."""
        if self._held_mark is not None:
            self._write_mark(*self._held_mark, self._clock())
            self._held_mark = None

    def _record_plan(self, plan: RangePlan) -> None:
        known = self._plans.get(plan.index)
        if known is None:
            self._plans[plan.index] = plan
            self._file.write(f"R {json.dumps(_plan_record(plan), sort_keys=True)}\n")
        elif known != plan:
            raise ValueError(f"range {plan.index} was recorded as {known}, now given as {plan}")

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())


@dataclass(frozen=True)
class Batch:
    """A ``G`` or ``B`` record: ops ``first .. stop-1`` of a range, written at ``line``.

    ``listed``: a ``B`` record, whose ops follow it one per line.
    """

    range_index: int
    first: int
    stop: int
    line: int
    listed: bool = False


@dataclass(frozen=True)
class ProgressMark:
    range_index: int
    ops_done: int
    line: int


@dataclass(frozen=True)
class Event:
    kind: str
    data: dict[str, Any]
    line: int


@dataclass
class Trace:
    """A parsed trace.

    ``ops[i]`` lists ``(op_index, Op)`` of range ``i`` by index, each once:
    a :class:`~avocado_iofuzz.campaign.trace_ops.RangeOps`, which computes the ops on
    access (compare it to a list, iterate it, index it).
    """

    path: Path
    header: dict[str, Any]
    plans: dict[int, RangePlan] = field(default_factory=dict)
    ops: dict[int, RangeOps] = field(default_factory=dict)
    batches: list[Batch] = field(default_factory=list)
    progress: list[ProgressMark] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    # Recovery only (allow_truncated_tail=True): the unterminated last line,
    # and a batch whose op records stop short (the writer died while writing it).
    truncated_tail: str | None = None
    incomplete_batch: Batch | None = None

    def last_done(self, range_index: int) -> int | None:
        """``ops_done`` of the range's latest progress mark, None if it has none."""
        for mark in reversed(self.progress):
            if mark.range_index == range_index:
                return mark.ops_done
        return None

    @property
    def last_progress(self) -> ProgressMark | None:
        """The latest progress mark of any range: where the executor was last seen."""
        return self.progress[-1] if self.progress else None

    def window(self, range_index: int) -> tuple[int, int]:
        """Ops ``(first, stop)`` of the range's latest batch not confirmed by a later mark.

        Empty (``first == stop``) once the whole batch was confirmed.
        """
        batch = next((b for b in reversed(self.batches) if b.range_index == range_index), None)
        if batch is None:
            raise ValueError(f"{self.path}: no ops of range {range_index} were written")
        stop = batch.stop
        if batch == self.incomplete_batch:
            stop = batch.first + self.ops[range_index].count_in(batch.first, batch.stop)
        first = batch.first
        for mark in self.progress:
            if mark.range_index == range_index and mark.line > batch.line:
                first = max(first, min(mark.ops_done, stop))
        return first, stop


def read_trace(path: str | os.PathLike[str], allow_truncated_tail: bool = False, verify: bool = True) -> Trace:
    """Parse a trace; ``TraceError("<path>:<line>: ...")`` on anything malformed.

    A last line without newline (the host died mid-write) is an error unless
    ``allow_truncated_tail``; then it and a short last batch are kept aside in
    ``truncated_tail`` / ``incomplete_batch`` and the rest is returned.
    ``verify`` checks that the trace's generator is this package's (format 2)
    and every listed op against it.
    """
    return _TraceReader(Path(path), allow_truncated_tail, verify).read()


class _TraceReader:
    def __init__(self, path: Path, allow_truncated_tail: bool, verify: bool):
        self.path = path
        self.allow_truncated_tail = allow_truncated_tail
        self.verify = verify
        self.format = FORMAT_VERSION
        self.lineno = 0
        self.pending: Batch | None = None  # listed batch whose ops are being read
        self.next_op = 0
        self.listed: dict[int, dict[int, Op]] = {}  # range -> op index -> op, from B records
        self.spans: dict[int, list[tuple[int, int]]] = {}  # range -> op slices held
        self.unchanged: frozenset[str] = frozenset()  # parts of the generator made as the writer made them
        self.header: dict[str, Any] = {}  # the trace's header: its generator's fingerprints, for messages

    def fail(self, what: str, lineno: int | None = None) -> TraceError:
        return TraceError(f"{self.path}:{lineno or self.lineno}: {what}")

    def read(self) -> Trace:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise TraceError(f"{self.path}:0: cannot read trace: {exc.strerror}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad_line = data.count(b"\n", 0, exc.start) + 1
            raise TraceError(f"{self.path}:{bad_line}: not UTF-8 text (byte {exc.start})") from None
        if not text:
            raise self.fail("empty file, expected a #IOFUZZ-TRACE header", 1)
        lines = text.split("\n")
        tail = lines.pop()  # "" when the file ends with a newline
        trace: Trace | None = None
        for self.lineno, line in enumerate(lines, start=1):
            if trace is None:
                trace = Trace(self.path, self.parse_header(line))
            else:
                self.parse_record(trace, line)
        if tail:
            tail_line = len(lines) + 1
            if not self.allow_truncated_tail:
                raise self.fail(
                    f"truncated final line (no newline; was the writer killed?): {tail[:60]!r}; "
                    "read_trace(..., allow_truncated_tail=True) recovers the lines before it",
                    tail_line,
                )
            if trace is None:
                raise self.fail("truncated header line: nothing to recover", tail_line)
            trace.truncated_tail = tail
        assert trace is not None  # text was non-empty, so there was a line
        if self.pending is not None:
            if not self.allow_truncated_tail:
                raise self.fail(
                    f"file ends inside the batch of line {self.pending.line}: it announced ops "
                    f"{self.pending.first}..{self.pending.stop - 1} of range {self.pending.range_index}, "
                    f"the ops from {self.next_op} on are missing"
                )
            trace.incomplete_batch = self.pending
            self.spans[self.pending.range_index].append((self.pending.first, self.next_op))
        trace.ops = {
            index: RangeOps(trace.plans[index], spans, self.listed.get(index, {}))
            for index, spans in self.spans.items()
        }
        return trace

    def parse_header(self, line: str) -> dict[str, Any]:
        if not line.startswith(MAGIC):
            raise self.fail(f"not an iofuzz trace: the first line must start with {MAGIC.strip()!r}")
        header = self.parse_json(line[len(MAGIC) :], "header")
        if header.get("format") not in READABLE_FORMATS:
            raise self.fail(
                f"trace format {header.get('format')!r} is not supported (expected one of {READABLE_FORMATS})"
            )
        self.format = header["format"]
        # checked per range record: a trace needs only the parts of the generator its ranges use
        self.unchanged = unchanged_parts(header)
        self.header = header
        return header

    def parse_json(self, text: str, what: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise self.fail(f"{what}: bad JSON: {exc.msg} at column {exc.colno}") from None
        if not isinstance(value, dict):
            raise self.fail(f"{what}: expected a JSON object, got {type(value).__name__}")
        return value

    def parse_record(self, trace: Trace, line: str) -> None:
        if line[:1] in ("r", "w"):
            self.parse_op(trace, line)
            return
        if self.pending is not None:
            raise self.fail(
                f"batch of line {self.pending.line} announced ops {self.pending.first}..{self.pending.stop - 1} "
                f"of range {self.pending.range_index}, but op {self.next_op} is followed by {line[:40]!r}"
            )
        kind, _, rest = line.partition(" ")
        if kind == "R":
            self.parse_range(trace, rest)
        elif kind == "B" or (kind == "G" and self.format >= 2):
            self.parse_batch(trace, rest, listed=kind == "B")
        elif kind == "P":
            match = _INT_FIELDS.match(rest)
            if not match:
                raise self.fail(f"progress record must be 'P <range_index> <ops_done>', got {line[:60]!r}")
            range_index, ops_done = int(match[1]), int(match[2])
            plan = self.plan(trace, range_index)
            if ops_done > plan.op_count:
                raise self.fail(f"progress {ops_done} of range {range_index} exceeds its {plan.op_count} ops")
            trace.progress.append(ProgressMark(range_index, ops_done, self.lineno))
        elif kind == "E":
            payload = self.parse_json(rest, "event")
            event_kind = payload.pop("kind", None)
            if not isinstance(event_kind, str):
                raise self.fail("event: the JSON object lacks a string 'kind'")
            trace.events.append(Event(event_kind, payload, self.lineno))
        else:
            kinds = "R, G, B, P, E or an op" if self.format >= 2 else "R, B, P, E or an op"
            raise self.fail(f"unknown record {line[:60]!r} (expected {kinds})")

    def plan(self, trace: Trace, range_index: int) -> RangePlan:
        plan = trace.plans.get(range_index)
        if plan is None:
            raise self.fail(f"range {range_index} has no range record (R) before this line")
        return plan

    def parse_range(self, trace: Trace, rest: str) -> None:
        record = self.parse_json(rest, "range record")
        missing = [name for name in _PLAN_FIELDS if name not in record]
        unknown = sorted(set(record) - set(_PLAN_FIELDS) - set(_OPTIONAL_PLAN_FIELDS))
        if missing or unknown:
            raise self.fail(f"range record: missing fields {missing}, unknown fields {unknown}")
        try:
            plan = RangePlan(**record)
        except ValueError as exc:
            raise self.fail(f"range record: {exc}") from None
        changed = [part for part in plan_parts(plan) if part not in self.unchanged]
        if self.format >= 2 and self.verify and changed:
            raise self.fail(
                f"range {plan.index} needs the op generator's {', '.join(changed)}, which this avocado-iofuzz "
                f"makes differently from the version that wrote the trace "
                f"({describe_changed_parts(self.header, changed)}): its G records would expand into other ops; "
                "read it with the avocado-iofuzz version that wrote it, or with verify=False"
            )
        known = trace.plans.get(plan.index)
        if known is not None and known != plan:
            raise self.fail(f"range record contradicts the earlier one for range {plan.index}")
        trace.plans[plan.index] = plan

    def parse_batch(self, trace: Trace, rest: str, listed: bool) -> None:
        kind = "B" if listed else "G"
        match = _BATCH_FIELDS.match(rest)
        if not match:
            raise self.fail(
                f"batch record must be '{kind} <range_index> <first> <stop>', got {kind + ' ' + rest[:60]!r}"
            )
        range_index, first, stop = (int(g) for g in match.groups())
        plan = self.plan(trace, range_index)
        if not first <= stop <= plan.op_count:
            raise self.fail(f"batch {first}..{stop} is not within range {range_index}'s ops 0..{plan.op_count}")
        batch = Batch(range_index, first, stop, self.lineno, listed)
        trace.batches.append(batch)
        spans = self.spans.setdefault(range_index, [])
        if not listed:
            spans.append((first, stop))
        elif first < stop:
            self.pending, self.next_op = batch, first

    def parse_op(self, trace: Trace, line: str) -> None:
        batch = self.pending
        if batch is None:
            raise self.fail(f"op record {line[:40]!r} outside a batch (no B record announced it)")
        plan = trace.plans[batch.range_index]
        read, write = _READ.match(line), _WRITE.match(line)
        if read:
            op = Op("r", int(read[1], 16), plan.width, 0, plan.space)
        elif write:
            op = Op("w", int(write[1], 16), plan.width, int(write[2], 16), plan.space)
        else:
            raise self.fail(f"bad op record {line[:40]!r} (expected 'r<port hex>' or 'w<port hex> <value hex>')")
        index = self.next_op
        if self.verify and op != plan.op(index):
            raise self.fail(
                f"op {index} of range {batch.range_index} is {line!r}, but the generator gives "
                f"{_format_op(plan.op(index)).strip()!r} (corrupt trace or different generator)"
            )
        ops = self.listed.setdefault(batch.range_index, {})
        earlier = ops.setdefault(index, op)
        if earlier != op:
            raise self.fail(f"op {index} of range {batch.range_index} differs from its earlier record")
        self.next_op += 1
        if self.next_op == batch.stop:
            self.spans[batch.range_index].append((batch.first, batch.stop))
            self.pending = None


__all__ = [
    "DEFAULT_MARK_INTERVAL",
    "FORMAT_VERSION",
    "Batch",
    "Event",
    "ProgressMark",
    "RangeOps",
    "Trace",
    "TraceError",
    "TraceWriter",
    "generator_fingerprint",
    "read_trace",
]
