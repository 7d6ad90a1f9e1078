"""Collect which trace events a campaign reaches, range by range, switching each off once seen.

The collector is the campaign's progress observer. At the start it enables
the selected events over QMP, lets the idle guest run for a moment and takes
what fires then as *background* (timer IRQs), as are the events that fire
before the run's first op (the executor's command line on the console, the
kernel enabling a BAR for it): events no fuzzing op caused, so they are
switched off and never counted as reached.

Attribution is exact because the trace file carries its own clock: the
collector also enables ``serial_write``, so every byte the guest writes to
the console UART is a line of the same file, in order with the device's
events. The executor drains each progress mark ``@P range ops_done`` to the
UART before its next op, so an event line between the marks (r, a) and
(r, b) in the file came from ops a..b-1 of range r. The campaign's own marks
(read from the console in chunks, possibly after several more ops ran) only
say *when* to read the file. Each new event is switched off at once: seen
once, an event says nothing more, and a hot event (one per MMIO access)
would otherwise cost a log line per op.

A collector reads the file from where it stood at :meth:`start`: a QEMU
that served earlier runs (benchmarks run campaign after campaign on one)
holds their lines, whose marks and events are not this run's.

A QEMU restarted by hang recovery starts with every event off and truncates
the trace file: the collector notices the shorter file and enables again
``serial_write`` and the events not seen yet.

Guided rounds want more than names: with ``count_hits`` the collector also
counts, per range, how often each event fired (:attr:`CoverageCollector.hits`),
so a batch that drives a device further down a path it already knew (more
descriptors walked, a command taken through more steps) shows as more hits.
Events then stay on after their first sighting; an event that reaches
:data:`HIT_CAP` hits in a range is switched off (the top bucket of the
guided signal, more says nothing new) and on again when the collector reads
the next range's first mark. The executor has run on by then, so a hot
event's count in the range after a capped one can come out low: a count is a
lower bound, never more than what QEMU wrote. Blind runs keep the names-only
cost: each event off at first sight.

With an :class:`~avocado_iofuzz.coverage.arguments.ArgumentReader` (guided
rounds, the events of the ``[arguments]`` table) a counted line also counts
under its argument-qualified key, ``virtio_set_status(val=0xf)``, in the same
per-range :attr:`~CoverageCollector.hits`: the steps that take a device deeper
fire the same event with other arguments. The cap stays the event's: once its
name has HIT_CAP hits QEMU writes no more lines, qualified or not. Events
*reached* (:attr:`~CoverageCollector.first_seen`, the summaries' and the
benchmarks' metric) stay keyed by name.

The collector keeps what it has switched on in QEMU and sends no switch to
the state an event is in already (a capped event taken on again at the next
range's mark while the read that capped it has not switched it off yet): the
same transitions in QEMU, fewer QMP round trips. A guided run may
:meth:`~CoverageCollector.retire` events that can teach nothing more (every
hit-count bucket in the corpus): off for the rest of the run, on again
neither at the next range nor after a restart, and not counted.
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

from avocado_iofuzz.coverage.arguments import ArgumentReader
from avocado_iofuzz.coverage.catalog import Selection
from avocado_iofuzz.executor.protocol import Progress, parse_line
from avocado_iofuzz.model.program import RangePlan

LOG = logging.getLogger("avocado.test.iofuzz")

# (command, arguments) -> the "return" value of a QMP command, as in vm/qom.py
QmpCall = Callable[[str, dict[str, Any]], Any]

BACKGROUND_SECONDS = 0.5
# the log backend prefixes lines with "pid@seconds.micros:" when QEMU runs with -msg timestamp=on
_TIMESTAMP = re.compile(rb"^\d+@\d+\.\d+:")
# the console's clock: every byte written to a 16550's registers ("serial_write write addr 0x00 val 0x40")
CONSOLE_EVENT = "serial_write"
_CONSOLE_BYTE = re.compile(rb"addr 0x0*([0-9a-f]+) val 0x([0-9a-f]+)")
_CONSOLE_NAME = CONSOLE_EVENT.encode()
_CONSOLE_CACHE = 4096  # distinct serial_write texts remembered (8 registers x 256 values fit)
# with count_hits: hits of one event in one range past which it is switched off until the next range
# (the guided signal's top bucket, see avocado_iofuzz.guided.features)
HIT_CAP = 128


@dataclass(frozen=True)
class FirstSeen:
    """Where an event was first seen: range and op (at or before), ops of the run so far, seconds since start."""

    range_index: int | None  # None: after the last range's last mark (the executor's exit, deferred work)
    # the range's ops done at the first mark after the event (it came from an op before); for an event
    # after the last mark of the run (deferred work, a window that hung or crashed): the ops done by then
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
        count_hits: bool = False,
        arguments: ArgumentReader | None = None,
    ) -> None:
        self.selection = selection
        self.count_hits = count_hits
        # qualified keys only go with counting: a names-only (blind) run never parses an argument
        self.arguments = arguments if count_hits and arguments is not None and arguments.readers else None
        self.trace_file = Path(trace_file)
        self.qmp = qmp
        self.clock = clock
        self.sleep = sleep
        self.background_seconds = background_seconds
        self.watched = frozenset(selection.events) - {CONSOLE_EVENT}
        # the names as they stand in the file: no decoding per line (a name that is no ASCII is not watched)
        self._watched_names = {event.encode("ascii"): event for event in self.watched if event.isascii()}
        # the names whose lines' argument text is kept for the argument reader (guided runs only)
        self._qualify = frozenset(
            raw for raw, event in self._watched_names.items() if self.arguments is not None and event in self.arguments
        )
        self._console_values: dict[bytes, int | None] = {}
        self.first_seen: dict[str, FirstSeen] = {}
        self.background: set[str] = set()
        self.plans: list[RangePlan] = []
        self._offsets: list[int] = []  # ops of the ranges before each range
        self._file: BinaryIO | None = None
        self._position = 0
        self._partial = b""
        self._range = 0  # the range in flight after the last mark in the file (index into plans)
        self._op = 0
        self._console = bytearray()  # the console line being written, from serial_write lines
        self._pending: dict[str, float] = {}  # new events since the last mark in the file -> when read
        self._started = 0.0
        self._qmp_failed = False
        # count_hits: range index (None: after the last mark) -> event -> hits, since start or next_round;
        # with arguments also argument-qualified keys -> hits
        self.hits: dict[int | None, dict[str, int]] = {}
        self._pending_hits: dict[str, int] = {}  # hits since the last mark in the file
        self._capped: set[str] = set()  # switched off for reaching HIT_CAP in the range in flight
        # counting: seen events no later line can teach anything (retire), off for the rest of the run
        self.retired: set[str] = set()
        # what this collector has switched on in QEMU (None: not known, every switch is sent): a switch to the
        # state an event is in already changes nothing QEMU writes and costs a QMP round trip
        self._on: set[str] | None = None
        self.bytes_read = 0  # of the trace file since start, and its lines: what QEMU wrote while events were on
        self.lines_read = 0

    @property
    def started_at(self) -> float:
        """The clock's reading when the run's first op could start: ``FirstSeen.time_s`` counts from here."""
        return self._started

    # -- the campaign's observer protocol -------------------------------------
    def start(self, plans: Sequence[RangePlan]) -> None:
        """Enable the events; what fires while the guest idles is background."""
        self.plans = list(plans)
        total = 0
        self._offsets = []
        for plan in self.plans:
            self._offsets.append(total)
            total += plan.op_count
        self._skip_history()
        self._on = None
        self._enable([CONSOLE_EVENT, *self.selection.patterns()])
        self._on = {CONSOLE_EVENT, *self.selection.events}  # the patterns enable exactly the selection's events
        self.sleep(self.background_seconds)
        self._read()
        self.background = set(self._pending)
        self._pending = {}
        if self.count_hits:  # counting keeps seen events on: the idle guest's are off for good
            self._pending_hits = {}
            self._capped = set()  # a busy idle event may have hit the cap: off for good, not until the next range
            self._switch_off(sorted(self.background))
        self._started = self.clock()

    def progress(self, range_index: int, ops_done: int) -> None:
        """A mark the campaign read: the file holds at least this far; attribute what it holds."""
        if self.plans:
            self._read()

    def finish(self) -> None:
        """The run ended: attribute what is left (:meth:`settle`), then switch every event off."""
        if not self.plans:
            return
        self.settle()
        # leave QEMU as it was: triage replays and later runs in this VM must not pay for events never seen
        self._on = None
        self._switch_off([CONSOLE_EVENT, *self.selection.patterns()])
        self._on = set()
        if self._file is not None:
            self._file.close()
            self._file = None

    def settle(self) -> None:
        """Events after the last mark in the file belong to the range in flight (none if all ran)."""
        if not self.plans:
            return
        self._read()
        if self._range < len(self.plans):
            self._resolve(self._range, self._op)
        else:
            self._resolve(None, 0)

    def next_round(self, plans: Sequence[RangePlan]) -> None:
        """Another campaign on the same QEMU (guided rounds): new plans, the events left armed, no new baseline.

        Call :meth:`settle` after the previous one; its marks are behind the
        file position, so the new plans' marks are the next ones read.
        """
        self.plans = list(plans)
        self._offsets = []
        total = 0
        for plan in self.plans:
            self._offsets.append(total)
            total += plan.op_count
        self._range, self._op = 0, 0
        self.hits, self._pending_hits = {}, {}
        self._uncap()

    # -- reading the trace file -------------------------------------------------
    def _read(self) -> None:
        """Go through the lines QEMU appended since the last read: console bytes move the position, events wait.

        A guided run reads millions of lines (nvme: 3.5 M in 30 s, HIT_CAP lines per event and range), so
        the loop does per line only what must be done in order: split off the name, follow the console's
        bytes, and keep the argument text of the events that qualify by arguments. Counting and knowing are
        per *segment* (the lines between two console newlines): nothing they depend on (the range in
        flight, the background, the caps switched on again) changes inside one, so a segment's events are
        counted once each, in the order they first appeared.
        """
        if self._file is None:
            try:
                self._file = open(self.trace_file, "rb")  # noqa: SIM115 -- kept open across marks
            except FileNotFoundError:
                return
        if os.fstat(self._file.fileno()).st_size < self._position:
            self._rearm()
        data = self._file.read()
        if not data:
            return
        self._position += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        self.bytes_read += len(data)
        self.lines_read += len(lines)
        now = self.clock()
        new: list[str] = []
        segment: dict[bytes, int] = {}  # name -> lines since the last console newline, in first-seen order
        qualifying: list[tuple[bytes, bytes]] = []  # (name, argument text) of events read by arguments, in order
        qualify = self._qualify
        for line in lines:
            space = line.find(b" ")
            name = line if space < 0 else line[:space]
            if name[:1].isdigit():  # "pid@seconds.micros:NAME": QEMU run with -msg timestamp=on
                line = _TIMESTAMP.sub(b"", line)
                space = line.find(b" ")
                name = line if space < 0 else line[:space]
            if name == _CONSOLE_NAME:
                byte = self._console_value(b"" if space < 0 else line[space + 1 :])
                if byte is None:
                    continue
                if byte != 0x0A:
                    self._console.append(byte)
                    continue
                self._tally(segment, qualifying, now, new)  # before the mark that may attribute them
                segment, qualifying = {}, []
                self._console_line()
                continue
            segment[name] = segment.get(name, 0) + 1
            if name in qualify:
                qualifying.append((name, b"" if space < 0 else line[space + 1 :]))
        self._tally(segment, qualifying, now, new)
        # off at once, before the mark that attributes them is in the file: a hot event stops costing now
        # (counting: only the events that reached the cap in this range)
        self._switch_off(new if not self.count_hits else [e for e in new if e in self._capped])

    def _tally(
        self, segment: dict[bytes, int], qualifying: list[tuple[bytes, bytes]], now: float, new: list[str]
    ) -> None:
        """One segment's lines: new events wait for their mark, hits count (``new``: events to switch off)."""
        counting = self.count_hits
        retired = self.retired
        for raw, lines in segment.items():
            event = self._watched_names.get(raw)
            if event is None or event in retired:
                continue
            if not self._known(event):
                self._pending[event] = now
                new.append(event)
            if counting and event not in self.background:
                self._count(event, new, lines)
        arguments = self.arguments
        if arguments is None:
            return
        for raw, args in qualifying:
            event = self._watched_names[raw]
            if event not in self.background:  # counting: qualify is empty otherwise
                self._count_qualified(arguments, event, args)

    def _count(self, event: str, capped_now: list[str], lines: int = 1) -> None:
        """``lines`` more hits since the last mark; at the cap it goes off (``capped_now``) till the next range."""
        hits = self._pending_hits.get(event, 0) + lines
        self._pending_hits[event] = hits
        if event in self._capped:
            return
        if hits + self.hits.get(self._range, {}).get(event, 0) >= HIT_CAP:
            self._capped.add(event)
            if event not in capped_now:
                capped_now.append(event)

    def _count_qualified(self, arguments: ArgumentReader, event: str, args: bytes) -> None:
        """One more hit of the event's argument-qualified key (a line that does not parse counts by name only)."""
        key = arguments.key(event, args.decode("ascii", "replace"))
        if key is not None:
            self._pending_hits[key] = self._pending_hits.get(key, 0) + 1

    def _uncap(self) -> None:
        """A new range is in flight: the events capped in the last one count again (retired ones stay off)."""
        if self._capped:
            capped, self._capped = sorted(self._capped - self.retired), set()
            self._enable(capped)

    def retire(self, events: Sequence[str]) -> list[str]:
        """Counting: switch these seen events off for the rest of the run (the caller knows no line can add).

        Only events this run has seen (:attr:`first_seen`) and that are counted by name alone retire: an
        event the run has not reached must still be found, and one qualified by arguments can still give
        keys with values not met yet. Their lines in the file from before QEMU took the switch are not
        counted either. Returns the events newly retired.
        """
        if not self.count_hits:
            return []
        qualified = self.arguments.readers if self.arguments is not None else {}
        newly = sorted(
            e for e in set(events) - self.retired if e in self.first_seen and e in self.watched and e not in qualified
        )
        self.retired.update(newly)
        self._capped -= set(newly)
        self._switch_off(newly)
        return newly

    def _skip_history(self) -> None:
        """Read from the file's end: lines already there are an earlier run's on this QEMU (its marks, its events)."""
        try:
            self._file = open(self.trace_file, "rb")  # noqa: SIM115 -- kept open across marks
        except FileNotFoundError:
            return
        self._position = self._file.seek(0, os.SEEK_END)
        self._partial = b""

    def _known(self, event: str) -> bool:
        return event in self.first_seen or event in self._pending or event in self.background

    def _console_value(self, args: bytes) -> int | None:
        """The text byte of a ``serial_write`` line (None: not the data register), read once per distinct text."""
        cache = self._console_values
        if args in cache:
            return cache[args]
        match = _CONSOLE_BYTE.search(args)
        value = None if match is None or int(match[1], 16) != 0 else int(match[2], 16)  # THR carries the text
        if len(cache) >= _CONSOLE_CACHE:  # any text QEMU may print: the cache must not grow without bound
            cache.clear()
        cache[args] = value
        return value

    def _console_line(self) -> None:
        """A console newline: the line is complete; a progress mark attributes what waits and moves the position."""
        message = parse_line(self._console.decode("ascii", "replace"))
        self._console.clear()
        if isinstance(message, Progress) and 0 <= message.range_index < len(self.plans):
            self._resolve(message.range_index, message.ops_done)
            in_flight = self._range
            if message.ops_done >= self.plans[message.range_index].op_count:
                self._range, self._op = message.range_index + 1, 0
            else:
                self._range, self._op = message.range_index, message.ops_done
            if self._range != in_flight:
                self._uncap()

    def _rearm(self) -> None:
        """QEMU was restarted (a shorter file): read from the top, enable the events it has not shown yet."""
        LOG.info("coverage: QEMU restarted (trace file truncated); enabling the events not seen yet again")
        assert self._file is not None
        self._file.seek(0)
        self._position = 0
        self._partial = b""
        self._console.clear()
        self._capped = set()
        self._on = set()  # a new QEMU starts with every event off
        unseen = self.watched - self.background if self.count_hits else self.watched - set(self.first_seen)
        self._enable([CONSOLE_EVENT, *sorted(unseen - self.background - self.retired)])

    def _resolve(self, range_index: int | None, op: int) -> None:
        """The events seen since the last mark came from this range, before this op."""
        offset = self._offsets[range_index] if range_index is not None else sum(p.op_count for p in self.plans)
        if offset + op == 0:
            # before the run's first op: the executor starting (its command line on the console, the
            # kernel enabling BARs for it) -- no fuzzing op caused these
            self.background |= set(self._pending)
            if self.count_hits:
                self._switch_off(sorted(self._pending))
                self._capped -= self.background  # off for good: the next range must not switch them on
                self._pending_hits = {}
            self._pending = {}
            return
        for name, when in self._pending.items():
            self.first_seen[name] = FirstSeen(range_index, op, offset + op, round(max(0.0, when - self._started), 3))
        self._pending = {}
        if self._pending_hits:
            counts = self.hits.setdefault(range_index, {})
            for name, hits in self._pending_hits.items():
                counts[name] = counts.get(name, 0) + hits
            self._pending_hits = {}

    # -- QMP ----------------------------------------------------------------------
    def _enable(self, names: Sequence[str]) -> None:
        for name in names:
            self._set_state(name, True)

    def _switch_off(self, names: Sequence[str]) -> None:
        for name in names:
            self._set_state(name, False)

    def _set_state(self, name: str, enable: bool) -> None:
        on = self._on
        if on is not None:
            if (name in on) == enable:
                return
            (on.add if enable else on.discard)(name)
        try:
            self.qmp("trace-event-set-state", {"name": name, "enable": enable})
        except Exception as err:  # a dead or busy monitor must not cost the run: coverage only gets coarser
            self._on = None  # whether QEMU took the switch is not known: from now on every switch is sent
            if not self._qmp_failed:
                LOG.warning("coverage: trace-event-set-state %s failed (%s); later failures not logged", name, err)
            self._qmp_failed = True
