"""Mutations of a corpus batch: each a pure function of the parent, the run's ranges and a random stream.

* ``narrow`` / ``widen`` / ``shift``: another stretch of the same device range
  (the op subset: fewer or more registers, or the ones next door);
* ``count``: fewer or more fuzz writes per slot;
* ``width``: another access width the address space allows (the stretch
  realigned to it): registers wider than the planned width are reached whole;
* ``values``: the other value mode the run planned for the range (uniform or the run's ``fuzz_values``);
* ``pace``: another pacing (:data:`PACINGS`): a sleep every so many ops, during which QEMU's main
  loop runs the timers and bottom halves (USB frame timers, NIC and storage DMA) that walk the
  rings the values point at -- a flat-out executor leaves them hardly any time.

* ``seed``: a neighbouring seed (:func:`neighbour_seed`): the same stretch with other ops.

Every other mutation keeps the parent's seed: each batch of a round carries
its own (the executor takes one per range, ``@S``), so a child changes one
thing at a time and the rest of the round is not moved by it.

A fixed element (one exact value, :mod:`avocado_iofuzz.guided.fixed_mutate`)
has mutations of its own (:data:`FIXED_ELEMENT_MUTATIONS`): its value's
(``flip``, ``nudge``, ``redraw``), ``unfix``, and those above that keep the
value meaningful (``count``, ``shift``, ``pace``). A seeded batch draws from
:data:`MUTATIONS` exactly as before fixed values existed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from avocado_iofuzz.guided.batch import UNIFORM, WIDTHS, Base, Batch
from avocado_iofuzz.guided.fixed_mutate import FIXED_MUTATIONS
from avocado_iofuzz.guided.rng import Stream

MAX_STRETCH_SLOTS = 256  # a stretch this big is a sweep already: the whole range does that better
SEED_STEP = 8
# (pause_every ops, pause_us): unpaced, and sleeps of 0.1-2 ms every 64 to 4096 ops (a USB frame is 1 ms)
PACINGS = ((0, 0), (64, 100), (256, 500), (1024, 1000), (4096, 2000))


def fresh(base: Base, seed: int, ops: int, stream: Stream) -> Batch:
    """A random stretch of ``base``: 1 to 2**k slots (k uniform: small stretches as often as big ones),
    at the planned width half the time, else at any width the address space allows."""
    widths = [w for w in WIDTHS[base.space] if slot_grid(base, w)[1] > 0]
    size = base.width if stream.chance(1, 2) or not widths else stream.choice(widths)
    low, count = slot_grid(base, size)
    longest = min(count, MAX_STRETCH_SLOTS)
    slots = min(longest, 1 << stream.below(longest.bit_length()))
    start = low + stream.below(count - slots + 1) * size
    return Batch(base, start, start + slots * size - 1, seed, _count_for(ops, slots), size, base.values)


def sweep(base: Base, seed: int, ops: int) -> Batch:
    """The whole range, as a blind run fuzzes it (with about ``ops`` ops, at least one fuzz write per slot)."""
    return Batch(base, base.start, base.end, seed, _count_for(ops, base.slots), values=base.values)


def with_seed(batch: Batch, seed: int) -> Batch:
    return replace(batch, seed=seed)


def _count_for(ops: int, slots: int) -> int:
    return max(1, ops // max(1, slots) - 2)


def stretch(batch: Batch, first_slot: int, slots: int, ops: int | None = None) -> Batch:
    """``slots`` slots of the batch's width from slot ``first_slot`` (counted from the first aligned one), clamped."""
    low, count = slot_grid(batch.base, batch.width)
    slots = max(1, min(slots, count, MAX_STRETCH_SLOTS))
    first_slot = max(0, min(first_slot, count - slots))
    start = low + first_slot * batch.width
    ops = batch.op_count if ops is None else ops
    fuzz_count = max(1, ops // slots) if batch.fuzz_only else _count_for(ops, slots)  # no read/zero ops to leave out
    return replace(batch, start=start, end=start + slots * batch.width - 1, fuzz_count=fuzz_count)


def slot_grid(base: Base, width: int) -> tuple[int, int]:
    """The first address of ``width``-byte slots in ``base`` (aligned, but for ports) and how many fit."""
    low = base.start if base.space == "pio" else -(-base.start // width) * width
    return low, max(0, (base.end + 1 - low) // width)


def _first_slot(batch: Batch) -> int:
    low, _ = slot_grid(batch.base, batch.width)
    return (batch.start - low) // batch.width


def neighbour_seed(seed: int, stream: Stream) -> int:
    """A seed near ``seed`` (± 1..8): a parent's stretches with other ops."""
    step = stream.between(1, SEED_STEP)
    return (seed + (step if stream.chance(1, 2) else -step)) % (1 << 63)


def reseed(batch: Batch, stream: Stream) -> Batch:
    """The same stretch with a neighbouring seed."""
    return with_seed(batch, neighbour_seed(batch.seed, stream))


def narrow(batch: Batch, stream: Stream) -> Batch:
    slots = max(1, batch.slots // 2 if batch.slots > 1 else 1)
    return stretch(batch, _first_slot(batch) + stream.below(batch.slots - slots + 1), slots)


def widen(batch: Batch, stream: Stream) -> Batch:
    slots = batch.slots * 2
    return stretch(batch, _first_slot(batch) - stream.below(batch.slots + 1), slots)


def shift(batch: Batch, stream: Stream) -> Batch:
    move = stream.between(1, max(1, batch.slots))
    return stretch(batch, _first_slot(batch) + (move if stream.chance(1, 2) else -move), batch.slots)


def count(batch: Batch, stream: Stream) -> Batch:
    factor = stream.choice((1, 2, 4))
    fuzz_count = batch.fuzz_count * factor if stream.chance(1, 2) else batch.fuzz_count // factor
    return replace(batch, fuzz_count=max(1, fuzz_count))


def values(batch: Batch, stream: Stream) -> Batch:
    modes = [mode for mode in (UNIFORM, batch.base.values) if mode != batch.values]
    return replace(batch, values=stream.choice(modes)) if modes else count(batch, stream)


def pace(batch: Batch, stream: Stream) -> Batch:
    """Another pacing of :data:`PACINGS` than the batch's."""
    every, us = stream.choice([p for p in PACINGS if p != (batch.pause_every, batch.pause_us)])
    return replace(batch, pause_every=every, pause_us=us)


def width(batch: Batch, stream: Stream) -> Batch:
    """The stretch at another width: aligned down to it, about as many bytes, inside the range."""
    choices = [w for w in WIDTHS[batch.base.space] if w != batch.width and slot_grid(batch.base, w)[1] > 0]
    if not choices:
        return count(batch, stream)
    new = stream.choice(choices)
    low, _ = slot_grid(batch.base, new)
    first = max(0, (batch.start - low) // new)
    wider = replace(batch, width=new, start=low, end=low + new - 1)
    return stretch(wider, first, max(1, (batch.end + 1 - batch.start) // new), batch.op_count)


Mutation = Callable[[Batch, Stream], Batch]
MUTATIONS: dict[str, Mutation] = {
    "narrow": narrow,
    "widen": widen,
    "shift": shift,
    "count": count,
    "width": width,
    "values": values,
    "pace": pace,
    "seed": reseed,
}


# of a fixed element: not width (the value is the register's, at its width), values (a fixed value draws
# nothing; the scratch fill is the recipe's choice), seed (one register: the seed picks nothing), nor the
# stretch edits that make a register sequence a sweep
FIXED_ELEMENT_MUTATIONS: dict[str, Mutation] = {**FIXED_MUTATIONS, "count": count, "shift": shift, "pace": pace}


def mutate(batch: Batch, stream: Stream) -> tuple[str, Batch]:
    """One mutation of ``batch``, picked from ``stream`` (of a fixed element: one of its own)."""
    table = MUTATIONS if batch.fixed is None else FIXED_ELEMENT_MUTATIONS
    name = stream.choice(sorted(table))
    return name, table[name](batch, stream)
