"""From the guest's ``/proc/iomem`` and PCI BARs to the MMIO ranges to fuzz.

Pure functions, no I/O, like :mod:`avocado_iofuzz.ranges` (whose tree parser
reads ``/proc/iomem`` too: same format, 64-bit addresses).

Where the ranges come from:
  * PCI memory BARs, from sysfs (:mod:`avocado_iofuzz.pci`): named
    ``0000:00:02.0 8086:100e BAR0``. ``/proc/iomem`` lists them too, but only
    by address and without their BAR number, and the executor maps a BAR
    through its ``resource<N>`` file;
  * the other leaves of ``/proc/iomem`` (HPET, platform devices), minus
    :data:`DEFAULT_SKIP_IOMEM` -- RAM, firmware, the interrupt controllers,
    bus windows;
  * ``extra_iomem``: ``START-END:NAME`` ranges the kernel does not list.
Then ``only_iomem`` keeps the named ones, ``skip_mmio`` cuts address spans
out, and ranges longer than ``mmio_max_size`` are cut to their first bytes
(registers sit at the start of a BAR; what follows a large BAR's first 16
KiB is mostly memory, such as a display adapter's VRAM).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from avocado_iofuzz.pci import PciFunction
from avocado_iofuzz.program import MMIO_MAX_ADDRESS, SPACE_MMIO
from avocado_iofuzz.ranges import (
    PortRange,
    RangeError,
    cut_spans,
    name_matches,
    parse_name_list,
    parse_named_spans,
    parse_resource_tree,
    parse_spans,
)
from avocado_iofuzz.target import Target

# the register files of QEMU's devices fit (virtio, NVMe, xHCI, HDA BARs are 16 KiB;
# e1000's rings and controls sit below 0x4000), and one 16 KiB BAR is already
# 4096 four-byte slots: a run's budget grows with its slots
DEFAULT_MAX_SIZE = 0x4000

# Why each /proc/iomem name is skipped by default (`*` matches anything); the
# docs list the same table. A skipped range takes its nested ranges with it.
DEFAULT_SKIP_IOMEM: dict[str, str] = {
    "System RAM": "the guest's RAM: its kernel, its page tables and the executor live there",
    "RAM buffer": "slack the kernel keeps after RAM",
    "Reserved": "memory the firmware keeps (e820): BIOS data, the flash below 4 GiB, ICH9's RCBA",
    "ACPI *": "ACPI tables and NVS: firmware memory, no device behind it",
    "Persistent Memory*": "NVDIMM: memory, not registers",
    "Soft Reserved": "memory set aside by the firmware",
    "System ROM": "the BIOS image",
    "Video ROM": "the VGA BIOS",
    "Adapter ROM": "option ROMs",
    "Local APIC": "the only vCPU's interrupt controller: one write stops its timer or masks interrupts "
    "and the guest hangs at once (the kernel refuses /dev/mem for it anyway)",
    "IOAPIC *": "routes every device interrupt to the vCPU, the console's included",
    "PCI MMCONFIG *": "PCI config space (ECAM): fuzzed as kind pci, where the registers that cut "
    "config access are left out",
    "PCI Bus *": "bus windows: addresses no device decodes (the BARs inside come from sysfs); also "
    "the legacy VGA window 0xa0000-0xbffff, where a VGA text console lives",
}



def parse_iomem(text: str, source: str = "/proc/iomem") -> list[PortRange]:
    """``/proc/iomem`` as a forest of ranges; RangeError names the first bad line."""
    return parse_resource_tree(text, source, MMIO_MAX_ADDRESS, "address")


def parse_address_spans(text: str, what: str) -> list[tuple[int, int]]:
    """Physical address spans: ``0xfed00000 0xfebc0000-0xfebc0fff``."""
    return parse_spans(text, what, MMIO_MAX_ADDRESS, "an address or ADDRESS-ADDRESS", "")


def parse_extra_iomem(text: str) -> list[Target]:
    """``extra_iomem``: ``START-END:NAME`` items separated by spaces."""
    return [
        Target(SPACE_MMIO, start, end, name)
        for start, end, name in parse_named_spans(
            text, "extra_iomem", "0xfed1c000-0xfed1ffff:rcrb", parse_address_spans
        )
    ]


def iomem_leaves(forest: Iterable[PortRange], skip: Sequence[str]) -> list[Target]:
    """The innermost ranges not under a skipped name, each named after its outermost same-span ancestor.

    ``HPET 0`` holds one child with its exact span (``PNP0103:00``, the
    firmware's name for it): the leaf reads ``HPET 0``.
    """
    found: list[Target] = []

    def walk(node: PortRange, name: str) -> None:
        if name_matches(node.name, skip):
            return
        if not node.children:
            found.append(Target(SPACE_MMIO, node.start, node.end, name, (node.name,) if name != node.name else ()))
            return
        for child in node.children:
            same_span = (child.start, child.end) == (node.start, node.end)
            walk(child, name if same_span else child.name)

    for root in forest:
        walk(root, root.name)
    return found


def bar_targets(functions: Sequence[PciFunction]) -> list[Target]:
    """Every assigned memory BAR (ROM and bridge windows left out)."""
    return [
        Target(SPACE_MMIO, bar.start, bar.end, f"{function.name} BAR{bar.index}", function.identifiers[1:])
        for function in functions
        for bar in function.memory_bars()
    ]


def mmio_targets(
    iomem_text: str,
    functions: Sequence[PciFunction],
    skip_iomem: str = ", ".join(DEFAULT_SKIP_IOMEM),
    extra_iomem: str = "",
    only_iomem: str = "",
    skip_mmio: str = "",
    max_size: int = DEFAULT_MAX_SIZE,
) -> list[Target]:
    """The whole pipeline from the guest's listings and the params to the ordered MMIO ranges."""
    if max_size < 8:
        raise RangeError(f"mmio_max_size: {max_size} is below 8 bytes (one 8-byte access)")
    skip = parse_name_list(skip_iomem)
    bars = [t for t in bar_targets(functions) if not t.matches(skip)]
    # a leaf inside a BAR is that BAR as /proc/iomem names it (the "PCI Bus" skip was lifted)
    others = [
        t
        for t in iomem_leaves(parse_iomem(iomem_text), skip)
        if not any(b.start <= t.start and t.end <= b.end for b in bars)
    ]
    targets = bars + others + [t for t in parse_extra_iomem(extra_iomem) if not t.matches(skip)]
    wanted = parse_name_list(only_iomem)
    if wanted:
        missing = [p for p in wanted if not any(t.matches([p]) for t in targets)]
        if missing:
            known = ", ".join(t.name for t in targets) or "none"
            raise RangeError(f"only_iomem: no MMIO range matches {missing} (ranges: {known})")
        targets = [t for t in targets if t.matches(wanted)]
    # the cap keeps a range's first bytes (before any skip_mmio hole is cut out of them)
    targets = [Target(t.space, t.start, min(t.end, t.start + max_size - 1), t.name, t.aliases) for t in targets]
    targets = cut_targets(targets, parse_address_spans(skip_mmio, "skip_mmio"))
    return sorted(targets, key=lambda t: (t.start, t.end, t.name))


def cut_targets(targets: Iterable[Target], spans: Sequence[tuple[int, int]]) -> list[Target]:
    """Remove address spans from targets, splitting a target around each hole."""
    return [
        Target(t.space, start, end, t.name, t.aliases)
        for t in targets
        for start, end in cut_spans(t.start, t.end, spans)
    ]
