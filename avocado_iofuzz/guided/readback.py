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
timestamps and random latches would give every batch a "new" one, and the
corpus would fill with noise. The classes keep what tells state apart:

``f``
    all ones at the access width: nothing decodes there, or a register full.
``w``
    the last value the step wrote to that slot (fuzz-only steps only): the
    register latches -- an address, a length, a queue size it accepted.
``s``
    an address inside the scratch memory: a DMA base the device kept.
``p``
    a page frame number inside the scratch memory (virtio legacy's queue PFN).
``bNK``
    anything else: ``N`` the low four bits (enable, ready, halted and run bits
    sit there), ``K`` the bucket of the number of set bits (1, 2, 3-4, 5-8,
    9-16, 17+ as 0..5): a status register gaining a flag moves, a counter's
    upper bits do not multiply it past 16 x 6 classes.

A zero answer makes no pair: it is the reset state of nearly every register,
and leaving it out keeps the line short (the serial console is slow). So a
register reads as one of at most 100 classes, a range as at most 16 pairs:
the features a device can add are bounded.

A feature is spelled ``rb:<base key>+0xOFF=<class>`` with the offset from
the start of the batch's device range (:meth:`Base.key`), so batches over
different stretches of one range name a register alike. Read-backs change
no op: a batch's ops are its fields' alone, and the same seed, strategy and
corpus make the same ops (:mod:`.rebuild` rebuilds the corpus from the
features the trace's ``guided_events`` recorded).

This module is the host's copy of the executor's classification (keep it
identical to ``rb_class`` in ``iofuzz_exec.c``): the functional test checks
the executor's digest against one computed here from QEMU's own trace of the
reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from avocado_iofuzz.guided.batch import Batch

MAX_PAIRS = 16
PREFIX = "rb:"
PAGE = 4096
CLASSES = frozenset({"f", "w", "s", "p"} | {f"b{n:x}{k}" for n in range(16) for k in range(6)})

Pair = tuple[int, str]  # (offset from the range's start, class)


def popcount_bucket(value: int) -> int:
    """0..5 for 1, 2, 3-4, 5-8, 9-16, 17+ set bits (``value`` != 0)."""
    bits = bin(value).count("1")
    if bits < 1:
        raise ValueError("a zero value has no popcount bucket")
    return bits - 1 if bits <= 2 else 2 if bits <= 4 else 3 if bits <= 8 else 4 if bits <= 16 else 5


def value_class(
    value: int, width: int, written: int | None = None, scratch: tuple[int, int] | None = None
) -> str | None:
    """The class of ``value`` read from a ``width``-byte register; None for zero (no pair).

    ``written``: the last value written there by the step (fuzz-only read-backs);
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
    return f"b{value & 0xF:x}{popcount_bucket(value)}"


def digest(
    reads: Iterable[tuple[int, int]],
    width: int,
    written: Mapping[int, int] | None = None,
    scratch: tuple[int, int] | None = None,
) -> tuple[Pair, ...]:
    """The executor's digest of ``reads`` ((offset, value) in the order made, offsets ascending).

    ``written``: offset -> last value written, for a fuzz-only step's read-backs.
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
