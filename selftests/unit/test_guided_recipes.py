"""Bring-up recipes: the package's table loads, bad tables are refused naming the recipe and step, the mapping."""

from __future__ import annotations

import logging

import pytest

from avocado_iofuzz.guided.batch import Base
from avocado_iofuzz.guided.recipes import RecipeError, applicable, load, resolve_value
from avocado_iofuzz.model.dma import SCRATCH_BASE
from avocado_iofuzz.model.dma_layouts import LAYOUTS
from avocado_iofuzz.model.pci import IORESOURCE_IO, IORESOURCE_MEM, PciFunction, PciResource

VIRTIO_BLK = PciFunction(0, 0, 3, 0, 0x1AF4, 0x1001, 0x010000, (
    PciResource(0, 0xC000, 0xC03F, IORESOURCE_IO), PciResource(4, 0xFEB00000, 0xFEB03FFF, IORESOURCE_MEM),
))  # fmt: skip
VIRTIO_NET = PciFunction(0, 0, 4, 0, 0x1AF4, 0x1000, 0x020000, (PciResource(0, 0xC040, 0xC05F, IORESOURCE_IO),))
NVME = PciFunction(0, 0, 5, 0, 0x1B36, 0x0010, 0x010802, (PciResource(0, 0xFEB10000, 0xFEB13FFF, IORESOURCE_MEM),))
BLK_IO = Base("pio", 0xC000, 0xC03F, 1, "0000:00:03.0 BAR0 virtio-pci", "dma", "virtio")
NET_IO = Base("pio", 0xC040, 0xC05F, 1, "0000:00:04.0 BAR0 virtio-pci", "dma", "virtio")
NVME_BAR = Base("mmio", 0xFEB10000, 0xFEB13FFF, 4, "0000:00:05.0 BAR0 nvme", "dma", "nvme")

GOOD = """
[[recipe]]
name = "x"
family = "virtio"
bar = 0
steps = [ { at = 0x12, width = 1, value = 0 }, { at = 0x08, width = 4, value = "scratch_pfn" } ]
"""


def test_the_package_table_loads_and_covers_the_dma_families():
    recipes = load()
    assert {r.family for r in recipes} >= {"virtio", "nvme", "ahci", "e1000", "ehci", "uhci", "megasas"}
    assert all(r.family in LAYOUTS and r.steps for r in recipes)
    assert len({r.name for r in recipes}) == len(recipes)


def test_scratch_expressions_resolve_on_the_host():
    assert resolve_value(0x46) == 0x46
    assert resolve_value("scratch") == SCRATCH_BASE
    assert resolve_value("scratch + 0x2000") == SCRATCH_BASE + 0x2000
    assert resolve_value("scratch_pfn") == SCRATCH_BASE >> 12
    assert resolve_value("scratch_pfn + 1") == (SCRATCH_BASE >> 12) + 1
    with pytest.raises(RecipeError, match="expected a number or 'scratch'"):
        resolve_value("scratch * 2")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("family = \"virtio\"", "family = \"floppy\""), "recipe 'x': family 'floppy' is not a scratch layout"),
        (("bar = 0", "bar = 7"), "recipe 'x' step 1: bar must be 0-5"),
        (("width = 1, value = 0", "width = 3, value = 0"), "recipe 'x' step 1: width must be one of"),
        (("at = 0x08, width = 4", "at = 0x0a, width = 4"), "recipe 'x' step 2: offset 0xa is not aligned"),
        (("width = 1, value = 0", "width = 1, value = 0x100"), "recipe 'x' step 1: value 256 .* does not fit 1"),
        (("value = \"scratch_pfn\"", "value = \"scratch + 0x4000\""), "step 2: 'scratch \\+ 0x4000' points outside"),
        (("value = \"scratch_pfn\"", "value = \"scratchy\""), "recipe 'x' step 2: value 'scratchy'"),
        (("at = 0x12,", "at = 0x12, size = 1,"), "recipe 'x' step 1: unknown keys \\['size'\\]"),
        (("bar = 0", "bar = 0\nids = [\"1AF4:1000\"]"), "recipe 'x': 'ids' must be a list of 'vvvv:dddd'"),
        (("steps = [", "steps = [] #"), "recipe 'x': 'steps' must be a non-empty list"),
        (("family = \"virtio\"", "family = \"generic\""), "generic family must name its devices' ids"),
    ],
)
def test_a_bad_table_is_refused_naming_the_recipe_and_step(change, message):
    with pytest.raises(RecipeError, match=message):
        load(GOOD.replace(*change))


def test_a_table_with_one_name_twice_or_no_recipes_is_refused():
    with pytest.raises(RecipeError, match="names used twice: x"):
        load(GOOD + GOOD)
    with pytest.raises(RecipeError, match="no \\[\\[recipe\\]\\] tables"):
        load("")
    with pytest.raises(RecipeError, match="not TOML"):
        load("[[recipe]\n")


def test_recipes_map_onto_the_functions_bar_ranges_with_resolved_values():
    applied = {(r.name, r.function): r for r in applicable(load(), [VIRTIO_BLK, VIRTIO_NET, NVME],
                                                           [BLK_IO, NET_IO, NVME_BAR])}  # fmt: skip
    assert set(applied) == {
        ("virtio-legacy-queue0", "0000:00:03.0"),
        ("virtio-legacy-queue0", "0000:00:04.0"),
        ("virtio-net-legacy-tx", "0000:00:04.0"),  # only virtio-net has a transmit queue 1
        ("nvme-admin-queue", "0000:00:05.0"),
    }
    blk = applied["virtio-legacy-queue0", "0000:00:03.0"]
    assert blk.origin == "recipe:virtio-legacy-queue0"
    assert [(w.base, w.address, w.width) for w in blk.writes[:2]] == [(BLK_IO, 0xC012, 1)] * 2
    pfn = blk.writes[5]
    assert (pfn.address, pfn.width, pfn.value) == (0xC008, 4, SCRATCH_BASE >> 12)
    nvme = applied["nvme-admin-queue", "0000:00:05.0"]
    assert [(w.address, w.value) for w in nvme.writes if w.address in (0xFEB10028, 0xFEB10030)] == [
        (0xFEB10028, SCRATCH_BASE), (0xFEB10030, SCRATCH_BASE + 0x2000)
    ]  # fmt: skip
    assert nvme.writes[-1].address == 0xFEB11000  # the admin doorbell


def test_a_recipe_on_a_range_the_run_does_not_fuzz_or_without_scratch_is_dropped(caplog):
    caplog.set_level(logging.DEBUG, logger="avocado.iofuzz.guided")
    narrow = Base("mmio", 0xFEB10000, 0xFEB10FFF, 4, "0000:00:05.0 BAR0 nvme", "dma", "nvme")  # no doorbell page
    assert applicable(load(), [NVME], [narrow]) == []
    assert "nvme-admin-queue does not apply to 0000:00:05.0: step 8: no mmio range" in caplog.text
    uniform = Base("pio", 0xC000, 0xC03F, 1, "0000:00:03.0 BAR0 virtio-pci")
    assert applicable(load(), [VIRTIO_BLK], [uniform]) == []
    assert "has uniform values (no scratch memory)" in caplog.text
    unassigned = PciFunction(0, 0, 3, 0, 0x1AF4, 0x1001, 0x010000, ())
    assert applicable(load(), [unassigned], [BLK_IO]) == []
    assert "the function has no assigned BAR0" in caplog.text
