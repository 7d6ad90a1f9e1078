"""Which trace events a run watches: the device(s) under test and the bus paths, from ``events.toml``.

The mapping from a device to its trace events is data (``events.toml`` next
to this module), checked against the events the QEMU at hand really has
(``qemu-system-x86_64 -trace help``): a prefix this QEMU lacks selects
nothing, and a device with no events of its own is watched through the bus
events alone, which the selection says (``fallback``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from avocado_iofuzz.coverage.arguments import parse_table

TABLE = "events.toml"

FALLBACK_NAME = "qom-name"  # the device's events were found by its QOM name
FALLBACK_BUS = "bus-only"  # the device has no events of its own here


@dataclass(frozen=True)
class DeviceEvents:
    """One device under test and the events of this QEMU that belong to it."""

    device: str
    prefixes: tuple[str, ...]
    events: tuple[str, ...]
    fallback: str | None = None  # None: found through events.toml


@dataclass(frozen=True)
class Selection:
    """Everything a run enables: each device's events and the bus events."""

    devices: tuple[DeviceEvents, ...]
    bus: tuple[str, ...]
    range_devices: dict[int, str] = field(default_factory=dict)  # range index -> device (when known)

    @property
    def events(self) -> tuple[str, ...]:
        names = {e for d in self.devices for e in d.events} | set(self.bus)
        return tuple(sorted(names))

    def patterns(self) -> list[str]:
        """QMP ``trace-event-set-state`` names that enable exactly :attr:`events` (globs per prefix)."""
        patterns = {f"{p}*" for d in self.devices for p in d.prefixes if any(e.startswith(p) for e in d.events)}
        return sorted(patterns | set(self.bus))


@dataclass(frozen=True)
class Catalog:
    """``events.toml`` parsed: device -> prefixes (with groups expanded), range-name patterns, bus events.

    ``arguments``: the ``[arguments]`` table, event -> the arguments that qualify
    its hit counts (:mod:`avocado_iofuzz.coverage.arguments`).
    """

    prefixes: dict[str, tuple[str, ...]]
    range_patterns: dict[str, tuple[re.Pattern[str], ...]]
    bus: tuple[str, ...]
    arguments: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def load(cls, text: str | None = None) -> Catalog:
        if text is None:
            text = resources.files(__package__).joinpath(TABLE).read_text(encoding="utf-8")
        return cls.parse(tomllib.loads(text))

    @classmethod
    def parse(cls, table: dict[str, Any]) -> Catalog:
        groups = {name: tuple(p) for name, p in table.get("groups", {}).items()}
        prefixes: dict[str, tuple[str, ...]] = {}
        patterns: dict[str, tuple[re.Pattern[str], ...]] = {}
        for device, entry in table.get("devices", {}).items():
            unknown = [g for g in entry.get("groups", []) if g not in groups]
            if unknown:
                raise ValueError(f"{TABLE}: device {device} names unknown group(s) {', '.join(unknown)}")
            own = tuple(entry.get("prefixes", []))
            shared = tuple(p for g in entry.get("groups", []) for p in groups[g])
            prefixes[device] = own + shared
            patterns[device] = tuple(re.compile(r) for r in entry.get("ranges", []))
        bus = tuple(table.get("bus", {}).get("events", []))
        return cls(prefixes, patterns, bus, parse_table(table, TABLE))

    def device_for_range(self, name: str) -> str | None:
        """The device whose ``ranges`` patterns match a /proc/ioports range name, if any."""
        for device, patterns in self.range_patterns.items():
            if any(p.search(name) for p in patterns):
                return device
        return None

    def device_events(self, device: str, available: Sequence[str]) -> DeviceEvents:
        """``device``'s events among ``available``, falling back to its QOM name, then to none."""
        prefixes = self.prefixes.get(device, ())
        events = _matching(available, prefixes)
        if events:
            return DeviceEvents(device, prefixes, events)
        guessed = (re.sub(r"[^a-z0-9]+", "_", device.lower()).strip("_") + "_",)
        events = _matching(available, guessed)
        if events:
            return DeviceEvents(device, guessed, events, FALLBACK_NAME)
        return DeviceEvents(device, (), (), FALLBACK_BUS)

    def select(
        self, devices: Iterable[str], range_names: Sequence[str], available: Sequence[str]
    ) -> Selection:
        """The events of ``devices`` (a row's ``iofuzz_devices``), or else of the devices behind ``range_names``.

        A row fuzzes its device only (``only_pci``/``only_devices``), so each
        of its ranges belongs to the row's device when it has one; a rowless
        run maps each range by name.
        """
        names = list(dict.fromkeys(devices))
        range_devices: dict[int, str] = {}
        if len(names) == 1:
            range_devices = {i: names[0] for i in range(len(range_names))}
        elif not names:
            for i, name in enumerate(range_names):
                device = self.device_for_range(name)
                if device is not None:
                    range_devices[i] = device
            names = list(dict.fromkeys(range_devices.values()))
        known = set(available)
        return Selection(
            devices=tuple(self.device_events(d, available) for d in names),
            bus=tuple(e for e in self.bus if e in known),
            range_devices=range_devices,
        )


def _matching(available: Sequence[str], prefixes: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(e for e in available if any(e.startswith(p) for p in prefixes)))
