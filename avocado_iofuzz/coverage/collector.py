"""Collect which trace events a campaign reaches, range by range, switching each off once seen.

The collector is the campaign's progress observer. At the start it enables
the selected events over QMP, lets the idle guest run for a moment and takes
what fires then as *background* (timer IRQs, the console): events the guest
fires without any fuzzing op, so they are switched off and never counted as
reached. Then, at every progress mark ``@P range ops_done``, it reads what
QEMU appended to the trace file since the previous mark. The executor prints
a mark only after the ops before it ran, and QEMU writes (and flushes) an
event's line while the op runs, so the lines read at mark (r, n) came from
range r up to op n: each new name is attributed to that range and op, and
switched off at once -- seen once, an event says nothing more, and a hot
event (one per MMIO access) would otherwise cost a log line per op.

A QEMU restarted by hang recovery starts with every event off and truncates
the trace file: the collector notices the shorter file and enables again the
events not seen yet.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from avocado_iofuzz.coverage.catalog import Selection
from avocado_iofuzz.model.program import RangePlan

LOG = logging.getLogger("avocado.test.iofuzz")

# (command, arguments) -> the "return" value of a QMP command, as in vm/qom.py
QmpCall = Callable[[str, dict[str, Any]], Any]

BACKGROUND_SECONDS = 0.5
# the log backend prefixes lines with "pid@seconds.micros:" when QEMU runs with -msg timestamp=on
_TIMESTAMP = re.compile(rb"^\d+@\d+\.\d+:")


@dataclass(frozen=True)
class FirstSeen:
    """Where an event was first seen: range and op (at or before), ops of the run so far, seconds since start."""

    range_index: int | None  # None: after the last range's last mark (the executor's exit, deferred work)
    op: int
    ops_total: int
    time_s: float


class CoverageCollector:
    def __init__(
        self,
        selection: Selection,
        trace_file: Path,
        qmp: QmpCall,
        clock: Callable[[], float] = time.monotonic,
        background_seconds: float = BACKGROUND_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.selection = selection
        self.trace_file = Path(trace_file)
        self.qmp = qmp
        self.clock = clock
        self.sleep = sleep
        self.background_seconds = background_seconds
        self.watched = frozenset(selection.events)
        self.first_seen: dict[str, FirstSeen] = {}
        self.background: set[str] = set()
        self.plans: list[RangePlan] = []
        self._offsets: list[int] = []  # ops of the ranges before each range
        self._file: BinaryIO | None = None
        self._position = 0
        self._partial = b""
        self._range = 0  # the range in flight after the last mark (index into plans)
        self._op = 0
        self._started = 0.0
        self._qmp_failed = False

    # -- the campaign's observer protocol -------------------------------------
    def start(self, plans: Sequence[RangePlan]) -> None:
        """Enable the events; what fires while the guest idles is background."""
        self.plans = list(plans)
        total = 0
        self._offsets = []
        for plan in self.plans:
            self._offsets.append(total)
            total += plan.op_count
        self._enable(self.selection.patterns())
        self.sleep(self.background_seconds)
        self.background = set(self._read_new())
        self._switch_off(sorted(self.background))
        self._started = self.clock()

    def progress(self, range_index: int, ops_done: int) -> None:
        """A progress mark: what is new in the trace file ran in this range, up to this op."""
        if not self.plans:
            return
        self._record(self._read_new(), range_index, ops_done)
        if ops_done >= self.plans[range_index].op_count:
            self._range, self._op = range_index + 1, 0
        else:
            self._range, self._op = range_index, ops_done

    def finish(self) -> None:
        """The run ended: lines after the last mark belong to the range in flight (or to none if all ran)."""
        if not self.plans:
            return
        new = self._read_new()
        if self._range < len(self.plans):
            self._record(new, self._range, self._op)
        else:
            self._record(new, None, 0)
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- reading the trace file -------------------------------------------------
    def _read_new(self) -> list[str]:
        """Watched event names in the lines QEMU appended since the last read, in order, each once."""
        if self._file is None:
            try:
                self._file = open(self.trace_file, "rb")  # noqa: SIM115 -- kept open across marks
            except FileNotFoundError:
                return []
        if os.fstat(self._file.fileno()).st_size < self._position:
            self._rearm()
        data = self._file.read()
        if not data:
            return []
        self._position += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        names: dict[str, None] = {}
        for line in lines:
            name = _TIMESTAMP.sub(b"", line).split(b" ", 1)[0].decode("ascii", "replace")
            if name in self.watched:
                names[name] = None
        return list(names)

    def _rearm(self) -> None:
        """QEMU was restarted (a shorter file): read from the top, enable the events it has not shown yet."""
        LOG.info("coverage: QEMU restarted (trace file truncated); enabling the events not seen yet again")
        assert self._file is not None
        self._file.seek(0)
        self._position = 0
        self._partial = b""
        self._enable(sorted(self.watched - set(self.first_seen) - self.background))

    def _record(self, names: Sequence[str], range_index: int | None, op: int) -> None:
        new = [n for n in names if n not in self.first_seen and n not in self.background]
        if not new:
            return
        offset = self._offsets[range_index] if range_index is not None else sum(p.op_count for p in self.plans)
        seen = FirstSeen(range_index, op, offset + op, round(self.clock() - self._started, 3))
        for name in new:
            self.first_seen[name] = seen
        self._switch_off(new)

    # -- QMP ----------------------------------------------------------------------
    def _enable(self, names: Sequence[str]) -> None:
        for name in names:
            self._set_state(name, True)

    def _switch_off(self, names: Sequence[str]) -> None:
        for name in names:
            self._set_state(name, False)

    def _set_state(self, name: str, enable: bool) -> None:
        try:
            self.qmp("trace-event-set-state", {"name": name, "enable": enable})
        except Exception as err:  # a dead or busy monitor must not cost the run: coverage only gets coarser
            if not self._qmp_failed:
                LOG.warning("coverage: trace-event-set-state %s failed (%s); later failures not logged", name, err)
            self._qmp_failed = True
