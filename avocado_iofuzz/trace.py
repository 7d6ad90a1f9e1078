"""The trace: a write-ahead, line-oriented record of what a run sent to the guest.

The host writes the ops of a batch *before* it starts the executor on them
(flushed and fsynced), then appends progress marks and events as they happen.
If QEMU or the guest dies, the trace holds every op up to and including the
one in flight; ``Trace.window`` names the ops written but not confirmed done.

Format (version 1), one record per ``\\n``-terminated line::

    #IOFUZZ-TRACE {"format": 1, "seed": ..., "fuzz_count": ..., "ranges": [...], <caller's keys>}
    R {"index": 0, "start": 96, "end": 100, "name": "keyboard", "seed": ..., "fuzz_count": 2, ...}
    B <range_index> <first> <stop>      a batch: ops first..stop-1 of that range follow, one per line
    r<port hex>                         read of the range's width
    w<port hex> <value hex>             write
    P <range_index> <ops_done>          executor confirmed ops 0..ops_done-1 of the range
    E {"kind": "hang", "t": <unix time>, ...}   event: hang, crash, reset, resume, ...

Op records carry no index (it follows from the batch) and no width (the
range record has it): a fuzz write costs 7-9 bytes (``w3f8 a5\\n`` is 8), a
read 4-5, so a trace is about 8 bytes per op; ``B``/``P`` lines add a few bytes
per batch and per ``report_every`` ops. Ops are verified against the generator
when read back, so a trace written by a different generator is rejected.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from avocado_iofuzz.program import Op, RangePlan

FORMAT_VERSION = 1
MAGIC = "#IOFUZZ-TRACE "
# Fields of a range record: everything RangePlan needs to regenerate the ops.
_PLAN_FIELDS = ("index", "start", "end", "name", "seed", "fuzz_count", "width", "space")
_EVENT_KIND = re.compile(r"[a-z][a-z0-9_]*\Z")
_INT_FIELDS = re.compile(r"(\d+) (\d+)\Z")
_BATCH_FIELDS = re.compile(r"(\d+) (\d+) (\d+)\Z")
_READ = re.compile(r"r([0-9a-f]+)\Z")
_WRITE = re.compile(r"w([0-9a-f]+) ([0-9a-f]+)\Z")


class TraceError(ValueError):
    """A trace file is malformed; the message starts with ``<path>:<line>:``."""


def _plan_record(plan: RangePlan) -> dict[str, Any]:
    return {name: getattr(plan, name) for name in _PLAN_FIELDS}


def _format_op(op: Op) -> str:
    if op.kind == "r":
        return f"r{op.port:x}\n"
    return f"w{op.port:x} {op.value:x}\n"


class TraceWriter:
    """Appends records to a new trace file; every batch is on disk before it returns.

    ``header`` is free-form (QEMU command line, machine config, ...) and must
    be JSON-serialisable. ``plans``, if given, are recorded up front and their
    seed, fuzz_count and ranges are added to the header.
    """

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any], plans: Sequence[RangePlan] = ()):
        self.path = Path(path)
        self._plans: dict[int, RangePlan] = {}
        full_header = {"format": FORMAT_VERSION, **header}
        if header.get("format", FORMAT_VERSION) != FORMAT_VERSION:
            raise ValueError(f"trace header: 'format' is reserved (trace format {FORMAT_VERSION})")
        if plans:
            if len({(p.seed, p.fuzz_count) for p in plans}) != 1:
                raise ValueError("trace plans must share seed and fuzz_count")
            summary = {
                "seed": plans[0].seed,
                "fuzz_count": plans[0].fuzz_count,
                "ranges": [[p.index, p.start, p.end, p.name, p.width] for p in plans],
            }
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

    def write_ops(self, plan: RangePlan, first: int, stop: int) -> None:
        """Record ops ``first .. stop-1`` of ``plan``; durable on return."""
        if not 0 <= first <= stop <= plan.op_count:
            raise ValueError(f"range {plan.index}: op slice {first}..{stop} is not within 0..{plan.op_count}")
        self._record_plan(plan)
        write = self._file.write
        write(f"B {plan.index} {first} {stop}\n")
        write("".join(_format_op(op) for op in plan.ops(first, stop)))
        self._sync()

    def progress(self, range_index: int, ops_done: int) -> None:
        """The executor confirmed ops ``0 .. ops_done-1`` of the range.

        Flushed, not fsynced: marks come often, and they only matter if the
        host process (not the machine) dies.
        """
        plan = self._plans.get(range_index)
        if plan is None:
            raise ValueError(f"progress for range {range_index}, which has no ops in this trace")
        if not 0 <= ops_done <= plan.op_count:
            raise ValueError(f"progress for range {range_index}: {ops_done} is outside 0..{plan.op_count}")
        self._file.write(f"P {range_index} {ops_done}\n")
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
        self._file.write(f"E {payload}\n")
        self._sync()

    def close(self) -> None:
        if not self._file.closed:
            self._sync()
            self._file.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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
    """A ``B`` record: ops ``first .. stop-1`` of a range, written at ``line``."""

    range_index: int
    first: int
    stop: int
    line: int


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
    """A parsed trace. ``ops[i]`` lists ``(op_index, Op)`` of range ``i`` by index, each once."""

    path: Path
    header: dict[str, Any]
    plans: dict[int, RangePlan] = field(default_factory=dict)
    ops: dict[int, list[tuple[int, Op]]] = field(default_factory=dict)
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
            stop = batch.first + sum(1 for i, _ in self.ops.get(range_index, ()) if batch.first <= i < batch.stop)
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
    ``verify`` checks every op against the generator of its range record.
    """
    return _TraceReader(Path(path), allow_truncated_tail, verify).read()


class _TraceReader:
    def __init__(self, path: Path, allow_truncated_tail: bool, verify: bool):
        self.path = path
        self.allow_truncated_tail = allow_truncated_tail
        self.verify = verify
        self.lineno = 0
        self.pending: Batch | None = None  # batch whose ops are being read
        self.next_op = 0
        self.op_maps: dict[int, dict[int, Op]] = {}

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
            line = data.count(b"\n", 0, exc.start) + 1
            raise TraceError(f"{self.path}:{line}: not UTF-8 text (byte {exc.start})") from None
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
        trace.ops = {index: sorted(ops.items()) for index, ops in self.op_maps.items()}
        return trace

    def parse_header(self, line: str) -> dict[str, Any]:
        if not line.startswith(MAGIC):
            raise self.fail(f"not an iofuzz trace: the first line must start with {MAGIC.strip()!r}")
        header = self.parse_json(line[len(MAGIC) :], "header")
        if header.get("format") != FORMAT_VERSION:
            raise self.fail(f"trace format {header.get('format')!r} is not supported (expected {FORMAT_VERSION})")
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
        elif kind == "B":
            self.parse_batch(trace, rest)
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
            raise self.fail(f"unknown record {line[:60]!r} (expected R, B, P, E or an op)")

    def plan(self, trace: Trace, range_index: int) -> RangePlan:
        plan = trace.plans.get(range_index)
        if plan is None:
            raise self.fail(f"range {range_index} has no range record (R) before this line")
        return plan

    def parse_range(self, trace: Trace, rest: str) -> None:
        record = self.parse_json(rest, "range record")
        missing = [name for name in _PLAN_FIELDS if name not in record]
        unknown = sorted(set(record) - set(_PLAN_FIELDS))
        if missing or unknown:
            raise self.fail(f"range record: missing fields {missing}, unknown fields {unknown}")
        try:
            plan = RangePlan(**record)
        except ValueError as exc:
            raise self.fail(f"range record: {exc}") from None
        known = trace.plans.get(plan.index)
        if known is not None and known != plan:
            raise self.fail(f"range record contradicts the earlier one for range {plan.index}")
        trace.plans[plan.index] = plan

    def parse_batch(self, trace: Trace, rest: str) -> None:
        match = _BATCH_FIELDS.match(rest)
        if not match:
            raise self.fail(f"batch record must be 'B <range_index> <first> <stop>', got {'B ' + rest[:60]!r}")
        range_index, first, stop = (int(g) for g in match.groups())
        plan = self.plan(trace, range_index)
        if not first <= stop <= plan.op_count:
            raise self.fail(f"batch {first}..{stop} is not within range {range_index}'s ops 0..{plan.op_count}")
        batch = Batch(range_index, first, stop, self.lineno)
        trace.batches.append(batch)
        self.op_maps.setdefault(range_index, {})
        if first < stop:
            self.pending, self.next_op = batch, first

    def parse_op(self, trace: Trace, line: str) -> None:
        batch = self.pending
        if batch is None:
            raise self.fail(f"op record {line[:40]!r} outside a batch (no B record announced it)")
        plan = trace.plans[batch.range_index]
        read, write = _READ.match(line), _WRITE.match(line)
        if read:
            op = Op("r", int(read[1], 16), plan.width, 0)
        elif write:
            op = Op("w", int(write[1], 16), plan.width, int(write[2], 16))
        else:
            raise self.fail(f"bad op record {line[:40]!r} (expected 'r<port hex>' or 'w<port hex> <value hex>')")
        index = self.next_op
        if self.verify and op != plan.op(index):
            raise self.fail(
                f"op {index} of range {batch.range_index} is {line!r}, but the generator gives "
                f"{_format_op(plan.op(index)).strip()!r} (corrupt trace or different generator)"
            )
        ops = self.op_maps[batch.range_index]
        earlier = ops.setdefault(index, op)
        if earlier != op:
            raise self.fail(f"op {index} of range {batch.range_index} differs from its earlier record")
        self.next_op += 1
        if self.next_op == batch.stop:
            self.pending = None


__all__ = [
    "FORMAT_VERSION",
    "Batch",
    "Event",
    "ProgressMark",
    "Trace",
    "TraceError",
    "TraceWriter",
    "read_trace",
]
