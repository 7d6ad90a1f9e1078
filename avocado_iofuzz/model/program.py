"""The op model: what an I/O op is and which ops a fuzzing run performs.

This module is the one source of truth for op sequences. The in-guest
executor (``executor/iofuzz_exec.c``) computes the very same sequences; a unit
test compares both byte for byte, so any change here must be mirrored there.

For each range ``[start, end]`` (inclusive) the ops are, in order:

* phase ``read``: read every slot once, lowest address first;
* phase ``zero``: write 0 to every slot, lowest address first;
* phase ``fuzz``: ``fuzz_count * slots`` writes of random values to random slots:
  uniform words, or with ``values="dma"`` draws from the DMA-aware dictionary
  (:mod:`avocado_iofuzz.model.dma`: scratch memory addresses, sizes, 0...).

A *fuzz-only* range (``fuzz_only=True``, the executor's ``!``) has the fuzz
phase alone: a guided program's step on one register, which a read and a zero
write first would undo (0 to virtio's status or queue PFN resets the device).
A fuzz-only range may carry a *fixed* value (``fixed``, the executor's
``!0xV``): its writes go to the slots the generator draws, as ever, but all
write that value -- an exact step of a device's bring-up (virtio's status 1,
then 3; a queue PFN that is the scratch memory's frame). With ``dma`` values
the scratch memory is filled as for any ``dma`` range: a fixed value that
points into it finds the layout there.

A *slot* is an access of the range's width: with width 1 every port is a slot,
with width 2 the slots are ``start, start+2, ...``.

A range lives in one address space (``space``): ``pio`` (I/O ports),
``mmio`` (guest-physical addresses) or ``pci`` (config registers, addressed
in the ECAM layout, see :mod:`avocado_iofuzz.model.pci`). The generator is the
same for all three: only the bounds, the width and the fuzz count matter.

Randomness comes from a counter-based generator (splitmix64's output function
applied to ``range_seed + (k+1) * GAMMA``), so op ``i`` of a range is computed
in O(1) without the ops before it: the host can resume the executor right
after a hung window. Each range's seed is derived from the run seed and the
range's bounds only, so adding, removing or skipping another range leaves this
range's sequence unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from avocado_iofuzz.model.dma import (
    SCRATCH_BASE,
    SCRATCH_EPOCH_OPS,
    VALUE_MODES,
    VALUES_DMA,
    VALUES_UNIFORM,
    dictionary_value,
    fill_points,
    scratch_fill,
)
from avocado_iofuzz.model.dma_layouts import LAYOUT_GENERIC, LAYOUTS

# the generator, re-exported: program.mix64 etc. are its names of old
from avocado_iofuzz.model.generator import GAMMA as GAMMA
from avocado_iofuzz.model.generator import MASK64 as MASK64
from avocado_iofuzz.model.generator import mix64 as mix64
from avocado_iofuzz.model.generator import random_word as random_word
from avocado_iofuzz.model.generator import range_seed as range_seed

PHASE_READ = "read"
PHASE_ZERO = "zero"
PHASE_FUZZ = "fuzz"

SPACE_PIO = "pio"
PIO_MAX_PORT = 0xFFFF
PIO_WIDTHS = (1, 2, 4)
# MMIO: addresses are guest-physical; the executor maps them (sysfs BAR file or /dev/mem).
SPACE_MMIO = "mmio"
MMIO_MAX_ADDRESS = MASK64
MMIO_WIDTHS = (1, 2, 4, 8)
# PCI config space: an address is bus << 20 | device << 15 | function << 12 | register,
# the ECAM layout (see avocado_iofuzz.model.pci); a range never leaves one function.
SPACE_PCI = "pci"
PCI_MAX_ADDRESS = (1 << 28) - 1
PCI_WIDTHS = (1, 2, 4)
SPACES = (SPACE_PIO, SPACE_MMIO, SPACE_PCI)
_SPACE_LIMITS = {
    SPACE_PIO: (PIO_MAX_PORT, PIO_WIDTHS, "I/O ports"),
    SPACE_MMIO: (MMIO_MAX_ADDRESS, MMIO_WIDTHS, "MMIO addresses"),
    SPACE_PCI: (PCI_MAX_ADDRESS, PCI_WIDTHS, "PCI config addresses"),
}
# Op indices stay below 2**62, so the executor's 64-bit arithmetic (2 * k + 1
# generator words per fuzz op) never overflows, even for a huge MMIO range.
MAX_OP_COUNT = 1 << 62
# Keeps op indices far below 2**63 for the largest range (65536 slots), so the
# C executor's 64-bit arithmetic never overflows.
MAX_FUZZ_COUNT = (1 << 32) - 1


@dataclass(frozen=True)
class Op:
    """One access: ``kind`` is ``'r'`` (read) or ``'w'`` (write ``value``).

    ``value`` is 0 for reads: the value a read returns is not part of the
    program (it depends on the device state). ``port`` is the address in
    ``space``: an I/O port, a guest-physical MMIO address, or a PCI config
    address (ECAM layout, see ``avocado_iofuzz.model.pci``).
    """

    kind: str
    port: int
    width: int
    value: int
    space: str = SPACE_PIO


def new_seed() -> int:
    """A fresh random 63-bit run seed (63 bits: fits signed 64-bit fields too)."""
    return int.from_bytes(os.urandom(8), "little") >> 1


MAX_PAUSE_US = 1_000_000  # the executor's limit: a pause of a second is a hang to the watchdog


@dataclass(frozen=True)
class RangePlan:
    """The ops of one address range: ``op(i)`` for ``0 <= i < op_count``.

    ``index`` is the range's position in the run, ``seed`` the *run* seed
    (shared by all ranges of a run); the per-range generator seed is
    ``range_seed``.
    """

    index: int
    start: int
    end: int
    name: str
    seed: int
    fuzz_count: int
    width: int = 1
    space: str = SPACE_PIO
    # where write values come from (avocado_iofuzz.model.dma.VALUE_MODES): uniform words, or the
    # DMA-aware dictionary with the scratch memory's addresses
    values: str = VALUES_UNIFORM
    # pacing: the executor sleeps pause_us microseconds before every op index that is a positive
    # multiple of pause_every (0: never), so QEMU's timers and bottom halves run in between; the
    # ops themselves do not change
    pause_every: int = 0
    pause_us: int = 0
    # the scratch memory's layout for ``dma`` values (avocado_iofuzz.model.dma_layouts.LAYOUTS):
    # the generic descriptor ring, or one device family's structures
    layout: str = LAYOUT_GENERIC
    # the fuzz phase alone (no read, no zero write): a guided program's step
    fuzz_only: bool = False
    # every fuzz write writes this value (fuzz-only ranges only): an exact step, None for seeded values
    fixed: int | None = None
    range_seed: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _validate_range(self)
        object.__setattr__(self, "range_seed", range_seed(self.seed, self.start, self.end))

    @property
    def size(self) -> int:
        """Number of addresses in the range (``end - start + 1``)."""
        return self.end - self.start + 1

    @property
    def slots(self) -> int:
        """Number of distinct accesses of ``width`` bytes that fit in the range."""
        return self.size // self.width

    @property
    def lead(self) -> int:
        """Ops before the fuzz phase: a read and a zero write per slot, none for a fuzz-only range."""
        return 0 if self.fuzz_only else 2 * self.slots

    @property
    def op_count(self) -> int:
        return self.fuzz_count * self.slots + self.lead

    def phase_of(self, i: int) -> str:
        self._check_index(i)
        if i >= self.lead:
            return PHASE_FUZZ
        return PHASE_READ if i < self.slots else PHASE_ZERO

    def op(self, i: int) -> Op:
        self._check_index(i)
        n = self.slots
        if i < self.lead:
            if i < n:
                return Op("r", self.start + i * self.width, self.width, 0, self.space)
            return Op("w", self.start + (i - n) * self.width, self.width, 0, self.space)
        k = i - self.lead
        # Two words per fuzz op, one for the slot and one for the value, so
        # that values can use the full width (8 bytes for MMIO later).
        slot = (random_word(self.range_seed, 2 * k) * n) >> 64  # multiply-shift: no modulo bias worth noting
        if self.fixed is not None:
            return Op("w", self.start + slot * self.width, self.width, self.fixed, self.space)
        word = random_word(self.range_seed, 2 * k + 1)
        if self.values == VALUES_UNIFORM:
            value = word & ((1 << (8 * self.width)) - 1)
        else:
            value = dictionary_value(word, self.width)
        return Op("w", self.start + slot * self.width, self.width, value, self.space)

    def ops(self, first: int = 0, stop: int | None = None) -> Iterator[Op]:
        """Ops ``first .. stop-1`` (``stop`` defaults to ``op_count``)."""
        if stop is None:
            stop = self.op_count
        if not 0 <= first <= stop <= self.op_count:
            raise ValueError(
                f"range {self.index} ({self.start:#x}-{self.end:#x}): op slice {first}..{stop} "
                f"is not within 0..{self.op_count}"
            )
        for i in range(first, stop):
            yield self.op(i)

    def ops_with_memory(self, first: int = 0, stop: int | None = None) -> Iterator[Op]:
        """Ops ``first .. stop-1`` as the executor performs them when it starts at ``first``.

        For DMA-aware values, the scratch memory's fills come before the ops
        they precede, each as 8-byte MMIO writes of its contents: what a
        replay without the executor (qtest) must write to guest memory.
        """
        if stop is None:
            stop = self.op_count
        fills = fill_points(first, stop) if self.values != VALUES_UNIFORM else []
        if not fills:
            yield from self.ops(first, stop)
            return
        for fill_at, next_fill in zip(fills, [*fills[1:], stop], strict=True):
            data = scratch_fill(self.range_seed, fill_at // SCRATCH_EPOCH_OPS, self.layout)
            for offset in range(0, len(data), 8):
                yield Op("w", SCRATCH_BASE + offset, 8, int.from_bytes(data[offset : offset + 8], "little"), SPACE_MMIO)
            yield from self.ops(fill_at, next_fill)

    def _check_index(self, i: int) -> None:
        if not 0 <= i < self.op_count:
            raise IndexError(
                f"range {self.index} ({self.start:#x}-{self.end:#x}) has {self.op_count} ops; "
                f"op index {i} is out of bounds"
            )


def _validate_range(plan: RangePlan) -> None:
    where = f"range {plan.index} {plan.name!r}"
    for name in ("index", "start", "end", "seed", "fuzz_count", "width", "pause_every", "pause_us"):
        value = getattr(plan, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{where}: {name} must be an int, got {value!r}")
    if plan.values not in VALUE_MODES:
        raise ValueError(f"{where}: values must be one of {', '.join(VALUE_MODES)}, got {plan.values!r}")
    if plan.layout not in LAYOUTS:
        raise ValueError(f"{where}: layout must be one of {', '.join(LAYOUTS)}, got {plan.layout!r}")
    if plan.layout != LAYOUT_GENERIC and plan.values != VALUES_DMA:
        raise ValueError(
            f"{where}: layout {plan.layout!r} lays out the scratch memory of dma values, not {plan.values}"
        )
    if not isinstance(plan.name, str):
        raise ValueError(f"{where}: name must be a str, got {plan.name!r}")
    if plan.space not in _SPACE_LIMITS:
        raise ValueError(f"{where}: address space {plan.space!r} is not supported (one of {SPACES})")
    max_address, widths, what = _SPACE_LIMITS[plan.space]
    if plan.index < 0:
        raise ValueError(f"{where}: index must be >= 0, got {plan.index}")
    if not 0 <= plan.seed <= MASK64:
        raise ValueError(f"{where}: seed must be within 0..2**64-1, got {plan.seed}")
    if not 0 <= plan.start <= max_address or not 0 <= plan.end <= max_address:
        raise ValueError(f"{where}: {what} must be within 0x0..{max_address:#x}, got {plan.start:#x}-{plan.end:#x}")
    if plan.start > plan.end:
        raise ValueError(f"{where}: start {plan.start:#x} is greater than end {plan.end:#x}")
    if plan.width not in widths:
        raise ValueError(f"{where}: width must be one of {widths}, got {plan.width}")
    if plan.size % plan.width:
        raise ValueError(
            f"{where}: size {plan.size} of {plan.start:#x}-{plan.end:#x} is not a multiple of width {plan.width}"
        )
    if plan.space != SPACE_PIO and plan.start % plan.width:
        # device registers are decoded at aligned offsets; a config access may not straddle a dword
        raise ValueError(f"{where}: start {plan.start:#x} is not aligned to width {plan.width}")
    if plan.space == SPACE_PCI and plan.start >> 12 != plan.end >> 12:
        raise ValueError(f"{where}: PCI config range {plan.start:#x}-{plan.end:#x} spans more than one function")
    if not isinstance(plan.fuzz_only, bool):
        raise ValueError(f"{where}: fuzz_only must be a bool, got {plan.fuzz_only!r}")
    if plan.fuzz_only and plan.fuzz_count < 1:
        raise ValueError(f"{where}: a fuzz-only range needs fuzz_count >= 1 (it has no other ops)")
    if plan.fixed is not None:
        validate_fixed(where, plan.fixed, plan.width, plan.fuzz_only)
    if not 0 <= plan.fuzz_count <= MAX_FUZZ_COUNT:
        raise ValueError(f"{where}: fuzz_count must be within 0..{MAX_FUZZ_COUNT}, got {plan.fuzz_count}")
    if (plan.fuzz_count + 2) * (plan.size // plan.width) >= MAX_OP_COUNT:
        raise ValueError(f"{where}: {plan.size // plan.width} slots x (fuzz_count + 2) is too many ops (2**62 or more)")
    if "\n" in plan.name or "\r" in plan.name:
        raise ValueError(f"{where}: name must be a single line")
    if plan.pause_every < 0 or not 0 <= plan.pause_us <= MAX_PAUSE_US or bool(plan.pause_every) != bool(plan.pause_us):
        raise ValueError(
            f"{where}: pacing must be pause_every >= 1 with 1..{MAX_PAUSE_US} us, or both 0, "
            f"got {plan.pause_every} / {plan.pause_us}"
        )


def validate_fixed(where: str, fixed: object, width: int, fuzz_only: bool, units: str = "ranges") -> None:
    """ValueError naming ``where`` unless ``fixed`` is a value of ``width`` bytes on fuzz-only ``units``
    (ranges here, guided batches in :class:`~avocado_iofuzz.guided.batch.Batch`)."""
    if not isinstance(fixed, int) or isinstance(fixed, bool):
        raise ValueError(f"{where}: fixed must be an int or None, got {fixed!r}")
    if not 0 <= fixed < 1 << (8 * width):
        most = (1 << 8 * width) - 1
        raise ValueError(f"{where}: fixed value {fixed:#x} does not fit in {width} byte(s) (0..{most:#x})")
    if not fuzz_only:
        # a read and a zero write before it would undo what the fixed writes set up
        raise ValueError(f"{where}: a fixed value is for fuzz-only {units} (fuzz_only=True), fixed={fixed:#x}")


def plan_ranges(
    seed: int, ranges: Sequence[tuple[int, int, str]], fuzz_count: int, width: int = 1, values: str = VALUES_UNIFORM
) -> list[RangePlan]:
    """One ``RangePlan`` per ``(start, end, name)``, indexed by position."""
    plans = []
    for index, entry in enumerate(ranges):
        if not isinstance(entry, tuple | list) or len(entry) != 3:
            raise ValueError(f"range {index}: expected (start, end, name), got {entry!r}")
        start, end, name = entry
        plans.append(RangePlan(index, start, end, str(name), seed, fuzz_count, width, values=values))
    return plans
