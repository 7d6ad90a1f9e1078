"""A batch: one stretch of a device range fuzzed with one seed -- the unit the guided corpus keeps.

A batch names everything that shapes its ops: the device range it belongs to
(the *base*: space, bounds, width, name, as the run planned it), the stretch
of that range it fuzzes (``start..end``), its access width (the base's, or
another its address space allows: a 4-byte register a 1-byte port plan never
reaches whole), the seed, the fuzz count, the value mode and the pacing. :meth:`Batch.plan` turns it into an
ordinary :class:`~avocado_iofuzz.model.program.RangePlan`, so the executor,
the trace, replay and triage see nothing new. A fuzz-only batch may carry a
fixed value (``fixed``): all its writes write it (an exact register write of a
device's bring-up, see :func:`~avocado_iofuzz.guided.program.fixed_step`).

``values`` names how write values are drawn (:func:`value_modes`, the op
model's ``uniform`` and ``dma``). A base carries the mode the run planned for
its range (``fuzz_values``): a batch uses it or ``uniform``, never a mode the
run did not ask for -- ``dma`` needs the guest's scratch memory and can send a
device's DMA into the guest kernel, so only a run that chose it gets it. The
one exception is a batch that names its own scratch ``layout``: a bring-up
recipe's pointer step (:mod:`avocado_iofuzz.guided.recipes`), which a run with
uniform ranges gets only once the guest showed it has scratch memory, so that
the device it points at the memory finds its family's requests there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from avocado_iofuzz.model import program
from avocado_iofuzz.model.dma import VALUES_DMA
from avocado_iofuzz.model.dma_layouts import LAYOUT_GENERIC, LAYOUTS
from avocado_iofuzz.model.program import (
    MAX_PAUSE_US,
    MMIO_WIDTHS,
    PCI_WIDTHS,
    PIO_WIDTHS,
    SPACE_MMIO,
    SPACE_PCI,
    SPACE_PIO,
    RangePlan,
)

UNIFORM = "uniform"
WIDTHS = {SPACE_PIO: PIO_WIDTHS, SPACE_MMIO: MMIO_WIDTHS, SPACE_PCI: PCI_WIDTHS}


def value_modes() -> tuple[str, ...]:
    """The value modes the op model offers (``VALUE_MODES`` of model/program.py once it has more than one)."""
    modes = getattr(program, "VALUE_MODES", (UNIFORM,))
    return tuple(str(mode) for mode in modes)


class BatchError(ValueError):
    """A batch record is not usable (bad field, a stretch outside its base range, an unknown value mode)."""


@dataclass(frozen=True, order=True)
class Base:
    """A device range of the run, as planned: what a batch's stretch lies within."""

    space: str
    start: int
    end: int
    width: int
    name: str
    values: str = UNIFORM  # the run's mode for this range: its batches use it or uniform
    layout: str = LAYOUT_GENERIC  # the scratch layout its dma batches get (RangePlan's)

    @classmethod
    def of(cls, plan: RangePlan) -> Base:
        return cls(plan.space, plan.start, plan.end, plan.width, plan.name, plan.values, plan.layout)

    @property
    def slots(self) -> int:
        return (self.end - self.start + 1) // self.width

    def key(self) -> str:
        """Stable across runs of the same row and QEMU (the firmware assigns the same addresses)."""
        mode = "" if self.values == UNIFORM else f"+{self.values}"
        if self.layout != LAYOUT_GENERIC:
            mode += f"={self.layout}"  # a corpus of generic-layout batches keeps its keys
        return f"{self.space}:{self.start:#x}-{self.end:#x}/{self.width}{mode}"


@dataclass(frozen=True, order=True)
class Batch:
    base: Base
    start: int
    end: int
    seed: int
    fuzz_count: int
    width: int = 0  # 0: the base's
    values: str = UNIFORM
    # pacing (RangePlan's): a sleep of pause_us before every pause_every-th op, 0/0 for none --
    # time for the device's timers and bottom halves, which a flat-out executor starves
    pause_every: int = 0
    pause_us: int = 0
    # the fuzz phase alone (RangePlan's fuzz_only): a program's step, which a read and zero write would undo
    fuzz_only: bool = False
    # every write writes this value (RangePlan's fixed; fuzz-only batches only): an exact step, None: seeded
    fixed: int | None = None
    # the scratch layout of a dma batch on a range the run planned uniform (a bring-up recipe's pointer step,
    # which fills the scratch memory with its device family's layout); "": the base's layout
    layout: str = ""

    def __post_init__(self) -> None:
        where = f"batch {self.base.key()} {self.start:#x}-{self.end:#x}"
        if self.values == UNIFORM:
            object.__setattr__(self, "layout", "")  # uniform values fill nothing: no layout to keep
        if self.width == 0:
            object.__setattr__(self, "width", self.base.width)
        for name in ("start", "end", "seed", "fuzz_count", "width", "pause_every", "pause_us"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise BatchError(f"{where}: {name} must be an int, got {value!r}")
        if not self.base.start <= self.start <= self.end <= self.base.end:
            raise BatchError(f"{where}: the stretch is not within its base range {self.base.key()}")
        if self.width not in WIDTHS.get(self.base.space, ()):
            allowed = WIDTHS.get(self.base.space)
            raise BatchError(f"{where}: width {self.width} is not one of {self.base.space}'s {allowed}")
        if (self.end + 1 - self.start) % self.width or (self.base.space != SPACE_PIO and self.start % self.width):
            raise BatchError(f"{where}: the stretch is not made of whole aligned {self.width}-byte slots")
        if self.values not in value_modes():
            raise BatchError(f"{where}: value mode {self.values!r} is not one the op model offers {value_modes()}")
        if self.layout and self.layout not in LAYOUTS:
            raise BatchError(f"{where}: scratch layout {self.layout!r} is not one of {', '.join(LAYOUTS)}")
        if self.values not in (UNIFORM, self.base.values) and not (self.values == VALUES_DMA and self.layout):
            raise BatchError(
                f"{where}: value mode {self.values!r} was not planned for its range ({self.base.values})"
                + (" and the batch names no scratch layout of its own" if self.values == VALUES_DMA else "")
            )
        if not isinstance(self.fuzz_only, bool):
            raise BatchError(f"{where}: fuzz_only must be a bool, got {self.fuzz_only!r}")
        if self.fuzz_only and self.fuzz_count < 1:
            raise BatchError(f"{where}: a fuzz-only batch needs fuzz_count >= 1 (it has no other ops)")
        if self.fixed is not None:
            try:
                program.validate_fixed(where, self.fixed, self.width, self.fuzz_only, units="batches")
            except ValueError as err:
                raise BatchError(str(err)) from None
        every, us = self.pause_every, self.pause_us
        if every < 0 or not 0 <= us <= MAX_PAUSE_US or bool(every) != bool(us):
            raise BatchError(f"{where}: pacing {every}/{us} is not E >= 1 with 1..{MAX_PAUSE_US} us, nor 0/0")

    @property
    def slots(self) -> int:
        return (self.end - self.start + 1) // self.width

    @property
    def op_count(self) -> int:
        return (self.fuzz_count + (0 if self.fuzz_only else 2)) * self.slots

    @property
    def whole(self) -> bool:
        return (self.start, self.end) == (self.base.start, self.base.end)

    def plan(self, index: int) -> RangePlan:
        """The batch as the ``index``-th range of a round (with its own seed: the executor's ``@S``)."""
        extra: dict[str, Any] = {}
        if self.values != UNIFORM:
            extra["values"] = self.values  # a mode model/program.py offers, hence a RangePlan field
            extra["layout"] = self.layout or self.base.layout
        if self.pause_every:
            extra.update(pause_every=self.pause_every, pause_us=self.pause_us)
        if self.fuzz_only:
            extra["fuzz_only"] = True
        if self.fixed is not None:
            extra["fixed"] = self.fixed
        return RangePlan(
            index, self.start, self.end, self.base.name, self.seed, self.fuzz_count, self.width, self.base.space,
            **extra,
        )  # fmt: skip

    def describe(self) -> str:
        pace = f" pause {self.pause_us} us/{self.pause_every} ops" if self.pause_every else ""
        only = " fuzz-only" if self.fuzz_only else ""
        if self.fixed is not None:
            only += f" fixed {self.fixed:#x}"
        return (
            f"{self.base.name} {self.start:#x}-{self.end:#x} ({self.slots} x {self.width} bytes) seed {self.seed} "
            f"x{self.fuzz_count}{only} {self.values}{pace}"
        )

    # -- JSON ---------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        return {
            "base": {"space": self.base.space, "start": self.base.start, "end": self.base.end,
                     "width": self.base.width, "name": self.base.name, "values": self.base.values,
                     **({"layout": self.base.layout} if self.base.layout != LAYOUT_GENERIC else {})},
            "start": self.start,
            "end": self.end,
            "seed": self.seed,
            "fuzz_count": self.fuzz_count,
            "width": self.width,
            "values": self.values,
            **({"pause_every": self.pause_every, "pause_us": self.pause_us} if self.pause_every else {}),
            **({"fuzz_only": True} if self.fuzz_only else {}),
            **({"fixed": self.fixed} if self.fixed is not None else {}),
            **({"layout": self.layout} if self.layout else {}),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, record: Any) -> Batch:
        """A batch from :meth:`as_dict`'s output; :class:`BatchError` naming what is wrong."""
        if not isinstance(record, dict) or not isinstance(record.get("base"), dict):
            raise BatchError(f"a batch record must be an object with a 'base' object, got {record!r:.80}")
        base = record["base"]
        try:
            return cls(
                Base(
                    str(base["space"]), base["start"], base["end"], base["width"], str(base["name"]),
                    str(base.get("values", UNIFORM)), str(base.get("layout", LAYOUT_GENERIC)),
                ),
                record["start"], record["end"], record["seed"], record["fuzz_count"], record.get("width", 0),
                record.get("values", UNIFORM), record.get("pause_every", 0), record.get("pause_us", 0),
                record.get("fuzz_only", False), record.get("fixed"), str(record.get("layout", "")),
            )  # fmt: skip
        except KeyError as err:
            raise BatchError(f"a batch record lacks the field {err}") from None
        except TypeError as err:
            raise BatchError(f"a batch record has a field of the wrong type: {err}") from None
