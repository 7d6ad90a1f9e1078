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
``generator_parts``. Fixed-value ranges (:data:`PART_FIXED`) came after the
running hash below was last extended: their part has a fingerprint, the
running hash does not cover it (it stays what the version before wrote, so
corpus files, checked against it, stay usable; a corpus records the part
fingerprints too, see :func:`unusable_parts`). Traces written before that key existed carry only the
one ``generator`` fingerprint, a running hash over the reference plans in
order (the pre-DMA and pre-layout versions, and each that added a layout,
wrote the hash of the plans they had). A table maps each such hash to the
parts it stood for and their fingerprints at the time; the parts this
package still makes the same way are readable. (The page-frame-number kind
of the DMA dictionary changed the ``dma`` part after them: their uniform
ranges stay readable, their DMA-aware ones are refused.)
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from avocado_iofuzz.model import dma
from avocado_iofuzz.model.dma_layouts import LAYOUT_GENERIC, LAYOUTS
from avocado_iofuzz.model.program import Op, RangePlan

PART_OPS = "ops"  # addresses, kinds, widths and uniform values: every range's ops
PART_DMA = "dma"  # DMA-aware write values and the generic scratch fill
PART_FUZZ_ONLY = "fuzz_only"  # ranges of seeded writes alone (a guided program's steps)
PART_FIXED = "fixed"  # fuzz-only ranges whose writes all write one value (exact steps)
_REFERENCE_SEED = 0x5EED5EED5EED5EED
# The device layouts the running hash covers: those it had when fixed values froze it. A layout added
# since (one only recipes name, such as ehci_msd) is a part of its own in PART_REFERENCE_PLANS, so
# adding it sets aside no corpus checked against the running hash.
RUNNING_HASH_LAYOUTS = ("uhci", "ehci", "e1000", "virtio", "nvme", "megasas", "ahci")
_LATER_LAYOUTS = tuple(name for name in LAYOUTS[1:] if name not in RUNNING_HASH_LAYOUTS)
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
        for n, layout in enumerate(RUNNING_HASH_LAYOUTS)
    ),
    RangePlan(6 + len(RUNNING_HASH_LAYOUTS), 0xC000, 0xC007, "fingerprint", _REFERENCE_SEED, 8, 4, fuzz_only=True),
)
# Reference plans of parts added after the running hash was frozen (fixed values): they have a part
# fingerprint of their own and stay out of ``generator``, which corpus files are checked against -- a new
# part must not set aside every corpus written before it (their batches make the same ops).
PART_REFERENCE_PLANS = (
    RangePlan(7 + len(RUNNING_HASH_LAYOUTS), 0xC000, 0xC007, "fingerprint", _REFERENCE_SEED, 8, 2, fuzz_only=True,
              fixed=0xA5C3),
    *(
        RangePlan(8 + len(RUNNING_HASH_LAYOUTS) + n, 0xC000, 0xC01F, "fingerprint", _REFERENCE_SEED, 8, 2,
                  values=dma.VALUES_DMA, layout=layout)
        for n, layout in enumerate(_LATER_LAYOUTS)
    ),
)


def layout_part(layout: str) -> str:
    return f"layout:{layout}"


def plan_parts(plan: RangePlan) -> tuple[str, ...]:
    """The parts of the generator that make ``plan``'s ops (and what it writes to the scratch memory)."""
    parts = [PART_OPS]
    if plan.values == dma.VALUES_DMA:
        parts.append(PART_DMA)
        if plan.layout != LAYOUT_GENERIC:
            parts.append(layout_part(plan.layout))
    if plan.fuzz_only:
        parts.append(PART_FUZZ_ONLY)
    if plan.fixed is not None:
        parts.append(PART_FIXED)
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
    """The header's ``generator``: the running hash over :data:`REFERENCE_PLANS` (not the later parts')."""
    return _running_hashes()[-1]


@functools.cache
def part_fingerprints() -> dict[str, str]:
    """The header's ``generator_parts``: one hash per part, each over the reference plans that are that part's."""
    digests: dict[str, Any] = {}
    for plan in (*REFERENCE_PLANS, *PART_REFERENCE_PLANS):
        part = plan_parts(plan)[-1]  # the plan's newest part: what it adds to the plans before it
        _feed(digests.setdefault(part, hashlib.sha256()), plan)
    return {part: digest.hexdigest()[:16] for part, digest in digests.items()}


# The part fingerprints of the generator before the page-frame-number dictionary kind and fuzz-only
# ranges (8e95d90): the DMA part and the layouts' (whose reference plans draw DMA values) changed then,
# the ops part did not.
_PARTS_8E95D90 = {
    PART_OPS: "447309041c86fc80",
    PART_DMA: "33953ebc5066e82b",
    "layout:uhci": "6c3347f772ac5f24",
    "layout:ehci": "9549e0ea1c1ce10c",
    "layout:e1000": "e7bcce13c650a59c",
    "layout:virtio": "7ec79658c7f82aed",
    "layout:nvme": "2e91c23fd6d61cc4",
    "layout:megasas": "477f3db9220e3cd4",
    "layout:ahci": "26a56237ad814025",
}
# the running hash after each layout's reference plan, in that order
_LAYOUT_RUNNING_HASHES = (
    "8ebe23bf8112f707", "09e472bc3c231835", "f1d8b54534e4b52f", "6ce65884f9f78938", "6e2be337687b5c7b",
    "4381f187351dfab1", "e5a9a8fcc90b9ccb",
)  # fmt: skip
# Headers without ``generator_parts`` carry one running hash: the parts each historic one stood for
# (the pre-DMA version, the pre-layout one, then one per layout added), with their fingerprints then.
_HISTORIC_RUNNING_HASHES: dict[str, tuple[str, ...]] = {
    "447309041c86fc80": (PART_OPS,),
    "bf619ad35beb1ffa": (PART_OPS, PART_DMA),
    **{
        fingerprint: (PART_OPS, PART_DMA, *(layout_part(name) for name in RUNNING_HASH_LAYOUTS[: n + 1]))
        for n, fingerprint in enumerate(_LAYOUT_RUNNING_HASHES)
    },
}


# The running hash before the virtio layout shaped its chains as requests (issue 13), and its parts'
# fingerprints then: corpus files of that version that recorded no parts stand for these. Their
# programs that need no virtio layout stay usable; the others are refused, naming layout:virtio.
_PARTS_BEFORE_VIRTIO_REQUESTS = {
    PART_OPS: "447309041c86fc80",
    PART_DMA: "cac8b9e1d386d010",
    PART_FUZZ_ONLY: "3339c85bd0558ee5",
    "layout:uhci": "d6553962e599f6dd",
    "layout:ehci": "759237c25c101ff4",
    "layout:e1000": "5a7772789297d2f5",
    "layout:virtio": "86125fb80868b53a",
    "layout:nvme": "d5d62300b7420b87",
    "layout:megasas": "79b62e4bdd3d4072",
    "layout:ahci": "94bc2a05ac0217cd",
}
_RUNNING_HASH_BEFORE_VIRTIO_REQUESTS = "4e4288ed64cd02c2"


def _historic_parts(fingerprint: str) -> dict[str, str]:
    """The part fingerprints a header's one ``generator`` hash stands for ({} for one this package never wrote)."""
    if fingerprint == _RUNNING_HASH_BEFORE_VIRTIO_REQUESTS:
        return dict(_PARTS_BEFORE_VIRTIO_REQUESTS)
    return {part: _PARTS_8E95D90[part] for part in _HISTORIC_RUNNING_HASHES.get(fingerprint, ())}


def unusable_parts(header: Mapping[str, Any], plans: Iterable[RangePlan]) -> list[str]:
    """The parts ``plans`` need that this package makes differently from the writer of ``header`` (sorted)."""
    unchanged = unchanged_parts(header)
    return sorted({part for plan in plans for part in plan_parts(plan)} - unchanged)


def running_hash_parts() -> frozenset[str]:
    """The parts whose reference plans the running hash (``generator``) covers."""
    return frozenset(part for plan in REFERENCE_PLANS for part in plan_parts(plan))


def writer_parts(header: Mapping[str, Any]) -> dict[str, str]:
    """The part fingerprints of the generator that wrote ``header`` (a trace's or a corpus file's).

    A header without ``generator_parts`` stands for the parts of its one
    running hash: a historic one's (:data:`_HISTORIC_RUNNING_HASHES`), or,
    if it is this package's own, every part that hash covers (a corpus file
    written before corpora recorded their parts).
    """
    recorded = header.get("generator_parts")
    if isinstance(recorded, Mapping):
        return {str(part): str(fingerprint) for part, fingerprint in recorded.items()}
    if header.get("generator") == generator_fingerprint():
        current = part_fingerprints()
        return {part: current[part] for part in running_hash_parts()}
    return _historic_parts(str(header.get("generator")))


def unchanged_parts(header: Mapping[str, Any]) -> frozenset[str]:
    """The parts of the generator this package makes as the writer of ``header`` did (see :func:`writer_parts`)."""
    current = part_fingerprints()
    return frozenset(part for part, fingerprint in writer_parts(header).items() if current.get(part) == fingerprint)


def describe_changed_parts(header: Mapping[str, Any], parts: Iterable[str]) -> str:
    """Each part of ``parts`` with the writer's fingerprint and this package's: why a reader refuses.

    The running hash (``generator``) is no help here: it covers only some
    parts and can be the same for both while one part differs.
    """
    writer, current = writer_parts(header), part_fingerprints()
    described = []
    for part in parts:
        if part in writer:
            theirs = f"the writer's {writer[part]}"
        elif isinstance(header.get("generator_parts"), Mapping):
            theirs = "the writer recorded none (the part is newer than it)"
        else:
            theirs = f"the writer's generator {header.get('generator')!r} stands for no such part"
        described.append(f"part {part}: {theirs}, this package's {current.get(part, 'none')}")
    return "; ".join(described)
