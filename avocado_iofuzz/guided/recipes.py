"""Device bring-up recipes: the exact register sequences a device family needs before its DMA engine runs.

Coverage feedback cannot find these sequences by itself: a virtio queue
select, an NVMe admin queue address or an AHCI command list base fire no trace
event, so no step of them earns a feature before the last one does (issue 13,
"Why the ratio does not move"). Fuzzers that go deep carry such knowledge by
hand (syzkaller's syscall descriptions, QEMU generic-fuzz's per-device
configs); here it is ``recipes.toml``, package data, one entry per bring-up.

A recipe applies to a PCI function of its family (:func:`function_family`)
and, if it names IDs, only to those devices. :func:`applicable` turns it into
:class:`RecipeWrite` s on the run's ranges (guided :class:`Base` s): the BAR
offset becomes the address the guest's firmware assigned, ``scratch``
expressions become :data:`~avocado_iofuzz.model.dma.SCRATCH_BASE` arithmetic.
A step on a range the run does not fuzz drops the recipe, with a debug line
saying why. A pointer step on a range the run planned ``uniform`` (the default
``fuzz_values``) fills the scratch memory all the same: its element carries
``dma`` values and the recipe family's layout itself (:attr:`Batch.layout`),
the recipe's other steps and the rest of the run stay uniform. Whether the
guest has scratch memory at all is the caller's question
(:func:`~avocado_iofuzz.campaign.guest_access.scratch_reserved`): without it,
no recipe runs (:func:`recipes_for_run`).
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

from avocado_iofuzz.guided.batch import UNIFORM, WIDTHS, Base, Batch
from avocado_iofuzz.guided.program import Program, fixed_step
from avocado_iofuzz.model.dma import SCRATCH_BASE, SCRATCH_SIZE, VALUES_DMA
from avocado_iofuzz.model.dma_layouts import LAYOUT_GENERIC, LAYOUTS
from avocado_iofuzz.model.layout_choice import family_layout
from avocado_iofuzz.model.pci import IORESOURCE_IO, IORESOURCE_MEM, ROM_RESOURCE, PciFunction, config_address
from avocado_iofuzz.model.program import SPACE_MMIO, SPACE_PCI, SPACE_PIO

LOG = logging.getLogger("avocado.iofuzz.guided")

CONFIG = "config"
ORIGIN_PREFIX = "recipe:"
STEP_WIDTHS = (1, 2, 4)  # what every space takes (mmio also 8, config space not: recipes keep to these)
CONFIG_SIZE = 0x100  # the type-1 config cycle's reach (the pci kind's)
BARS = range(ROM_RESOURCE)
PAGE_SHIFT = 12
# A driver waits for the device between the steps of a bring-up; the executor does not, unless told:
# a pause before each recipe step lets QEMU run what the last one started (a command's completion in a
# bottom half, nvme's queue timer) before the next step, which may reset the device under it. 500 us:
# a few main-loop turns under TCG, 25 ms for a 50-step program. Mutations may still unpace a step.
STEP_PAUSE_US = 500
_EXPRESSION = re.compile(r"^\s*(scratch|scratch_pfn)\s*(?:\+\s*(0x[0-9a-fA-F]+|[0-9]+)\s*)?$")
_IDS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{4}$")
_RECIPE_KEYS = {"name", "family", "ids", "bar", "steps", "layout"}
_STEP_KEYS = {"at", "width", "value", "bar"}


class RecipeError(ValueError):
    """The recipe table is not usable; the message names the recipe and the step."""


@dataclass(frozen=True)
class Step:
    bar: int | str  # a BAR index or CONFIG
    offset: int
    width: int
    value: int | str  # a number or a scratch expression (:func:`resolve_value`)


@dataclass(frozen=True)
class Recipe:
    name: str
    family: str  # a scratch layout name (the function's, :func:`function_family`)
    ids: tuple[str, ...]  # vendor:device, lower case; empty: every device of the family
    steps: tuple[Step, ...]
    # the scratch layout its pointer steps fill, whatever the range was planned with; "": the range's
    # (dma) or the family's (uniform). A layout only recipes name reaches what blind's fills do not.
    layout: str = ""

    def matches(self, function: PciFunction) -> bool:
        return function_family(function) == self.family and (not self.ids or function.ids in self.ids)


@dataclass(frozen=True, order=True)
class RecipeWrite:
    """One exact write of an applied recipe: on the run's range ``base``.

    ``points``: the value is a scratch address (or page frame): its element
    fills the scratch memory right before the write, with the base's layout
    on a ``dma`` range, with ``family``'s (the recipe's) on a uniform one.
    """

    base: Base
    address: int
    width: int
    value: int
    points: bool = False
    family: str = LAYOUT_GENERIC
    layout: str = ""  # the recipe's own scratch layout (Recipe.layout); "": as ``family`` says

    def element(self, seed: int) -> Batch:
        """The write as a fixed-value step, paced (:data:`STEP_PAUSE_US`); a pointer's step fills the scratch
        memory (``dma`` values)."""
        if not self.points:
            step = fixed_step(self.base, self.address, self.width, self.value, seed=seed)
        else:
            own = "" if self.base.values == VALUES_DMA else self.family  # a uniform range's fill names its layout
            if self.layout:
                own = self.layout  # the recipe's own layout, on dma and uniform ranges alike
            step = fixed_step(self.base, self.address, self.width, self.value, values=VALUES_DMA, seed=seed,
                              layout=own)  # fmt: skip
        return replace(step, pause_every=1, pause_us=STEP_PAUSE_US)

    def as_dict(self) -> dict[str, Any]:
        base = self.element(0).as_dict()["base"]
        return {"base": base, "address": self.address, "width": self.width, "value": self.value, "points": self.points,
                **({"family": self.family} if self.family != LAYOUT_GENERIC else {}),
                **({"layout": self.layout} if self.layout else {})}  # fmt: skip


@dataclass(frozen=True)
class AppliedRecipe:
    name: str
    function: str  # the PCI address it was applied to
    writes: tuple[RecipeWrite, ...]

    @property
    def origin(self) -> str:
        """The origin its program has in a round's record and in the corpus."""
        return f"{ORIGIN_PREFIX}{self.name}"

    def program(self, seed: int) -> Program:
        """The recipe as a program of fixed-value steps; ``seed`` draws the scratch fills of its pointer steps."""
        return tuple(write.element(seed) for write in self.writes)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "function": self.function, "writes": [w.as_dict() for w in self.writes]}

    @classmethod
    def from_dict(cls, record: Any) -> AppliedRecipe:
        """An applied recipe from :meth:`as_dict` (summary.json's ``guided.recipes``); :class:`RecipeError` else."""
        try:
            writes = []
            for write in record["writes"]:
                b = write["base"]
                base = Base(str(b["space"]), int(b["start"]), int(b["end"]), int(b["width"]), str(b["name"]),
                            str(b.get("values", UNIFORM)), str(b.get("layout", LAYOUT_GENERIC)))  # fmt: skip
                writes.append(RecipeWrite(base, int(write["address"]), int(write["width"]), int(write["value"]),
                                          bool(write.get("points", False)),
                                          str(write.get("family", LAYOUT_GENERIC)),
                                          str(write.get("layout", ""))))  # fmt: skip
            return cls(str(record["name"]), str(record["function"]), tuple(writes))
        except (KeyError, TypeError, ValueError) as err:
            raise RecipeError(f"an applied recipe record is not usable: {err!r:.200}") from None


def function_family(function: PciFunction) -> str:
    return family_layout(function)


def resolve_value(value: int | str, scratch: int = SCRATCH_BASE) -> int:
    """A step's value on the host: a number as it is, ``scratch[_pfn] [+ N]`` from the scratch address."""
    if isinstance(value, int):
        return value
    match = _EXPRESSION.match(value)
    if match is None:
        raise RecipeError(f"value {value!r}: expected a number or 'scratch' / 'scratch_pfn' [+ N]")
    start = scratch >> PAGE_SHIFT if match.group(1) == "scratch_pfn" else scratch
    return start + (int(match.group(2), 0) if match.group(2) else 0)


def load(text: str | None = None, source: str = "recipes.toml") -> tuple[Recipe, ...]:
    """The recipe table (the package's, or ``text``), validated: :class:`RecipeError` naming what is wrong."""
    if text is None:
        text = resources.files("avocado_iofuzz.guided").joinpath("recipes.toml").read_text(encoding="utf-8")
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise RecipeError(f"{source}: not TOML: {err}") from None
    unknown = set(table) - {"recipe"}
    if unknown:
        raise RecipeError(f"{source}: unknown top-level keys {sorted(unknown)} (only [[recipe]] tables)")
    records = table.get("recipe", [])
    if not isinstance(records, list) or not records:
        raise RecipeError(f"{source}: no [[recipe]] tables")
    recipes = [_recipe(record, f"{source} recipe #{number}") for number, record in enumerate(records, 1)]
    names = [recipe.name for recipe in recipes]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise RecipeError(f"{source}: recipe names used twice: {', '.join(twice)}")
    return tuple(recipes)


def _recipe(record: Any, where: str) -> Recipe:
    if not isinstance(record, dict):
        raise RecipeError(f"{where}: must be a table")
    name = record.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise RecipeError(f"{where}: 'name' must be lower-case letters, digits and dashes, got {name!r}")
    where = f"recipe {name!r}"
    unknown = set(record) - _RECIPE_KEYS
    if unknown:
        raise RecipeError(f"{where}: unknown keys {sorted(unknown)} (expected {sorted(_RECIPE_KEYS)})")
    family = record.get("family")
    if family not in LAYOUTS:
        raise RecipeError(f"{where}: family {family!r} is not a scratch layout ({', '.join(LAYOUTS)})")
    ids = record.get("ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, str) and _IDS.match(i) for i in ids):
        raise RecipeError(f"{where}: 'ids' must be a list of 'vvvv:dddd' (lower-case hex), got {ids!r}")
    if family == LAYOUT_GENERIC and not ids:
        raise RecipeError(f"{where}: a recipe of the generic family must name its devices' ids")
    steps = record.get("steps")
    if not isinstance(steps, list) or not steps:
        raise RecipeError(f"{where}: 'steps' must be a non-empty list")
    layout = record.get("layout", "")
    if layout != "" and (layout not in LAYOUTS or layout == LAYOUT_GENERIC):
        device_layouts = ", ".join(name for name in LAYOUTS if name != LAYOUT_GENERIC)
        raise RecipeError(f"{where}: layout {layout!r} is not a device scratch layout ({device_layouts})")
    bar = record.get("bar")
    steps_read = tuple(_step(s, bar, f"{where} step {n}") for n, s in enumerate(steps, 1))
    return Recipe(name, family, tuple(ids), steps_read, layout)


def _step(record: Any, recipe_bar: Any, where: str) -> Step:
    if not isinstance(record, dict):
        raise RecipeError(f"{where}: must be an inline table {{ at = ..., width = ..., value = ... }}")
    unknown = set(record) - _STEP_KEYS
    if unknown:
        raise RecipeError(f"{where}: unknown keys {sorted(unknown)} (expected {sorted(_STEP_KEYS)})")
    bar = record.get("bar", recipe_bar)
    if bar != CONFIG and (not isinstance(bar, int) or isinstance(bar, bool) or bar not in BARS):
        raise RecipeError(f"{where}: bar must be 0-{BARS[-1]} or {CONFIG!r} (on the step or its recipe), got {bar!r}")
    offset, width, value = record.get("at"), record.get("width"), record.get("value")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise RecipeError(f"{where}: 'at' must be a register offset >= 0, got {offset!r}")
    if width not in STEP_WIDTHS:
        raise RecipeError(f"{where}: width must be one of {STEP_WIDTHS}, got {width!r}")
    if offset % width:
        raise RecipeError(f"{where}: offset {offset:#x} is not aligned to its width {width}")
    if bar == CONFIG and offset + width > CONFIG_SIZE:
        raise RecipeError(f"{where}: config offset {offset:#x} is beyond the {CONFIG_SIZE:#x} bytes a recipe reaches")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RecipeError(f"{where}: value must be a number or a scratch expression, got {value!r}")
    try:
        resolved = resolve_value(value)
    except RecipeError as err:
        raise RecipeError(f"{where}: {err}") from None
    if isinstance(value, str) and not SCRATCH_BASE <= _address_of(value) < SCRATCH_BASE + SCRATCH_SIZE:
        raise RecipeError(f"{where}: {value!r} points outside the {SCRATCH_SIZE:#x}-byte scratch memory")
    if not 0 <= resolved < 1 << (8 * width):
        raise RecipeError(f"{where}: value {value!r} ({resolved:#x}) does not fit {width} byte(s)")
    return Step(bar, offset, width, value)


def _address_of(expression: str) -> int:
    """The guest-physical address a scratch expression names (a page frame number: its page's)."""
    match = _EXPRESSION.match(expression)
    assert match is not None
    extra = int(match.group(2), 0) if match.group(2) else 0
    if match.group(1) == "scratch_pfn":
        return SCRATCH_BASE + (extra << PAGE_SHIFT)
    return SCRATCH_BASE + extra


def applicable(
    recipes: Iterable[Recipe], functions: Sequence[PciFunction], bases: Sequence[Base]
) -> list[AppliedRecipe]:
    """The recipes that apply to the run: every matching function's, with every step on a range it fuzzes.

    In recipe table order, then function order: a pure function of its inputs.
    """
    applied = []
    for recipe in recipes:
        for function in functions:
            if not recipe.matches(function):
                continue
            writes, why = _writes(recipe, function, bases)
            if writes is None:
                LOG.debug("recipe %s does not apply to %s: %s", recipe.name, function.address, why)
                continue
            applied.append(AppliedRecipe(recipe.name, function.address, writes))
    return applied


def _writes(
    recipe: Recipe, function: PciFunction, bases: Sequence[Base]
) -> tuple[tuple[RecipeWrite, ...] | None, str]:
    writes = []
    for number, step in enumerate(recipe.steps, 1):
        located = _address(function, step)
        if located is None:
            return None, f"step {number}: the function has no assigned BAR{step.bar}"
        space, address = located
        base = _base_for(bases, space, address, step.width)
        if base is None:
            return None, f"step {number}: no {space} range of the run holds {address:#x} ({step.width} bytes)"
        points = isinstance(step.value, str)
        writes.append(RecipeWrite(base, address, step.width, resolve_value(step.value), points, recipe.family,
                                  recipe.layout if points else ""))  # fmt: skip
    return tuple(writes), ""


def _address(function: PciFunction, step: Step) -> tuple[str, int] | None:
    if step.bar == CONFIG:
        return SPACE_PCI, config_address(function.bus, function.device, function.function, step.offset)
    for bar in function.resources:
        if bar.index == step.bar and bar.assigned and step.offset + step.width <= bar.end - bar.start + 1:
            if bar.flags & IORESOURCE_IO:
                return SPACE_PIO, bar.start + step.offset
            if bar.flags & IORESOURCE_MEM:
                return SPACE_MMIO, bar.start + step.offset
    return None


def _base_for(bases: Sequence[Base], space: str, address: int, width: int) -> Base | None:
    if width not in WIDTHS.get(space, ()) or (space != SPACE_PIO and address % width):
        return None
    for base in sorted(bases):
        if base.space == space and base.start <= address and address + width - 1 <= base.end:
            return base
    return None


def recipes_for_run(
    enabled: bool, functions: Sequence[PciFunction], bases: Sequence[Base], scratch: bool, skip: Sequence[str] = ()
) -> list[AppliedRecipe]:
    """The recipes a guided run seeds its corpus with (``guided_recipes``), each reason for none logged once.

    ``scratch``: the guest has the scratch memory reserved (the recipes point
    devices at it); whatever the ranges' ``fuzz_values``. ``skip``: recipe
    names left out (``guided_recipes_skip``, checked against the table).
    """
    if not enabled:
        LOG.info("guided: bring-up recipes off (guided_recipes = no)")
        return []
    if not scratch:
        LOG.info("guided: no bring-up recipes: they point devices at the scratch memory, and this guest has none")
        return []
    recipes = load()
    if skip:
        LOG.info("guided: bring-up recipes left out (guided_recipes_skip): %s", ", ".join(skip))
        recipes = tuple(recipe for recipe in recipes if recipe.name not in skip)
    applied = applicable(recipes, functions, bases)
    names = ", ".join(f"{r.name} on {r.function}" for r in applied) or "none applies to this run's ranges"
    LOG.info("guided: bring-up recipes: %s", names)
    return applied
