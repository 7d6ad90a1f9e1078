"""Mutations of fixed values, and freezing a seeded step into fixed ones: pure functions of the element and a stream.

A fixed element (:func:`~avocado_iofuzz.guided.program.fixed_step`) writes one
exact value; what a bring-up sequence gets wrong is usually close to right:

* ``flip``: one bit of the value (a flag of a status or control register);
* ``nudge``: the value plus or minus 1..:data:`NUDGE_MOST` (a count, an index, a neighbouring address);
* ``redraw``: another value of the same kind in the DMA dictionary
  (:func:`value_kind`: a scratch page frame for a frame, a scratch address
  for an address, a size for a size...), drawn as the dictionary draws it;
* ``unfix``: seeded values again (the same seed and count): the register explored instead of set.

:func:`freeze` turns a short seeded element into the fixed steps that make
exactly its writes. It needs no data from the round: op ``i`` of an element
is a pure function of its record (``RangePlan.op``), so the values a step
wrote are known on the host without asking the guest or the trace. Frozen,
the writes that reached something can be refined one value at a time by the
mutations above, which a seed change (all values at once) cannot do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from avocado_iofuzz.guided.batch import UNIFORM, Batch
from avocado_iofuzz.guided.program import fixed_step
from avocado_iofuzz.guided.rng import Stream
from avocado_iofuzz.model.dma import SCRATCH_BASE, SCRATCH_END, SCRATCH_SIZE, SIZES, dictionary_value

NUDGE_MOST = 8
FREEZE_MOST_OPS = 16  # a step's largest count: longer elements are walks, not sequences of writes
REDRAW_TRIES = 4  # a kind of few values (the scratch memory's four page frames) may draw the same one again

# dictionary kinds (model/dma.py's dictionary_value: the generator word's top 4 bits)
KIND_UNIFORM = 0
KIND_FRAME = 5
KIND_ADDRESS = 6
KIND_PAGE = 7
KIND_SMALL = 11
KIND_POWER = 12
KIND_SIZE = 13
KIND_OFFSET = 14
KIND_LOW_MASK = 15


def value_kind(value: int, width: int) -> int:
    """The dictionary kind ``value`` is a draw of, the most specific first (0 and all-ones: small ints, low masks).

    0 and all-ones are kinds of one value each: another draw of "the same
    kind" would be the value itself, so they count as the kinds next to them.
    """
    if SCRATCH_BASE >> 12 <= value <= SCRATCH_END >> 12:
        return KIND_FRAME
    if SCRATCH_BASE <= value <= SCRATCH_END:
        return KIND_PAGE if value % 0x1000 == 0 else KIND_ADDRESS
    if value < 32:
        return KIND_SMALL
    if value in SIZES:
        return KIND_SIZE
    if value & (value - 1) == 0:
        return KIND_POWER
    if value & (value + 1) == 0:
        return KIND_LOW_MASK
    if value < SCRATCH_SIZE:
        return KIND_OFFSET
    return KIND_UNIFORM


def _with_value(batch: Batch, value: int) -> Batch:
    return replace(batch, fixed=value & ((1 << (8 * batch.width)) - 1))


def _value(batch: Batch) -> int:
    if batch.fixed is None:
        raise ValueError(f"{batch.describe()}: not a fixed element")
    return batch.fixed


def flip(batch: Batch, stream: Stream) -> Batch:
    return _with_value(batch, _value(batch) ^ (1 << stream.below(8 * batch.width)))


def nudge(batch: Batch, stream: Stream) -> Batch:
    delta = stream.between(1, NUDGE_MOST)
    return _with_value(batch, _value(batch) + (delta if stream.chance(1, 2) else -delta))


def redraw(batch: Batch, stream: Stream) -> Batch:
    value = _value(batch)
    kind = value_kind(value, batch.width)
    for _ in range(REDRAW_TRIES):
        other = dictionary_value(kind << 60 | stream.word() >> 4, batch.width)
        if other != value:
            return _with_value(batch, other)
    return flip(batch, stream)


def unfix(batch: Batch, stream: Stream) -> Batch:
    return replace(batch, fixed=None)


FixedMutation = Callable[[Batch, Stream], Batch]
# the value mutations, without unfix: what refines a frozen write
VALUE_MUTATIONS: dict[str, FixedMutation] = {"flip": flip, "nudge": nudge, "redraw": redraw}
FIXED_MUTATIONS: dict[str, FixedMutation] = {**VALUE_MUTATIONS, "unfix": unfix}


def frozen(element: Batch) -> tuple[Batch, ...]:
    """The fixed one-write steps that make ``element``'s writes, in order (a short seeded fuzz-only element).

    The first keeps the element's value mode (a ``dma`` element's scratch
    memory is filled once, before its first write; on one register with the
    element's own seed and bounds, with the very same contents), the others
    are ``uniform``: a fill between them would overwrite what the device
    wrote into the memory meanwhile, which the element's writes never did.
    """
    if element.fixed is not None or not element.fuzz_only or element.op_count > FREEZE_MOST_OPS:
        raise ValueError(f"{element.describe()}: only short seeded fuzz-only elements freeze")
    steps = []
    for i, op in enumerate(element.plan(0).ops()):
        mode = element.values if i == 0 else UNIFORM
        layout = element.layout if i == 0 else ""
        steps.append(fixed_step(element.base, op.port, element.width, op.value, values=mode, seed=element.seed,
                                layout=layout))  # fmt: skip
    return tuple(steps)


def freezable(element: Batch) -> bool:
    return element.fixed is None and element.fuzz_only and element.op_count <= FREEZE_MOST_OPS
