"""Guided's own scratch layouts (layout_choice.guided_layouts): the LSI53C895A's dma ranges get lsi_scripts in
guided runs only; blind's choice (choose_layouts) and every other range stay as they were."""

from __future__ import annotations

from avocado_iofuzz.guided.batch import Base
from avocado_iofuzz.model.dma import VALUES_DMA, VALUES_UNIFORM, scratch_fill
from avocado_iofuzz.model.layout_choice import LAYOUT_AUTO, choose_layouts, guided_layouts, pci_functions
from avocado_iofuzz.model.layouts.lsi_scripts import LAYOUT_LSI_SCRIPTS
from avocado_iofuzz.model.program import RangePlan

ZERO = "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
LISTING = (
    "== /sys/bus/pci/devices/0000:00:02.0 0x1000 0x0012 0x010000\n"  # lsi53c895a: ports, BAR1, BAR2 (RAM)
    "0x000000000000c000 0x000000000000c0ff 0x0000000000040101\n"
    "0x00000000febf0400 0x00000000febf07ff 0x0000000000040200\n"
    "0x00000000febf2000 0x00000000febf3fff 0x0000000000040200\n" + ZERO * 10
    + "== /sys/bus/pci/devices/0000:00:03.0 0x1000 0x0060 0x010400\n"  # megasas: a layout of its family
    "0x000000000000c300 0x000000000000c3ff 0x0000000000040101\n" + ZERO * 12
    + "== /sys/bus/pci/devices/0000:00:04.0 0x10ec 0x8139 0x020000\n"  # rtl8139: generic in both strategies
    "0x000000000000c100 0x000000000000c1ff 0x0000000000040101\n" + ZERO * 12
)  # fmt: skip


def plans(values: str = VALUES_DMA) -> list[RangePlan]:
    return [
        RangePlan(0, 0xC000, 0xC0FF, "lsi ports", 1, 1, 4, values=values),
        RangePlan(1, 0xFEBF0400, 0xFEBF07FF, "lsi BAR1", 1, 1, 4, "mmio", values=values),
        RangePlan(2, 0x10000, 0x100FF, "0000:00:02.0", 1, 1, 4, "pci", values=values),
        RangePlan(3, 0xC300, 0xC3FF, "megasas", 1, 1, 4, values=values),
        RangePlan(4, 0xC100, 0xC1FF, "rtl8139", 1, 1, 4, values=values),
        RangePlan(5, 0x60, 0x64, "keyboard", 1, 1, values=values),
    ]


def test_guided_gives_the_lsi_its_scripts_layout_and_blind_keeps_generic():
    functions = pci_functions(LISTING)
    blind = choose_layouts(plans(), functions, LAYOUT_AUTO)
    assert [p.layout for p in blind] == ["generic", "generic", "generic", "megasas", "generic", "generic"]
    guided = guided_layouts(blind, functions)
    lsi = LAYOUT_LSI_SCRIPTS
    assert [p.layout for p in guided] == [lsi, lsi, lsi, "megasas", "generic", "generic"]
    assert [b for b, g in zip(blind, guided, strict=True) if g.layout != lsi] == [g for g in guided if g.layout != lsi]
    assert [Base.of(p).key() for p in guided[:2]] == [
        "pio:0xc000-0xc0ff/4+dma=lsi_scripts",  # a corpus's generic-layout keys of this range are set aside
        "mmio:0xfebf0400-0xfebf07ff/4+dma=lsi_scripts",
    ]


def test_guided_layouts_leave_uniform_ranges_and_a_users_layout_alone():
    functions = pci_functions(LISTING)
    uniform = choose_layouts(plans(VALUES_UNIFORM), functions, LAYOUT_AUTO)
    assert guided_layouts(uniform, functions) == uniform  # uniform values fill no scratch memory
    chosen = choose_layouts(plans(), functions, "e1000")
    assert guided_layouts(chosen, functions) == chosen
    assert guided_layouts(plans(), []) == plans()  # no PCI listing read: no owner, nothing changes


def test_the_guided_lsi_fill_is_a_pure_function_of_seed_and_epoch():
    # same seed, same strategy -> same DMA memory (replay and triage rebuild it from the trace's layout)
    assert scratch_fill(7, 3, LAYOUT_LSI_SCRIPTS) == scratch_fill(7, 3, LAYOUT_LSI_SCRIPTS)
    assert scratch_fill(7, 3, LAYOUT_LSI_SCRIPTS) != scratch_fill(7, 4, LAYOUT_LSI_SCRIPTS)
