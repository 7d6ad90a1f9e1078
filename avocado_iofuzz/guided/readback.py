"""The device-state signal: what a batch's registers read back, in classes coarse enough to count.

Guided keeps a program when one of its elements reached something new, and
trace events alone miss the steps that build device state silently: a virtio
queue address latched, nvme's admin queue registers set, CC.EN showing up as
CSTS.RDY, an ahci port's command list base, a NIC's descriptor ring base and
length, EHCI's run bit mirrored in USBSTS. Such a step changes what the
device *answers*. With ``--readback`` the executor prints, at each range's
end, a digest of what its reads returned (``@RB``, see
:mod:`avocado_iofuzz.executor.protocol`): the read phase of a sweep, and for
a fuzz-only step (a program's element) one extra read of each slot it wrote.

A digest is at most :data:`MAX_PAIRS` pairs (register offset, value class),
lowest offsets first. A raw value would be useless as a feature: counters,
timestamps and the random values earlier batches left in latching registers
would give every batch a "new" one, and the corpus would fill with noise.
The classes keep what tells state apart:

``f``
    all ones at the access width: nothing decodes there, or a register full.
``w``
    the last value this executor invocation (this round) wrote to that
    address at that width: the register latches, and holding what we put
    there is no news. (Writes are remembered in a direct-mapped table of
    :data:`LATCHES` entries, :class:`Latches`; a collision forgets.)
``s``
    an address inside the scratch memory: a DMA base the device kept.
``p``
    a page frame number inside the scratch memory (virtio legacy's queue PFN).
``m``
    more than 8 bits set: an address or a random value held, one class.
``bNK``
    anything else: ``N`` the low four bits (enable, ready, halted and run bits
    sit there), ``K`` the bucket of the number of set bits (1, 2, 3-4, 5-8 as
    0..3): a status register gaining a flag moves.

A zero answer makes no pair: it is the reset state of nearly every register,
and leaving it out keeps the line short (the serial console is slow). So a
register reads as one of at most 69 classes, a range as at most 16 pairs:
the features a device can add are bounded.

A feature is spelled ``rb:<base key>+0xOFF=<class>`` with the offset from
the start of the batch's device range (:meth:`Base.key`), so batches over
different stretches of one range name a register alike. Read-backs change
no op: a batch's ops are its fields' alone, and the same seed, strategy and
corpus make the same ops (:mod:`.rebuild` rebuilds the corpus from the
features the trace's ``guided_events`` recorded).

Read-backs are opt-in (``guided_readback``, :data:`MODES`): ``off`` (the
default) runs guided rounds without them, ``steps`` takes features from
fuzz-only steps' read-backs only (a sweep's read phase reads every register
after random writes, and those answers flooded the corpus), ``all`` from
every range's. :func:`kept` says which batches' digests count.

This module is the host's copy of the executor's classification (keep it
identical to ``rb_class`` in ``iofuzz_exec.c``): the functional test checks
the executor's digest against one computed here from QEMU's own trace of the
reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from avocado_iofuzz.guided.batch import Batch
from avocado_iofuzz.model.generator import mix64
from avocado_iofuzz.model.program import SPACE_MMIO, SPACE_PCI, SPACE_PIO

MAX_PAIRS = 16
LATCHES = 4096
PREFIX = "rb:"
PAGE = 4096
MANY_BITS = 8
CLASSES = frozenset({"f", "w", "s", "p", "m"} | {f"b{n:x}{k}" for n in range(16) for k in range(4)})
SPACE_CODES = {SPACE_PIO: 0, SPACE_MMIO: 1, SPACE_PCI: 2}  # the executor's enum space

Pair = tuple[int, str]  # (offset from the range's start, class)
MODES = ("off", "steps", "all")  # guided_readback: none, fuzz-only steps' read-backs, every range's
DEFAULT_MODE = "off"


class Latches:
    """The executor's memory of its writes in one invocation: the last value per (space, address, width).

    Direct-mapped like the executor's table (``rb_latches``): a write takes the
    entry its key hashes to, evicting whatever was there.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[int, int]] = {}

    @staticmethod
    def _key(space: str, address: int, width: int) -> int:
        return ((address << 8) | (SPACE_CODES[space] << 4) | width) & (2**64 - 1)

    def store(self, space: str, address: int, width: int, value: int) -> None:
        key = self._key(space, address, width)
        self._entries[mix64(key) % LATCHES] = (key, value)

    def last(self, space: str, address: int, width: int) -> int | None:
        """The value last written there, or None if the table does not hold it."""
        key = self._key(space, address, width)
        held = self._entries.get(mix64(key) % LATCHES)
        return held[1] if held is not None and held[0] == key else None


def popcount_bucket(value: int) -> int:
    """0..3 for 1, 2, 3-4, 5-8 set bits (``value`` != 0 with at most :data:`MANY_BITS`)."""
    bits = bin(value).count("1")
    if not 1 <= bits <= MANY_BITS:
        raise ValueError(f"a popcount bucket is for 1..{MANY_BITS} set bits, {value:#x} has {bits}")
    return bits - 1 if bits <= 2 else 2 if bits <= 4 else 3


def value_class(
    value: int, width: int, written: int | None = None, scratch: tuple[int, int] | None = None
) -> str | None:
    """The class of ``value`` read from a ``width``-byte register; None for zero (no pair).

    ``written``: the last value the invocation wrote there (:meth:`Latches.last`);
    ``scratch``: the scratch memory's (base, size) when the run has one.
    """
    mask = (1 << (8 * width)) - 1
    value &= mask
    if not value:
        return None
    if value == mask:
        return "f"
    if written is not None and value == written & mask:
        return "w"
    if scratch is not None:
        base, size = scratch
        if base <= value < base + size:
            return "s"
        if base // PAGE <= value < (base + size + PAGE - 1) // PAGE:
            return "p"
    if bin(value).count("1") > MANY_BITS:
        return "m"
    return f"b{value & 0xF:x}{popcount_bucket(value)}"


def digest(
    reads: Iterable[tuple[int, int]],
    width: int,
    written: Mapping[int, int] | None = None,
    scratch: tuple[int, int] | None = None,
) -> tuple[Pair, ...]:
    """The executor's digest of ``reads`` ((offset, value) in the order made, offsets ascending).

    ``written``: offset -> the last value the invocation wrote there, when it is known.
    """
    pairs: list[Pair] = []
    for offset, value in reads:
        if len(pairs) == MAX_PAIRS:
            break
        cls = value_class(value, width, None if written is None else written.get(offset), scratch)
        if cls is not None:
            pairs.append((offset, cls))
    return tuple(pairs)


def read_back_slots(offsets_written: Iterable[int]) -> list[int]:
    """The slots a fuzz-only step reads back: the lowest :data:`MAX_PAIRS` offsets it wrote."""
    return sorted(set(offsets_written))[:MAX_PAIRS]


def features_of(batch: Batch, pairs: Sequence[Pair]) -> list[str]:
    """A batch's read-back features, offsets counted from its device range's start."""
    shift = batch.start - batch.base.start
    return sorted({f"{PREFIX}{batch.base.key()}+{offset + shift:#x}={cls}" for offset, cls in pairs})


def is_feature(spelled: str) -> bool:
    """A read-back feature as :func:`features_of` spells it."""
    head, _, cls = spelled.rpartition("=")
    return spelled.startswith(PREFIX) and "+0x" in head and cls in CLASSES


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MODES`, else a ValueError naming them."""
    if mode not in MODES:
        raise ValueError(f"read-back mode {mode!r}: expected one of {', '.join(MODES)}")
    return mode


def kept(mode: str, batch: Batch) -> bool:
    """Whether ``batch``'s read-backs become features under ``mode`` (``steps``: fuzz-only steps' alone)."""
    return check_mode(mode) == "all" or (mode == "steps" and batch.fuzz_only)
