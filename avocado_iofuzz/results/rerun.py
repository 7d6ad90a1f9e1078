"""The ``avocado run`` command that fuzzes one range of a run again, op for op.

A range's ops depend on the run seed, its bounds, its width and its own fuzz
count only (:mod:`avocado_iofuzz.model.program`). A rerun that plans that one range,
with those four, in a guest that lists it at the same place, performs the
same ops in the same order. So the command names:

* the avocado variant the run came from (its ``shortname``: the device row,
  machine and guest OS rows are what put the range where it was);
* ``fuzz_strategy=blind`` (a guided run's batch, like a blind range, is planned
  by these params alone; the device rows default to guided);
* ``fuzz_seed``; ``fuzz_kinds`` = the range's kind alone, unweighted, and
  ``fuzz_count`` = the range's own fuzz count (with one unweighted kind every
  slot gets exactly ``fuzz_count`` writes, whatever weights the run had);
* the range's width (``pio_widths`` / ``mmio_widths`` / ``pci_widths``);
* a selection that leaves exactly that range: its name (``only_devices``,
  ``only_iomem``; ``only_pci`` with the function's address) plus every other
  address of its space cut out (``skip_ports``, ``skip_mmio``, and
  ``skip_pci_config`` holes around it). The cut pins the bounds: of ranges
  sharing a name (a range split by a skipped port, the IDE controller's port
  ranges, all named after its address) only the one asked for is left;
* the ``--vt-extra-params`` of the run that may change the guest or the
  ranges (``extra_params``, ``machine_type``, ``only_pci``, ``mmio_max_size``
  ...): all of them but those that only change how a run is watched
  (:data:`NOT_CARRIED`), those of other kinds, and those the rerun sets. The
  resolver records them in the test params (:data:`CMDLINE_PARAM`).

A range the params cannot single out gets a note saying why instead of a
command that would fuzz something else; its trace replay
(``avocado iofuzz replay``) stays the exact reproducer. So does a guided
program's step (``fuzz_only``, and ``fixed``): no param makes a blind run
leave out the read and zero phases or write one value, so a rerun by params
would run other ops.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from avocado_iofuzz.model.dma import VALUES_UNIFORM
from avocado_iofuzz.model.kinds import width_suffix
from avocado_iofuzz.model.pci import split_config_address
from avocado_iofuzz.model.port_widths import DEFAULT_PIO_WIDTHS
from avocado_iofuzz.model.program import MMIO_MAX_ADDRESS, PIO_MAX_PORT, SPACE_MMIO, SPACE_PCI, SPACE_PIO, RangePlan
from avocado_iofuzz.model.ranges import name_matches
from avocado_iofuzz.model.shards import SHARD_PARAM, SHARDS_PARAM, parse_shard

# Set by the resolver: the job's --vt-extra-params, a JSON list of [key, value] in command-line order.
CMDLINE_PARAM = "iofuzz_cmdline_params"
DEFAULT_REFERENCE = "iofuzz"

# Params that never change which ops a range gets: how a run is watched, reported and triaged
# (iofuzz_accel too: KVM or TCG run the same ops; the summary records which one ran).
NOT_CARRIED = frozenset(
    {
        CMDLINE_PARAM,
        "report_every",
        "hang_timeout",
        "max_hangs",
        "hang_status",
        "login_timeout",
        "iofuzz_accel",
        "iofuzz_progress_interval",
        "iofuzz_plot",
        SHARDS_PARAM,
        "minimize",
        "minimize_hangs",
        "minimize_budget",
        "minimize_guest_budget",
        "iofuzz_replay",
    }
)
# Secrets stay out of summary.json, which is published (Jenkins archives it): a rerun on
# the same host finds them where the run did, in avocado.conf, or the user adds them.
SECRET_PARAMS = frozenset({"iofuzz_password", "password"})
# Params of one kind's ranges only: a rerun of another kind does without them.
KIND_PARAMS = {
    SPACE_PIO: frozenset({"skip_devices", "skip_ports", "extra_ioports", "only_devices", "pio_widths"}),
    SPACE_MMIO: frozenset({"skip_iomem", "extra_iomem", "only_iomem", "skip_mmio", "mmio_widths", "mmio_max_size"}),
    SPACE_PCI: frozenset({"skip_pci", "skip_pci_config", "pci_widths", "pci_config_size"}),
}
# How many of the ranges that share a range's name and addresses its rerun note names.
NAMED_RIVALS = 3
# What every rerun sets itself, whatever the run had.
_ALWAYS_SET = frozenset(
    {"fuzz_seed", "fuzz_count", "fuzz_kinds", "fuzz_strategy", "fuzz_values", SHARD_PARAM, "iofuzz_debug_hang_at"}
)


@dataclass(frozen=True)
class RerunContext:
    """What a rerun needs to know about its run beyond the plans."""

    reference: str = DEFAULT_REFERENCE  # the avocado variant (shortname) the run came from
    shard: str = "1/1"
    cmdline: tuple[tuple[str, str], ...] = ()  # the run's --vt-extra-params, in order
    pio_widths: tuple[int, ...] = DEFAULT_PIO_WIDTHS
    mmio_widths: tuple[int, ...] = (4,)
    pci_config_size: int = 0x100
    hang_at: tuple[int, int] | None = None  # iofuzz_debug_hang_at: (range index, op index)
    problem: str = ""  # why no rerun can be told at all


def cmdline_record(extra_params: Sequence[str]) -> str:
    """The resolver's record of ``--vt-extra-params`` items (``key=value``) for :data:`CMDLINE_PARAM`."""
    pairs = []
    for item in extra_params:
        key, _, value = str(item).partition("=")
        pairs.append([key.strip(), value])
    return json.dumps(pairs)


@dataclass(frozen=True)
class Rerun:
    """The command (``reference`` + ``params``, in order), or ``note`` saying why there is none."""

    reference: str
    params: tuple[tuple[str, str], ...] = ()
    note: str = ""

    @property
    def command(self) -> str | None:
        if self.note:
            return None
        items = " ".join(f"--vt-extra-params {shlex.quote(f'{key}={value}')}" for key, value in self.params)
        return f"avocado run {shlex.quote(self.reference)} {items}"

    def summary_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "rerun": self.command,
            "rerun_reference": self.reference,
            "rerun_params": dict(self.params),
        }
        if self.note:
            fields["rerun_note"] = self.note
        return fields


def _complement(start: int, end: int, limit: int) -> list[tuple[int, int]]:
    """The spans of ``0..limit`` outside ``[start, end]``."""
    spans = []
    if start > 0:
        spans.append((0, start - 1))
    if end < limit:
        spans.append((end + 1, limit))
    return spans


def _spans(spans: Sequence[tuple[int, int]]) -> str:
    return " ".join(f"{lo:#x}-{hi:#x}" for lo, hi in spans)


def _list_entry_problem(name: str) -> str:
    """Why ``name`` cannot be one entry of a comma-separated name list ("" when it can)."""
    if not name.strip():
        return "its name is empty"
    if "," in name:
        return f"its name {name!r} holds a comma, which separates names in the param"
    if name != name.strip():
        return f"its name {name!r} starts or ends with blanks, which the param strips"
    return ""


def _step_problem(plan: RangePlan) -> str:
    """Why the params cannot rerun a guided program's step ("" for a blind range, which they can)."""
    if not plan.fuzz_only:
        return ""
    where = f"range {plan.index} {plan.name!r} ({plan.start:#x}-{plan.end:#x})"
    if plan.fixed is not None:
        what = f"a fixed step of a guided program (each of its writes writes {plan.fixed:#x})"
        differs = "reads and zeroes every slot first and then writes seeded values"
    else:
        what = "a fuzz-only step of a guided program (its seeded writes alone)"
        differs = "reads and zeroes every slot before those writes"
    return f"{where} is {what}: no param expresses it, a rerun by params {differs}, which are other ops"


def base_name(plan: RangePlan, context: RerunContext) -> str:
    """The target's name: a run at several widths of a kind names each plan ``NAME (W-byte)`` (kinds.plan_kinds)."""
    widths = {SPACE_PIO: context.pio_widths, SPACE_MMIO: context.mmio_widths}.get(plan.space, ())
    suffix = width_suffix(plan.width)
    if len(widths) > 1 and plan.name.endswith(suffix):
        return plan.name[: -len(suffix)]
    return plan.name


def rerun_range(plan: RangePlan, context: RerunContext, plans: Sequence[RangePlan] = ()) -> Rerun:
    """The rerun of ``plan`` (one of the run's ``plans``, which the selection must not also match)."""
    if context.problem:
        return Rerun(context.reference, note=context.problem)
    step = _step_problem(plan)
    if step:
        return Rerun(context.reference, note=step)
    name = base_name(plan, context)
    selection: list[tuple[str, str]]
    if plan.space == SPACE_PIO:
        problem = _list_entry_problem(name)
        # only_devices is exact (no patterns): the name selects, the cut pins the bounds (a plan of PCI conf1's
        # CONFIG_ADDRESS spans 0xcf8-0xcfb, which port_widths fuzzes whole from 0xcf8 whatever else is cut)
        selection = [
            ("only_devices", name),
            ("pio_widths", str(plan.width)),
            ("skip_ports", _spans(_complement(plan.start, plan.end, PIO_MAX_PORT))),
        ]
        rivals = [p for p in plans if p.space == SPACE_PIO and p.width == plan.width and base_name(p, context) == name]
    elif plan.space == SPACE_MMIO:
        problem = _list_entry_problem(name)
        # only_iomem takes patterns: a name with '*' may match others, which the cut then drops unless they overlap
        selection = [
            ("only_iomem", name),
            ("mmio_widths", str(plan.width)),
            ("skip_mmio", _spans(_complement(plan.start, plan.end, MMIO_MAX_ADDRESS))),
        ]
        rivals = [
            p
            for p in plans
            if p.space == SPACE_MMIO and p.width == plan.width and name_matches(base_name(p, context), [name])
        ]
    elif plan.space == SPACE_PCI:
        problem = ""
        bus, device, function, first = split_config_address(plan.start)
        last = plan.end & 0xFFF
        address = f"0000:{bus:02x}:{device:02x}.{function:x}"  # the run fuzzes PCI domain 0 only
        selection = [("only_pci", address), ("pci_widths", str(plan.width))]
        holes = _complement(first, last, context.pci_config_size - 1)
        if holes:
            # the rest of the function's registers: the range may be one piece of a function split by holes
            selection.append(("skip_pci_config", " ".join(f"{address}@{lo:#x}-{hi:#x}" for lo, hi in holes)))
        rivals = [
            p for p in plans if p.space == SPACE_PCI and p.width == plan.width and p.start >> 12 == plan.start >> 12
        ]
    else:
        return Rerun(context.reference, note=f"no rerun for address space {plan.space!r}")
    if problem:
        return Rerun(context.reference, note=f"cannot be selected alone by params: {problem}")
    overlapping = [p for p in rivals if p.index != plan.index and p.start <= plan.end and plan.start <= p.end]
    if overlapping:
        # the first few: a guided run's batches overlap by the hundred, and every note listing all made
        # summary.json grow with the square of the batches (19 MB for one row's 1947)
        others = ", ".join(f"{p.index} {p.name} ({p.start:#x}-{p.end:#x})" for p in overlapping[:NAMED_RIVALS])
        if len(overlapping) > NAMED_RIVALS:
            others += f" and {len(overlapping) - NAMED_RIVALS} more"
        return Rerun(
            context.reference,
            note=f"cannot be selected alone by params: range(s) {others} share its name and addresses",
        )
    own = [
        ("fuzz_seed", str(plan.seed)),
        ("fuzz_count", str(plan.fuzz_count)),
        ("fuzz_kinds", plan.space),
        ("fuzz_strategy", "blind"),  # a range reruns as a blind range: guided (device rows) plans other batches
    ]
    if plan.values != VALUES_UNIFORM:  # as the range ran; a uniform one (the guest had no scratch) gets the default
        own.append(("fuzz_values", plan.values))
        own.append(("dma_layout", plan.layout))  # the layout it had, whatever auto would choose on the rerun
    if parse_shard(context.shard).count > 1:
        own.append((SHARD_PARAM, "1/1"))  # the whole campaign's ranges, of which the selection keeps one
    if context.hang_at and context.hang_at[0] == plan.index:
        own.append(("iofuzz_debug_hang_at", f"0:{context.hang_at[1]}"))  # the range is the rerun's only one
    own += selection
    set_here = _ALWAYS_SET | {key for key, _ in selection}
    other_kinds = set().union(*(keys for kind, keys in KIND_PARAMS.items() if kind != plan.space))
    carried: dict[str, str] = {}
    for key, value in context.cmdline:
        if key in NOT_CARRIED or key in SECRET_PARAMS or key in set_here or key in other_kinds:
            continue
        carried.pop(key, None)  # the last one given wins, as in the run
        carried[key] = value
    return Rerun(context.reference, (*carried.items(), *own))
