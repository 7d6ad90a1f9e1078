"""Mutations of a corpus program: each a pure function of the program, the run's ranges and a random stream.

They edit the sequence and keep the rest of it, so a child builds on what
its parent reached:

* ``insert``: a new step, on a register of the same device -- any of its
  slots, one that corpus programs of the device already touch (``known``), or
  the neighbour of one of the program's own;
* ``drop``: one element less;
* ``change``: one element mutated as a batch (:mod:`avocado_iofuzz.guided.mutate`:
  another seed, count, width, value mode, pacing, or a neighbouring register
  or stretch), the others untouched;
* ``repeat``: one element twice in a row, the copy half the time with a neighbouring seed;
* ``splice``: a prefix of the program and a suffix of another program of the same device;
* ``freeze``: a short seeded step turned into the fixed steps that make exactly its writes
  (:func:`~avocado_iofuzz.guided.fixed_mutate.frozen`: the model knows every value it wrote), one
  of which then gets another value (flip, nudge, redraw): the writes that reached something,
  refined one value at a time. A program without such a step gets ``insert`` instead.

Programs stay within :data:`~avocado_iofuzz.guided.program.MAX_ELEMENTS` elements.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from avocado_iofuzz.guided.batch import Base
from avocado_iofuzz.guided.fixed_mutate import VALUE_MUTATIONS, freezable, frozen
from avocado_iofuzz.guided.mutate import mutate, neighbour_seed, slot_grid
from avocado_iofuzz.guided.program import STEP_COUNTS, Program, bounded, device_of, program_device, step
from avocado_iofuzz.guided.rng import Stream


@dataclass(frozen=True)
class Context:
    """What a program mutation may draw from besides the program: this run's ranges and the corpus."""

    bases: tuple[Base, ...]  # the run's ranges of the program's device
    known: tuple[tuple[Base, int, int], ...] = ()  # registers (base, address, width) corpus programs touch
    mates: tuple[Program, ...] = ()  # other corpus programs of the device (splice partners)


def context_for(program: Program, bases: Sequence[Base], programs: Sequence[Program]) -> Context:
    """The context of ``program``: its device's ranges among ``bases``, its device's ``programs``."""
    device = program_device(program)
    own = tuple(base for base in sorted(set(bases)) if device_of(base) == device) or (program[0].base,)
    mates = tuple(p for p in programs if p != program and program_device(p) == device)
    present = set(own)
    known = {(e.base, e.start, e.width) for p in (program, *mates) for e in p if e.slots == 1 and e.base in present}
    return Context(own, tuple(sorted(known)), mates)


def new_step(program: Program, context: Context, stream: Stream) -> Program:
    """A step on a register of the device: any slot, a known one, or a neighbour of one of the program's."""
    how = stream.below(3)
    if how == 1 and context.known:
        base, address, width = stream.choice(context.known)
    elif how == 2:
        element = stream.choice(program)
        base, width = element.base, element.width
        low, count = slot_grid(base, width)
        move = stream.choice((-1, 1)) if element.slots == 1 else stream.below(element.slots)  # next door, or inside
        slot = (element.start - low) // width + move
        address = low + max(0, min(count - 1, slot)) * width
    else:
        base = stream.choice(context.bases)
        width = base.width
        low, count = slot_grid(base, width)
        address = low + stream.below(max(1, count)) * width
    element = step(base, address, width, stream.word() >> 1, stream.choice(STEP_COUNTS), base.values)
    at = stream.below(len(program) + 1)
    return bounded((*program[:at], element, *program[at:]))


def insert(program: Program, context: Context, stream: Stream) -> Program:
    return new_step(program, context, stream)


def drop(program: Program, context: Context, stream: Stream) -> Program:
    if len(program) == 1:
        return insert(program, context, stream)
    at = stream.below(len(program))
    return program[:at] + program[at + 1 :]


def change(program: Program, context: Context, stream: Stream) -> Program:
    at = stream.below(len(program))
    _, element = mutate(program[at], stream)
    return (*program[:at], element, *program[at + 1 :])


def repeat(program: Program, context: Context, stream: Stream) -> Program:
    at = stream.below(len(program))
    copy = program[at]
    if stream.chance(1, 2):
        copy = replace(copy, seed=neighbour_seed(copy.seed, stream))
    return bounded((*program[: at + 1], copy, *program[at + 1 :]))


def splice(program: Program, context: Context, stream: Stream) -> Program:
    if not context.mates:
        return insert(program, context, stream)
    other = stream.choice(context.mates)
    head = program[: stream.between(1, len(program))]
    tail = other[stream.below(len(other)) :]
    return bounded((*head, *tail))


def freeze(program: Program, context: Context, stream: Stream) -> Program:
    candidates = [at for at, element in enumerate(program) if freezable(element)]
    if not candidates:
        return insert(program, context, stream)
    at = stream.choice(candidates)
    steps = list(frozen(program[at]))
    which = stream.below(len(steps))
    steps[which] = VALUE_MUTATIONS[stream.choice(sorted(VALUE_MUTATIONS))](steps[which], stream)
    return bounded((*program[:at], *steps, *program[at + 1 :]))


ProgramMutation = Callable[[Program, Context, Stream], Program]
PROGRAM_MUTATIONS: dict[str, ProgramMutation] = {
    "insert": insert,
    "drop": drop,
    "change": change,
    "repeat": repeat,
    "splice": splice,
    "freeze": freeze,
}
# insert twice as often as the rest: programs grow step by step from what reached something
_WEIGHTS = {"insert": 2, "drop": 1, "change": 2, "repeat": 1, "splice": 1, "freeze": 1}


def mutate_program(program: Program, context: Context, stream: Stream, stack: int = 1) -> tuple[str, Program]:
    """``stack`` mutations of ``program`` in a row; the name is theirs joined by ``+``."""
    names = sorted(PROGRAM_MUTATIONS)
    done = []
    for _ in range(max(1, stack)):
        name = stream.weighted(names, [_WEIGHTS[n] for n in names])
        program = PROGRAM_MUTATIONS[name](program, context, stream)
        done.append(name)
    return "+".join(done), program
