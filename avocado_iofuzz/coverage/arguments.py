"""Argument features: an event qualified by the arguments that say how far the device got.

Trace events are sparse where the guided signal needs them dense: the steps
that take a device deeper fire an event it already fired, with other
arguments -- ``virtio_set_status`` with ``val`` 1, then 3, then 0xf;
``pci_nvme_admin_cmd`` with one opcode, then another. For the events of the
``[arguments]`` table in ``events.toml`` the collector also counts the event
qualified by those arguments' values, spelled ``virtio_set_status(val=0xf)``
(:func:`qualified`), next to its plain name.

The feature space stays bounded, whatever the fuzzer makes QEMU print:

- an integer at or above :data:`EXACT_BELOW` is an address, a size or a
  counter, not a step: it collapses to its power of two (``2^26``);
- a string is kept only if it is a short name (a register, a state);
  anything else is ``*``;
- an (event, argument) takes at most :data:`MAX_VALUES` distinct values in one
  run; later new values are ``*``, one key for all of them.

The table names arguments as QEMU's ``trace-events`` declare them. It is
checked twice: its shape when ``events.toml`` is read (:func:`parse_table`,
a ``ValueError`` naming the entry), and each entry against the QEMU at hand
when a run starts (:meth:`ArgumentReader.for_events`): an entry whose event or
argument this QEMU does not declare, or whose argument is a host pointer, is
left out with a warning naming it -- another QEMU version must not cost the
run its coverage.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avocado_iofuzz.coverage.formats import Declaration, LinePattern, line_pattern, parse_declarations, read_value

LOG = logging.getLogger("avocado.test.iofuzz")

TABLE_SECTION = "arguments"
# registers, opcodes, queue and port numbers, states are all small; QEMU's MMIO offsets stay below 64 KiB per
# BAR region the tabled events report. Larger integers are guest addresses, lengths and counters.
EXACT_BELOW = 0x10000
# Distinct values per (event, argument) and run. The sets the table's arguments enumerate fit whole: nvme's
# admin or I/O opcodes (a dozen or so each in QEMU 7.2), the 32 register slots of an AHCI port (0x00-0x7c),
# a virtio device's queues, EHCI's schedule states. A field the fuzzer writes freely (a random virtio
# status byte, any of 256) would otherwise give 256 keys times 8 hit-count buckets to the corpus; past 32
# it gives one key, ``*``.
MAX_VALUES = 32
# the values of an event's arguments multiply: two arguments of 32 values are already 1024 keys
MAX_ARGUMENTS = 2
OVERFLOW = "*"
KEY_CACHE = 65536  # (event, argument texts) whose keys are remembered
_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_SHORT_STRING = re.compile(r"^[A-Za-z0-9_.:+-]{1,24}$")


def parse_table(table: Mapping[str, Any], source: str = "events.toml") -> dict[str, tuple[str, ...]]:
    """``[arguments]``: event name -> the argument names that qualify it; a clear error for a bad entry."""
    section = table.get(TABLE_SECTION, {})
    if not isinstance(section, Mapping):
        raise ValueError(f"{source}: [{TABLE_SECTION}] must be a table of event = [argument names]")
    arguments: dict[str, tuple[str, ...]] = {}
    for event, names in section.items():
        where = f"{source}: [{TABLE_SECTION}] {event}"
        if not _NAME.match(event):
            raise ValueError(f"{where}: not a trace event name (letters, digits, _)")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and _NAME.match(n) for n in names):
            raise ValueError(f"{where}: must be a non-empty list of argument names, got {names!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: names an argument twice ({', '.join(names)})")
        if len(names) > MAX_ARGUMENTS:
            raise ValueError(f"{where}: {len(names)} arguments, at most {MAX_ARGUMENTS} (their values multiply)")
        arguments[event] = tuple(names)
    return arguments


def qualified(event: str, values: Iterable[tuple[str, str]]) -> str:
    """The hit-count key of an event with argument values: ``virtio_set_status(val=0xf)``."""
    return f"{event}({','.join(f'{name}={value}' for name, value in values)})"


def event_of_key(key: str) -> str:
    """The event of a hit-count key, qualified or not (``virtio_set_status(val=0xf)`` -> ``virtio_set_status``)."""
    return key.partition("(")[0]


def spell(value: int | str) -> str:
    """A value as a feature spells it: small integers exact, large ones by power of two, names if short."""
    if isinstance(value, int):
        if abs(value) < EXACT_BELOW:
            return hex(value)
        return f"{'-' if value < 0 else ''}2^{abs(value).bit_length() - 1}"
    return value if _SHORT_STRING.match(value) else OVERFLOW


@dataclass
class _EventReader:
    pattern: LinePattern
    groups: tuple[int, ...]  # regex group of each tabled argument
    names: tuple[str, ...]


@dataclass
class ArgumentReader:
    """Per run: the tabled events' patterns, and the values each (event, argument) has taken so far."""

    readers: dict[str, _EventReader]
    seen: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    # (event, its tabled arguments' texts) -> key, for the values met so far (see key)
    _keys: dict[tuple[str, tuple[str, ...]], str] = field(default_factory=dict, repr=False)

    @classmethod
    def for_events(
        cls, table: Mapping[str, tuple[str, ...]], events: Iterable[str], declarations: Mapping[str, Declaration]
    ) -> ArgumentReader:
        """Readers for the tabled events among ``events`` (those a run watches) that this QEMU declares usably."""
        readers: dict[str, _EventReader] = {}
        for event in sorted(set(events) & set(table)):
            reader = _reader(event, table[event], declarations.get(event))
            if isinstance(reader, str):
                LOG.warning("coverage: [%s] %s left out: %s", TABLE_SECTION, event, reader)
            else:
                readers[event] = reader
        return cls(readers)

    @classmethod
    def from_file(
        cls, table: Mapping[str, tuple[str, ...]], events: Iterable[str], formats: Path | None
    ) -> ArgumentReader:
        """As :meth:`for_events`, the declarations read from ``formats`` (QEMU's trace-events-all); none without it."""
        watched = set(events) & set(table)
        if not watched:
            return cls({})
        if formats is None:
            LOG.info("coverage: QEMU's trace-events-all not found; events are counted by name only")
            return cls({})
        text = formats.read_text(encoding="utf-8", errors="replace")
        return cls.for_events(table, watched, parse_declarations(text, only=watched))

    def __contains__(self, event: str) -> bool:
        return event in self.readers

    def key(self, event: str, text: str) -> str | None:
        """The qualified key of one log line's argument text (after ``NAME ``), or None if it does not parse."""
        reader = self.readers.get(event)
        if reader is None:
            return None
        match = reader.pattern.regex.match(text)
        if match is None:
            return None
        texts = tuple(match[group] for group in reader.groups)
        # A value's spelling never changes once given: _bounded keeps a value it took and, full, never takes
        # another. So the key of these argument texts is the same every time: worked out once (a guided
        # nvme run qualifies a million pci_nvme_mmio_write lines in 30 s, with a few dozen addresses).
        cached = self._keys.get((event, texts))
        if cached is not None:
            return cached
        values = []
        for name, value_text in zip(reader.names, texts, strict=True):
            try:
                spelled = spell(read_value(value_text, reader.pattern.conversions[name]))
            except ValueError:
                spelled = OVERFLOW
            values.append((name, self._bounded(event, name, spelled)))
        key = qualified(event, values)
        if len(self._keys) >= KEY_CACHE:  # the texts of addresses and sizes are many: keep the memory bounded
            self._keys.clear()
        self._keys[(event, texts)] = key
        return key

    def _bounded(self, event: str, name: str, spelled: str) -> str:
        seen = self.seen.setdefault((event, name), set())
        if spelled in seen:
            return spelled
        if len(seen) >= MAX_VALUES:
            return OVERFLOW
        seen.add(spelled)
        return spelled


def _reader(event: str, names: tuple[str, ...], declaration: Declaration | None) -> _EventReader | str:
    """A reader for one table entry, or why this QEMU cannot give one."""
    if declaration is None:
        return "this QEMU's trace-events-all does not declare it"
    pattern = line_pattern(declaration)
    if pattern is None:
        return f"its format {declaration.format!r} cannot be read back"
    groups = []
    declared = [a.name for a in declaration.arguments]
    for name in names:
        argument = declaration.argument(name)
        if argument is None:
            return f"it has no argument {name!r} (it has {', '.join(declared) or 'none'})"
        if argument.is_pointer:
            return f"argument {name!r} is a host pointer ({argument.c_type}), different every run"
        groups.append(declared.index(name) + 1)
    return _EventReader(pattern, tuple(groups), names)
