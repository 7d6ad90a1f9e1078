"""Which scratch layout a ``dma`` range gets: the one of its PCI function's device family, or generic.

``dma_layout = auto`` (the default) looks up the PCI function a range belongs
to -- the I/O or memory BAR that holds a port or MMIO range, the function whose
config space a pci range is -- and lays the scratch memory out like that
family's DMA structures (:mod:`avocado_iofuzz.model.dma_layouts`); a range of
no known family (the legacy ports, a device without a layout) gets ``generic``.
A layout name instead of ``auto`` gives every ``dma`` range that layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from avocado_iofuzz.model.dma import VALUES_DMA
from avocado_iofuzz.model.dma_layouts import (
    LAYOUT_AHCI,
    LAYOUT_E1000,
    LAYOUT_EHCI,
    LAYOUT_GENERIC,
    LAYOUT_MEGASAS,
    LAYOUT_NVME,
    LAYOUT_UHCI,
    LAYOUT_VIRTIO,
    LAYOUTS,
)
from avocado_iofuzz.model.layouts.lsi_scripts import LAYOUT_LSI_SCRIPTS
from avocado_iofuzz.model.pci import IORESOURCE_IO, IORESOURCE_MEM, ROM_RESOURCE, PciFunction, parse_pci_listing
from avocado_iofuzz.model.program import SPACE_PCI, SPACE_PIO, RangePlan

LAYOUT_AUTO = "auto"
# What the dma_layout param accepts; the first is the default.
LAYOUT_CHOICES = (LAYOUT_AUTO, *LAYOUTS)

_INTEL = 0x8086
_VIRTIO = 0x1AF4  # every virtio PCI device, legacy or modern
# PCI class codes (class, subclass, programming interface) of the USB host controllers.
_CLASS_UHCI = 0x0C0300
_CLASS_EHCI = 0x0C0320
_CLASS_ETHERNET = 0x0200  # class and subclass, any interface
_CLASS_NVME = 0x010802
_CLASS_AHCI = 0x010601  # SATA, AHCI 1.0 interface
_LSI = 0x1000
_LSI53C895A = 0x0012
_MEGARAID = (0x0060, 0x0079)  # megasas (SAS 1078), megasas-gen2 (SAS 2108: QEMU 7.2 gives it 1000:0079)

def family_layout(function: PciFunction) -> str:
    """The layout of a function's device family: USB, NVMe and AHCI controllers by class, Intel's NICs (e1000,
    e1000e, igb) and virtio by vendor, the MegaRAID SAS controllers by ID."""
    if function.class_code == _CLASS_UHCI:
        return LAYOUT_UHCI
    if function.class_code == _CLASS_EHCI:
        return LAYOUT_EHCI
    if function.class_code == _CLASS_NVME:
        return LAYOUT_NVME
    if function.class_code == _CLASS_AHCI:
        return LAYOUT_AHCI
    if function.vendor == _INTEL and function.class_code >> 8 == _CLASS_ETHERNET:
        return LAYOUT_E1000
    if function.vendor == _VIRTIO:
        return LAYOUT_VIRTIO
    if function.vendor == _LSI and function.product in _MEGARAID:
        return LAYOUT_MEGASAS
    return LAYOUT_GENERIC

def owner(plan: RangePlan, functions: Sequence[PciFunction]) -> PciFunction | None:
    """The PCI function whose BAR holds the range (pio, mmio) or whose config space it is (pci)."""
    for function in functions:
        if plan.space == SPACE_PCI:
            base = function.bus << 20 | function.device << 15 | function.function << 12
            if function.domain == 0 and plan.start >> 12 == base >> 12:
                return function
            continue
        kind = IORESOURCE_IO if plan.space == SPACE_PIO else IORESOURCE_MEM
        for bar in function.resources:
            if bar.index < ROM_RESOURCE and bar.flags & kind and bar.assigned and bar.start <= plan.start <= bar.end:
                return function
    return None

def pci_functions(pci_listing: str) -> list[PciFunction]:
    """The functions of the guest's PCI listing (empty when the run's kinds did not read one: all generic)."""
    return parse_pci_listing(pci_listing) if pci_listing else []


def choose_layouts(plans: Sequence[RangePlan], functions: Sequence[PciFunction], choice: str) -> list[RangePlan]:
    """``plans`` with the layout ``choice`` gives each ``dma`` range (the others keep generic)."""
    if choice not in LAYOUT_CHOICES:
        raise ValueError(f"dma_layout {choice!r}: expected one of {', '.join(LAYOUT_CHOICES)}")
    chosen = []
    for plan in plans:
        if plan.values != VALUES_DMA:
            chosen.append(plan)
            continue
        if choice == LAYOUT_AUTO:
            function = owner(plan, functions)
            layout = family_layout(function) if function is not None else LAYOUT_GENERIC
        else:
            layout = choice
        chosen.append(replace(plan, layout=layout))
    return chosen


# Guided's own layout for a function whose family layout is generic, by (vendor, product). The LSI53C895A
# runs SCRIPTS from wherever DSP points: guided's sweeps and mutations write scratch addresses into DSP, and
# random words there decode as memory moves of up to 16 MB, a hundred of them per SCRIPTS timer callback --
# seconds to minutes in which QEMU's main loop answers nothing (the lsi stall, docs/results/performance.rst).
# The lsi_scripts programs move at most 16 KiB each and end. Blind never takes this table: its fills stay.
GUIDED_LAYOUTS = {(_LSI, _LSI53C895A): LAYOUT_LSI_SCRIPTS}


def guided_layouts(plans: Sequence[RangePlan], functions: Sequence[PciFunction]) -> list[RangePlan]:
    """``plans`` with guided's own layout (:data:`GUIDED_LAYOUTS`) on the ``dma`` ranges of a function it names
    that would otherwise get ``generic``; a layout the user chose (``dma_layout``) is kept."""
    chosen = []
    for plan in plans:
        function = owner(plan, functions) if plan.values == VALUES_DMA and plan.layout == LAYOUT_GENERIC else None
        own = GUIDED_LAYOUTS.get((function.vendor, function.product)) if function is not None else None
        chosen.append(replace(plan, layout=own) if own else plan)
    return chosen
