"""Fuzz kinds: which address spaces a run fuzzes, how its op budget is shared, and whether the guest allows it.

``fuzz_kinds = pio mmio pci`` picks the kinds. The run's *fuzz budget* is
``fuzz_count`` times the number of slots of all ranges of all kinds: what
every slot gets with ``fuzz_count`` random writes, which is each kind's
share by default (its share of the slots). Weights (``pio:1 mmio:1 pci:1``)
give each kind that share of the budget instead, spread evenly over its own
slots: a kind with few slots (a device's 64 config registers) then gets as
many writes as one with many (a 16 KiB BAR). With one kind, a run is exactly
what ``fuzz_count`` always meant.

Each range is planned once per access width of its kind that it holds
(``pio_widths``, ``mmio_widths``, ``pci_widths``; for ports see
:mod:`avocado_iofuzz.model.port_widths`): its slots at every width count, so
a 4-byte port range fuzzed at 1, 2 and 4 bytes has 4 + 2 + 1 slots.

Ranges are planned kind by kind, pio, then mmio, then pci: config writes
move and disable BARs, which must not happen under the MMIO ranges still to
come. Before the campaign, the executor checks every range's access path in
the guest (``--check``); ranges the kernel refuses are left out, and a run
left without any range of a kind it was asked for ends as CANCEL.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from avocado_iofuzz.executor.protocol import Denied, ExecError, parse_line
from avocado_iofuzz.model.iomem import DEFAULT_MAX_SIZE, DEFAULT_SKIP_IOMEM, mmio_targets
from avocado_iofuzz.model.iomem import parse_extra_iomem as _parse_extra_iomem
from avocado_iofuzz.model.pci import (
    CONFIG_SPACE_SIZE,
    DEFAULT_CONFIG_HOLES,
    IORESOURCE_IO,
    ROM_RESOURCE,
    PciFunction,
    config_targets,
    parse_config_holes,
    parse_pci_listing,
)
from avocado_iofuzz.model.port_widths import DEFAULT_PIO_WIDTHS, aligned_interior, port_spans
from avocado_iofuzz.model.program import (
    MAX_FUZZ_COUNT,
    SPACE_MMIO,
    SPACE_PCI,
    SPACE_PIO,
    SPACES,
    RangePlan,
)
from avocado_iofuzz.model.ranges import PortRange, RangeError, parse_name_list
from avocado_iofuzz.model.target import Target

LOG = logging.getLogger("avocado.test.iofuzz")


@dataclass(frozen=True)
class KindParams:
    """The params that shape each kind's ranges, checked once (pio's selection stays in IofuzzParams)."""

    # kind -> weight; 0 everywhere: no weights given, each kind's share is its share of the slots
    weights: dict[str, int] = field(default_factory=lambda: {SPACE_PIO: 0})
    pio_widths: tuple[int, ...] = DEFAULT_PIO_WIDTHS
    skip_iomem: str = ", ".join(DEFAULT_SKIP_IOMEM)
    extra_iomem: str = ""
    only_iomem: str = ""
    skip_mmio: str = ""
    mmio_widths: tuple[int, ...] = (4,)
    mmio_max_size: int = DEFAULT_MAX_SIZE
    skip_pci: str = ""
    only_pci: str = ""
    skip_pci_config: str = " ".join(DEFAULT_CONFIG_HOLES)
    pci_widths: tuple[int, ...] = (4,)
    pci_config_size: int = CONFIG_SPACE_SIZE

    @property
    def kinds(self) -> list[str]:
        """The chosen kinds, in the order their ranges are planned."""
        return [k for k in SPACES if k in self.weights]

    def widths(self, kind: str) -> tuple[int, ...]:
        """The access widths ``kind`` is fuzzed at (``pio_widths``, ``mmio_widths``, ``pci_widths``)."""
        return {SPACE_PIO: self.pio_widths, SPACE_MMIO: self.mmio_widths, SPACE_PCI: self.pci_widths}[kind]


# A run at several widths of a kind names each of its plans NAME (W-byte): summaries and merges key ranges by name.
_WIDTH_SUFFIX = re.compile(r" \((\d+)-byte\)\Z")


def width_suffix(width: int) -> str:
    """What a run at several widths of a kind appends to the name of a plan of ``width``."""
    return f" ({width}-byte)"


def target_name(plan_name: str) -> str:
    """The name of the target a plan was made of: ``plan_name`` without a width suffix."""
    return _WIDTH_SUFFIX.sub("", plan_name)


# --- from the guest's listings to targets -------------------------------------------------


@dataclass(frozen=True)
class Listings:
    """What the guest lists, as read through its shell (empty when a kind does not need it)."""

    iomem: str = ""
    pci: str = ""


def choose_targets(
    kinds: KindParams, listings: Listings, pio: Iterable[PortRange] = (), pio_extra: Sequence[str] = ()
) -> list[Target]:
    """The targets of every chosen kind, in planning order (RangeError names a bad listing or param).

    ``only_pci`` focuses every kind on the PCI functions it names: pio keeps
    the ports of their I/O BARs (and the ranges named in ``pio_extra``, the
    ``extra_ioports`` names), mmio their memory BARs (and ``extra_iomem``),
    pci their config space. A device row fuzzes its device, not the machine.
    """
    targets: list[Target] = []
    functions = parse_pci_listing(listings.pci) if listings.pci else []
    focus = parse_name_list(kinds.only_pci)
    if focus:
        missing = [p for p in focus if not any(f.matches([p]) for f in functions)]
        if missing:
            known = ", ".join(f.name for f in functions) or "none"
            raise RangeError(f"only_pci: no PCI function matches {missing} (functions: {known})")
        functions = [f for f in functions if f.matches(focus)]
    if SPACE_PIO in kinds.weights:
        pio_targets = [Target(SPACE_PIO, r.start, r.end, r.name) for r in pio]
        if focus:
            pio_targets = _focus_ports(pio_targets, functions, pio_extra)
        targets += pio_targets
    if SPACE_MMIO in kinds.weights:
        mmio = mmio_targets(
            listings.iomem,
            functions,
            skip_iomem=kinds.skip_iomem,
            extra_iomem=kinds.extra_iomem,
            only_iomem=kinds.only_iomem,
            skip_mmio=kinds.skip_mmio,
            max_size=kinds.mmio_max_size,
        )
        if focus:
            extra = {t.name for t in _parse_extra_iomem(kinds.extra_iomem)}
            mmio = [t for t in mmio if t.name in extra or any(f.address in t.aliases for f in functions)]
        targets += mmio
    if SPACE_PCI in kinds.weights:
        targets += config_targets(
            functions,
            skip=parse_name_list(kinds.skip_pci),
            holes=parse_config_holes(kinds.skip_pci_config),
            size=kinds.pci_config_size,
        )
    return targets


def _focus_ports(targets: Sequence[Target], functions: Sequence[PciFunction], extra: Sequence[str]) -> list[Target]:
    """The parts of port targets inside the functions' I/O BARs, and the targets named in ``extra``."""
    bars = [
        r for f in functions for r in f.resources if r.index < ROM_RESOURCE and r.flags & IORESOURCE_IO and r.assigned
    ]
    kept = []
    for target in targets:
        if target.name in extra:
            kept.append(target)
            continue
        for bar in bars:
            start, end = max(target.start, bar.start), min(target.end, bar.end)
            if start <= end:
                kept.append(Target(SPACE_PIO, start, end, target.name))
    return kept


# --- planning -----------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """A span of one target at one access width: what becomes one RangePlan."""

    target: Target
    width: int
    start: int
    end: int

    @property
    def slots(self) -> int:
        return (self.end - self.start + 1) // self.width


def units(targets: Iterable[Target], kinds: KindParams) -> list[Unit]:
    """Each target at each width of its kind: its whole aligned slots (none: that width is dropped).

    Port ranges follow :func:`~avocado_iofuzz.model.port_widths.port_spans`
    (fixed-width registers such as PCI conf1's CONFIG_ADDRESS); MMIO and
    config ranges take the aligned interior at every width.
    """
    result = []
    for target in targets:
        widths = kinds.widths(target.space)
        if target.space == SPACE_PIO:
            spans = port_spans(target.start, target.end, widths)
        else:
            spans = [
                (width, *interior)
                for width in widths
                if (interior := aligned_interior(target.start, target.end, width)) is not None
            ]
        result += [Unit(target, width, start, end) for width, start, end in spans]
        for width in sorted(set(widths) - {width for width, _, _ in spans}):
            LOG.info("%s: not fuzzed at %d bytes (no whole aligned slot of that width)", target, width)
    return result


def kind_fuzz_counts(all_units: Sequence[Unit], weights: Mapping[str, int], fuzz_count: int) -> dict[str, int]:
    """Random writes per slot of each kind: its weighted share of ``fuzz_count`` x all slots, spread over its slots.

    Without weights (all 0) that is ``fuzz_count`` for every kind.
    """
    if not any(weights.values()):
        return dict.fromkeys(weights, fuzz_count)
    slots = {kind: sum(u.slots for u in all_units if u.target.space == kind) for kind in weights}
    present = {kind: weight for kind, weight in weights.items() if slots[kind]}
    budget = fuzz_count * sum(slots.values())
    total_weight = sum(present.values())
    counts = {}
    for kind, weight in present.items():
        share = budget * weight // total_weight
        # at least one write per slot when writes were asked for: a kind never fuzzes nothing
        counts[kind] = max(share // slots[kind], 1 if fuzz_count else 0)
    return counts


def plan_kinds(seed: int, fuzz_count: int, kinds: KindParams, targets: Sequence[Target]) -> list[RangePlan]:
    """RangePlans numbered 0..n-1: pio, then mmio, then pci; each kind with its own fuzz count."""
    all_units = units(targets, kinds)
    counts = kind_fuzz_counts(all_units, kinds.weights, fuzz_count)
    for kind, count in counts.items():
        if count > MAX_FUZZ_COUNT:
            # weights give a kind with few slots the writes of all the others
            raise RangeError(
                f"fuzz_count = {fuzz_count}: with fuzz_kinds weights, {kind} gets {count} random writes per slot, "
                f"more than the in-guest executor's limit {MAX_FUZZ_COUNT}: lower fuzz_count or {kind}'s weight"
            )
    plans: list[RangePlan] = []
    for kind in kinds.kinds:
        several_widths = len(kinds.widths(kind)) > 1
        for unit in (u for u in all_units if u.target.space == kind):
            # a target planned at two widths gets two names: summaries and merges key ranges by name
            name = unit.target.name + width_suffix(unit.width) if several_widths else unit.target.name
            plans.append(
                RangePlan(len(plans), unit.start, unit.end, name, seed, counts[kind], unit.width, unit.target.space)
            )
    return plans


def renumber(plans: Iterable[RangePlan]) -> list[RangePlan]:
    """The same ranges numbered 0..n-1 (a range's ops depend on its bounds, not its number)."""
    return [replace(p, index=i) for i, p in enumerate(plans)]


# --- what the guest lets us do (asked by campaign/guest_access.py) ----------------------------


class AccessRefused(RuntimeError):
    """The guest kernel refuses every range of a kind the run was asked for."""


@dataclass(frozen=True)
class Refusal:
    plan: RangePlan
    reason: str


def check_output(output: str) -> list[tuple[int, str]]:
    """``(range_index, reason)`` of each ``@DENIED`` line; RuntimeError on an executor error."""
    refused = []
    for line in output.splitlines():
        message = parse_line(line)
        if isinstance(message, Denied):
            refused.append((message.range_index, message.reason))
        elif isinstance(message, ExecError):
            raise RuntimeError(f"the executor's access check failed: {message.message}")
    return refused


def drop_refused(
    plans: Sequence[RangePlan], refused: Sequence[tuple[int, str]]
) -> tuple[list[RangePlan], list[Refusal]]:
    """The plans the guest allows (renumbered), and the refusals.

    AccessRefused when a kind loses all its ranges: the run cannot do what
    it was asked for, which is no test error (the guest kernel decided).
    """
    by_index = {p.index: p for p in plans}
    refusals = [Refusal(by_index[i], reason) for i, reason in refused if i in by_index]
    refused_indices = {r.plan.index for r in refusals}
    kept = [p for p in plans if p.index not in refused_indices]
    lost = [k for k in SPACES if any(p.space == k for p in plans) and not any(p.space == k for p in kept)]
    if lost:
        reasons = "; ".join(f"{kind}: {next(r.reason for r in refusals if r.plan.space == kind)}" for kind in lost)
        raise AccessRefused(f"the guest kernel refuses raw access ({reasons})")
    return renumber(kept), refusals
