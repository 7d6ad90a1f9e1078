"""A program: an ordered tuple of batches (its *elements*), run as consecutive ranges of a round.

The guided corpus keeps programs, not single batches: what got a device
further is usually a *sequence* of register writes (virtio: queue select,
queue PFN, status, notify; nvme: admin queue addresses, CC.EN, a doorbell),
and a program keeps the order and the values (each element's seed) that made
it. A *step* is a one-register fuzz-only element (:func:`step`): ``count``
seeded writes to that register and nothing else (a read and a zero write
first would undo the step before it). A *fixed step* (:func:`fixed_step`)
writes one exact value instead of seeded ones: a device's bring-up sequence
(status 1, 3, a queue address, DRIVER_OK, a doorbell) is a program of them. Any batch is an element too: a corpus
entry found by a sweep is a program of one element, and a mutation may put
steps after it.

Elements run as ordinary ranges (:meth:`Batch.plan`), so the executor, the
trace, replay, triage and the rebuild see nothing new; the round records
where each program starts (``guided_round``'s ``programs``: element counts).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from avocado_iofuzz.guided.batch import UNIFORM, Base, Batch, BatchError

Program = tuple[Batch, ...]

MAX_ELEMENTS = 64  # a program longer than this is cut: rounds stay many programs, not one
STEP_COUNTS = (1, 2, 4, 8, 16)  # writes per step: one value, or a few for a doorbell or a register with side effects


def device_of(base: Base) -> str:
    """A device's ranges share the first word of their names (``0000:00:03.0``, ``e1000e``)."""
    words = base.name.split()
    return words[0] if words else base.key()


def program_device(program: Program) -> str:
    return device_of(program[0].base)


def op_count(program: Program) -> int:
    return sum(element.op_count for element in program)


def step(base: Base, address: int, width: int, seed: int, count: int, values: str) -> Batch:
    """A fuzz-only element on the one register at ``address``: ``count`` seeded writes to it."""
    return Batch(base, address, address + width - 1, seed, max(1, count), width, values, fuzz_only=True)


def fixed_step(
    base: Base, address: int, width: int, value: int, count: int = 1, values: str = UNIFORM, seed: int = 0,
    layout: str = "",
) -> Batch:
    """A fuzz-only element writing exactly ``value`` to the register at ``address``, ``count`` times.

    ``values="dma"`` (a base planned with it) fills the scratch memory with
    the base's layout right before the writes: the step that points the
    device at the scratch memory. Every ``dma`` element fills it afresh when
    it starts (contents drawn from its seed and bounds), overwriting what the
    device wrote there, so the other steps of a bring-up stay ``uniform``
    (the default), which leaves the memory alone. The seed picks nothing
    else on one register; :class:`BatchError` if the value does not fit
    ``width`` bytes. ``layout``: the fill's layout when the base was not
    planned with ``dma`` values (a recipe's pointer step in a uniform run).
    """
    return Batch(base, address, address + width - 1, seed, max(1, count), width, values, fuzz_only=True, fixed=value,
                 layout=layout)  # fmt: skip


def registers(programs: Iterable[Program]) -> list[tuple[Base, int, int]]:
    """(base, address, width) of every register the programs' steps touch, sorted, each once."""
    return sorted({(e.base, e.start, e.width) for program in programs for e in program if e.slots == 1})


def bounded(program: Sequence[Batch]) -> Program:
    return tuple(program[:MAX_ELEMENTS])


def describe(program: Program) -> str:
    return " ; ".join(element.describe() for element in program)


def program_as_list(program: Program) -> list[dict[str, Any]]:
    return [element.as_dict() for element in program]


def program_from_list(record: Any) -> Program:
    """A program from :func:`program_as_list`'s output; :class:`BatchError` naming what is wrong."""
    if not isinstance(record, list) or not record:
        raise BatchError(f"a program must be a non-empty list of batch records, got {record!r:.80}")
    if len(record) > MAX_ELEMENTS:
        raise BatchError(f"a program has {len(record)} elements, at most {MAX_ELEMENTS}")
    return tuple(Batch.from_dict(element) for element in record)
