"""Which parts of the op generator a trace depends on, and whether this package makes them the same way.

A trace's ``G`` records name ops by their range record; they mean the same
ops only where the reader's generator makes them as the writer's did. Not
every trace uses every part of the generator: a uniform-values range needs
only the op stream (:data:`PART_OPS`), a DMA-aware range also the value
dictionary and the scratch memory's fill (:data:`PART_DMA`), and a range
with a device layout that layout's fill too (``layout:<name>``). A change to
one layout must not make every trace unreadable, only those whose ranges
use it.

Each part has a fingerprint of its own: the ops (and fills) the generator
makes for a fixed reference plan. Writers record them all in the header's
``generator_parts``. Traces written before that key existed carry only the
one ``generator`` fingerprint, a running hash over the reference plans in
order; the hash after the first *k* plans is the fingerprint a version with
only those plans wrote (the pre-DMA and pre-layout versions, and each that
added a layout). Such a fingerprint stands for the parts of those *k* plans,
provided this package's first *k* plans hash to it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from typing import Any

from avocado_iofuzz.model import dma
from avocado_iofuzz.model.dma_layouts import LAYOUT_GENERIC, LAYOUTS
from avocado_iofuzz.model.program import Op, RangePlan

PART_OPS = "ops"  # addresses, kinds, widths and uniform values: every range's ops
PART_DMA = "dma"  # DMA-aware write values and the generic scratch fill
_REFERENCE_SEED = 0x5EED5EED5EED5EED
# Reference plans, in the order the running hash has always taken them: every phase and width, then
# DMA-aware values, then one plan per device layout (a layout added later goes last).
REFERENCE_PLANS = (
    RangePlan(0, 0x0, 0x3F, "fingerprint", _REFERENCE_SEED, 8, 1),
    RangePlan(1, 0x100, 0x13F, "fingerprint", _REFERENCE_SEED, 8, 2),
    RangePlan(2, 0xFFC0, 0xFFFF, "fingerprint", _REFERENCE_SEED, 8, 4),
    RangePlan(3, 0xFEBF0000, 0xFEBF003F, "fingerprint", _REFERENCE_SEED, 8, 8, "mmio"),
    RangePlan(4, 0xFEBF0000, 0xFEBF003F, "fingerprint", _REFERENCE_SEED, 8, 4, "mmio", values=dma.VALUES_DMA),
    *(
        RangePlan(5 + n, 0xC000, 0xC01F, "fingerprint", _REFERENCE_SEED, 8, 2, values=dma.VALUES_DMA, layout=layout)
        for n, layout in enumerate(LAYOUTS[1:])
    ),
)
# The oldest running hash that stands for whole parts: the one after the MMIO plan (the pre-DMA
# version's). Earlier hashes (port ranges only) name no part whole and are not accepted.
_FIRST_WHOLE_PREFIX = 4


def layout_part(layout: str) -> str:
    return f"layout:{layout}"


def plan_parts(plan: RangePlan) -> tuple[str, ...]:
    """The parts of the generator that make ``plan``'s ops (and what it writes to the scratch memory)."""
    parts = [PART_OPS]
    if plan.values == dma.VALUES_DMA:
        parts.append(PART_DMA)
        if plan.layout != LAYOUT_GENERIC:
            parts.append(layout_part(plan.layout))
    return tuple(parts)


def format_op(op: Op) -> str:
    """An op as a trace lists it (``r<port hex>`` / ``w<port hex> <value hex>``), with its newline."""
    return f"r{op.port:x}\n" if op.kind == "r" else f"w{op.port:x} {op.value:x}\n"


def _feed(digest: Any, plan: RangePlan) -> None:
    digest.update("".join(format_op(op) for op in plan.ops()).encode())
    if plan.values == dma.VALUES_DMA:
        digest.update(f"{dma.SCRATCH_BASE:x} {dma.SCRATCH_EPOCH_OPS:x}".encode())
        if plan.layout != LAYOUT_GENERIC:
            digest.update(plan.layout.encode())
        digest.update(dma.scratch_fill(plan.range_seed, 0, plan.layout))


def _running_hashes() -> list[str]:
    """The running hash after each reference plan (16 hex digits): entry k covers plans 0..k."""
    digest = hashlib.sha256()
    hashes = []
    for plan in REFERENCE_PLANS:
        _feed(digest, plan)
        hashes.append(digest.hexdigest()[:16])
    return hashes


@functools.cache
def generator_fingerprint() -> str:
    """The header's ``generator``: the running hash over every reference plan."""
    return _running_hashes()[-1]


@functools.cache
def part_fingerprints() -> dict[str, str]:
    """The header's ``generator_parts``: one hash per part, each over the reference plans that are that part's."""
    digests: dict[str, Any] = {}
    for plan in REFERENCE_PLANS:
        part = plan_parts(plan)[-1]  # the plan's newest part: what it adds to the plans before it
        _feed(digests.setdefault(part, hashlib.sha256()), plan)
    return {part: digest.hexdigest()[:16] for part, digest in digests.items()}


@functools.cache
def _parts_of_running_hashes() -> dict[str, frozenset[str]]:
    """Running hash after plan k -> the parts the plans up to k make (from the MMIO plan on)."""
    covered: dict[str, frozenset[str]] = {}
    parts: set[str] = set()
    for k, fingerprint in enumerate(_running_hashes()):
        parts.update(plan_parts(REFERENCE_PLANS[k]))
        if k + 1 >= _FIRST_WHOLE_PREFIX:
            covered[fingerprint] = frozenset(parts)
    return covered


def unchanged_parts(header: Mapping[str, Any]) -> frozenset[str]:
    """The parts of the generator this package makes as the trace's writer did, from the trace's header."""
    recorded = header.get("generator_parts")
    if isinstance(recorded, Mapping):
        current = part_fingerprints()
        return frozenset(part for part, fingerprint in recorded.items() if current.get(part) == fingerprint)
    return _parts_of_running_hashes().get(str(header.get("generator")), frozenset())
