"""Ops of every address space as qtest commands, and the BAR setup a qtest replay starts with."""

from __future__ import annotations

from pathlib import Path

import pytest

from avocado_iofuzz.model.pci import config_address, parse_pci_listing
from avocado_iofuzz.model.program import Op, RangePlan
from avocado_iofuzz.repro.qtest_ops import format_script, pci_setup_commands, qtest_commands

LISTING = (Path(__file__).parent / "data" / "pci-resources-pc-devices.txt").read_text()


@pytest.mark.parametrize(
    ("op", "lines"),
    [
        (Op("r", 0x70, 1, 0), ["inb 0x70"]),
        (Op("w", 0x1F0, 2, 0xBEEF), ["outw 0x1f0 0xbeef"]),
        (Op("w", 0xCFC, 4, 0xFFFFFFFF, "pio"), ["outl 0xcfc 0xffffffff"]),
        (Op("r", 0xFEBC0000, 1, 0, "mmio"), ["readb 0xfebc0000"]),
        (Op("w", 0xFEBC0002, 2, 0x1234, "mmio"), ["writew 0xfebc0002 0x1234"]),
        (Op("w", 0xFED00010, 4, 0x3, "mmio"), ["writel 0xfed00010 0x3"]),
        (Op("r", 0x100000008, 8, 0, "mmio"), ["readq 0x100000008"]),
        (Op("w", 0xFEBC0008, 8, 2**64 - 1, "mmio"), ["writeq 0xfebc0008 0xffffffffffffffff"]),
        # config: select the dword through 0xcf8, then the op's width at 0xcfc + the byte offset
        (Op("r", config_address(0, 2, 0, 0x10), 4, 0, "pci"), ["outl 0xcf8 0x80001010", "inl 0xcfc"]),
        (Op("w", config_address(0, 2, 0, 0x04), 2, 0x7, "pci"), ["outl 0xcf8 0x80001004", "outw 0xcfc 0x7"]),
        (Op("w", config_address(0, 2, 0, 0x06), 2, 0xFFFF, "pci"), ["outl 0xcf8 0x80001004", "outw 0xcfe 0xffff"]),
        (Op("w", config_address(3, 0x1F, 7, 0x3F), 1, 0xA5, "pci"), ["outl 0xcf8 0x8003ff3c", "outb 0xcff 0xa5"]),
    ],
)
def test_each_space_maps_to_its_commands(op, lines):
    assert qtest_commands(op) == lines


@pytest.mark.parametrize(
    ("op", "message"),
    [
        (Op("w", 0x60, 8, 0), "no pio qtest command of width 8"),
        (Op("r", 0x10000, 1, 0), "outside 0x0..0xffff"),
        (Op("w", 0x60, 1, 0x100), "does not fit 1 byte"),
        (Op("w", config_address(0, 2, 0, 0x100), 4, 0, "pci"), "beyond 0xff"),
        (Op("w", config_address(0, 2, 0, 0x03), 2, 0, "pci"), "straddles a dword"),
        (Op("r", 0x0, 8, 0, "pci"), "no pci qtest command of width 8"),
        (Op("x", 0x60, 1, 0), "kind must be"),
        (Op("r", 0x60, 1, 0, "dma"), "unknown address space 'dma'"),
    ],
)
def test_what_qtest_cannot_express_is_refused(op, message):
    with pytest.raises(ValueError, match=message):
        qtest_commands(op)


def test_every_planned_op_of_every_space_has_commands():
    plans = [
        RangePlan(0, 0x60, 0x64, "k", 5, 3),
        RangePlan(1, 0xFEBC0000, 0xFEBC003F, "b", 5, 3, 8, "mmio"),
        RangePlan(2, config_address(0, 2, 0), config_address(0, 2, 0, 0xFF), "c", 5, 3, 1, "pci"),
        RangePlan(3, config_address(0, 2, 0), config_address(0, 2, 0, 0xFF), "c", 5, 3, 2, "pci"),
    ]
    script = format_script((op for plan in plans for op in plan.ops()), setup=["outl 0xcf8 0x0"])
    lines = script.splitlines()
    assert lines[0] == "outl 0xcf8 0x0" and script.endswith("\n")
    assert len(lines) == 1 + plans[0].op_count + plans[1].op_count + 2 * (plans[2].op_count + plans[3].op_count)


def test_setup_gives_bus_zero_functions_their_bars_back():
    lines = pci_setup_commands(parse_pci_listing(LISTING))
    pairs = list(zip(lines[::2], lines[1::2], strict=True))
    # e1000 at 00:02.0: BAR0 (memory), BAR1 (I/O), then decoding on; its ROM is no BAR
    assert pairs[pairs.index(("outl 0xcf8 0x80001010", "outl 0xcfc 0xfebc0000")) :][:3] == [
        ("outl 0xcf8 0x80001010", "outl 0xcfc 0xfebc0000"),
        ("outl 0xcf8 0x80001014", "outl 0xcfc 0xc000"),
        ("outl 0xcf8 0x80001004", "outw 0xcfc 0x7"),
    ]
    # virtio-rng at 00:04.0: a 64-bit BAR4 takes two dwords
    assert ("outl 0xcf8 0x80002020", "outl 0xcfc 0xfebfc000") in pairs
    assert ("outl 0xcf8 0x80002024", "outl 0xcfc 0x0") in pairs
    # the IDE controller's legacy ports are fixed, no BAR: only its BAR4 (bus master DMA) is written
    assert [pair for pair in pairs if pair[0].startswith("outl 0xcf8 0x800009")] == [
        ("outl 0xcf8 0x80000920", "outl 0xcfc 0xc060"),
        ("outl 0xcf8 0x80000904", "outw 0xcfc 0x7"),
    ]
    # host bridges without BARs are not touched
    assert not any(cf8.startswith("outl 0xcf8 0x800000") for cf8, _ in pairs)
