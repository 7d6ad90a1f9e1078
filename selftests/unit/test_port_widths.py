"""pio_widths: which widths a port range is fuzzed at, over which ports, and how the param is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from avocado_iofuzz.campaign import generator_parts
from avocado_iofuzz.coverage.catalog import Catalog
from avocado_iofuzz.model.kinds import KindParams, Listings, choose_targets, plan_kinds, target_name, units
from avocado_iofuzz.model.port_widths import aligned_interior, port_spans
from avocado_iofuzz.model.ranges import fuzz_targets
from avocado_iofuzz.model.target import Target
from avocado_iofuzz.repro.qtest_ops import format_script
from avocado_iofuzz.vt.iofuzz_params import read_kinds
from avocado_iofuzz.vt.params import ParamError

DATA = Path(__file__).parent / "data"
ALL = (1, 2, 4)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0x60, 0x60, [(1, 0x60, 0x60)]),  # one port: bytes only
        (0x70, 0x71, [(1, 0x70, 0x71), (2, 0x70, 0x71)]),  # an aligned word
        (0x61, 0x62, [(1, 0x61, 0x62)]),  # two ports across a word boundary: no whole word
        (0xE0, 0xE3, [(1, 0xE0, 0xE3), (2, 0xE0, 0xE3), (4, 0xE0, 0xE3)]),  # an aligned dword
        # sizes that are no multiple of a width: each width gets the slots wholly inside, none that reach out
        (0x1F1, 0x1F7, [(1, 0x1F1, 0x1F7), (2, 0x1F2, 0x1F7), (4, 0x1F4, 0x1F7)]),
        (0x3F2, 0x3F5, [(1, 0x3F2, 0x3F5), (2, 0x3F2, 0x3F5)]),  # no dword-aligned dword inside
        (0x510, 0x51B, [(1, 0x510, 0x51B), (2, 0x510, 0x51B), (4, 0x510, 0x51B)]),
    ],
)
def test_natural_widths_are_the_aligned_slots_inside_the_range(start, end, expected):
    assert port_spans(start, end, ALL) == expected


def test_the_widths_asked_for_are_the_only_ones_and_keep_their_order():
    assert port_spans(0xE0, 0xE3, (4, 1)) == [(4, 0xE0, 0xE3), (1, 0xE0, 0xE3)]
    assert port_spans(0x60, 0x60, (2, 4)) == []
    assert aligned_interior(0x61, 0x66, 4) is None and aligned_interior(0x61, 0x68, 4) == (0x64, 0x67)


def test_pci_conf1_address_register_is_one_dword_and_the_data_window_gets_every_width():
    # the kernel's range whole: 0xcf8-0xcfb only as the 4-byte register, 0xcfc-0xcff at 1, 2 and 4
    assert port_spans(0xCF8, 0xCFF, ALL) == [(1, 0xCFC, 0xCFF), (2, 0xCFC, 0xCFF), (4, 0xCF8, 0xCFF)]
    # the default skip_ports cuts the reset control register 0xcf9 out: the register stays whole
    assert port_spans(0xCF8, 0xCF8, ALL) == [(4, 0xCF8, 0xCFB)]
    assert port_spans(0xCFA, 0xCFF, ALL) == [(1, 0xCFC, 0xCFF), (2, 0xCFC, 0xCFF), (4, 0xCFC, 0xCFF)]
    # without 4 among the widths nothing reaches it: narrower writes there do nothing
    assert port_spans(0xCF8, 0xCF8, (1, 2)) == []
    # a wider range around it is cut in two at the narrower widths
    assert port_spans(0xCF0, 0xCFF, (1,)) == [(1, 0xCF0, 0xCF7), (1, 0xCFC, 0xCFF)]


def test_the_default_run_plans_conf1_as_register_and_window():
    ports = fuzz_targets((DATA / "ioports-pc-busybox.txt").read_text())  # default skip_ports
    plans = plan_kinds(1, 2, KindParams(), choose_targets(KindParams(), Listings(), ports))
    conf1 = [(p.width, p.start, p.end, p.name) for p in plans if target_name(p.name) == "PCI conf1"]
    assert conf1 == [
        (4, 0xCF8, 0xCFB, "PCI conf1 (4-byte)"),
        (1, 0xCFC, 0xCFF, "PCI conf1 (1-byte)"),
        (2, 0xCFC, 0xCFF, "PCI conf1 (2-byte)"),
        (4, 0xCFC, 0xCFF, "PCI conf1 (4-byte)"),
    ]
    (register,) = [p for p in plans if p.start == 0xCF8]
    assert {op.port for op in register.ops()} == {0xCF8} and {op.width for op in register.ops()} == {4}
    # the reset control register is never accessed alone, whatever the width
    assert not [p for p in plans if p.start <= 0xCF9 <= p.end and p.start != 0xCF8]
    # skip_ports naming 0xcf8 itself leaves the register out
    cut = fuzz_targets((DATA / "ioports-pc-busybox.txt").read_text(), skip_ports="0xcf8-0xcf9")
    assert not [
        p for p in plan_kinds(1, 2, KindParams(), choose_targets(KindParams(), Listings(), cut)) if p.start == 0xCF8
    ]


def test_op_count_is_fuzz_count_plus_two_times_the_slots_of_every_width():
    plans = plan_kinds(5, 10, KindParams(), [Target("pio", 0xE0, 0xE3, "testdev")])
    assert [(p.width, p.slots, p.op_count) for p in plans] == [(1, 4, 48), (2, 2, 24), (4, 1, 12)]
    assert [p.name for p in plans] == ["testdev (1-byte)", "testdev (2-byte)", "testdev (4-byte)"]
    assert {op.width for p in plans for op in p.ops()} == {1, 2, 4}
    one = plan_kinds(5, 10, KindParams(pio_widths=(1,)), [Target("pio", 0xE0, 0xE3, "testdev")])
    assert [(p.name, p.width, p.op_count) for p in one] == [("testdev", 1, 48)]  # one width: the range's own name
    # the width reaches the qtest export: inb/inw/inl, outb/outw/outl
    script = format_script(op for p in plans for op in p.ops(0, p.slots + 1))
    assert {line.split()[0] for line in script.splitlines()} == {"inb", "inw", "inl", "outb", "outw", "outl"}


def test_the_generator_fingerprint_covers_ports_at_every_width():
    # a generator that changed its 2- or 4-byte port ops would otherwise expand old traces into other ops
    covered = {(plan.space, plan.width) for plan in generator_parts.REFERENCE_PLANS}
    assert {("pio", 1), ("pio", 2), ("pio", 4)} <= covered


def test_width_suffixed_names_still_find_their_device_for_coverage():
    catalog = Catalog.load()
    # the catalog's patterns are anchored on the kernel's names (``^dma[12]$``): the suffix must go first
    assert catalog.device_for_range("dma1 (2-byte)") is None
    assert catalog.device_for_range(target_name("dma1 (2-byte)")) == catalog.device_for_range("dma1") is not None
    assert target_name("PCI conf1 (4-byte)") == "PCI conf1" and target_name("dma page reg") == "dma page reg"


def test_ranges_without_a_slot_of_any_asked_width_are_logged_not_planned(caplog):
    caplog.set_level("INFO", logger="avocado.test.iofuzz")
    kinds = KindParams(pio_widths=(4,))
    assert units([Target("pio", 0x60, 0x60, "keyboard")], kinds) == []
    assert "pio 0x60-0x60 keyboard: not fuzzed at 4 bytes" in caplog.text


def test_the_param_defaults_to_every_width_and_keeps_the_order_given():
    assert read_kinds({}).pio_widths == (1, 2, 4)
    assert read_kinds({"pio_widths": "4, 1 4"}).pio_widths == (4, 1)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("8", r"param pio_widths: '8' is not an access width in bytes \(1, 2, 4\)"),
        ("3", r"param pio_widths: '3' is not an access width"),
        ("word", r"param pio_widths: 'word' is not an access width"),
        ("", r"param pio_widths: empty \(expected some of 1, 2, 4\)"),
    ],
)
def test_bad_widths_name_the_param(value, message):
    with pytest.raises(ParamError, match=message):
        read_kinds({"pio_widths": value})
