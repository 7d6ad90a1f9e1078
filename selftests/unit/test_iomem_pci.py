"""/proc/iomem and sysfs PCI parsing on real captured listings (selftests/unit/data) and malformed ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from avocado_iofuzz.model.iomem import (
    DEFAULT_SKIP_IOMEM,
    iomem_leaves,
    mmio_targets,
    parse_address_spans,
    parse_extra_iomem,
    parse_iomem,
)
from avocado_iofuzz.model.pci import (
    DEFAULT_CONFIG_HOLES,
    PciListingError,
    cf8_address,
    config_address,
    config_targets,
    parse_config_holes,
    parse_pci_listing,
    split_config_address,
)
from avocado_iofuzz.model.ranges import RangeError, name_matches, parse_name_list
from avocado_iofuzz.model.target import Target

DATA = Path(__file__).parent / "data"
IOMEM = {m: (DATA / f"iomem-{m}-devices.txt").read_text() for m in ("pc", "q35")}
PCI = {m: (DATA / f"pci-resources-{m}-devices.txt").read_text() for m in ("pc", "q35")}
DEFAULT_SKIPS = parse_name_list(", ".join(DEFAULT_SKIP_IOMEM))
DEFAULT_HOLES = parse_config_holes(" ".join(DEFAULT_CONFIG_HOLES))


def spans(targets):
    return [(t.start, t.end, t.name) for t in targets]


# --- /proc/iomem --------------------------------------------------------------


def test_iomem_tree_holds_64_bit_ranges_and_nesting():
    forest = parse_iomem(IOMEM["q35"])
    assert (forest[-1].start, forest[-1].end, forest[-1].name) == (0xFD00000000, 0xFFFFFFFFFF, "Reserved")
    mmconfig = next(r for r in forest if r.name.startswith("PCI MMCONFIG"))
    assert mmconfig.name == "PCI MMCONFIG 0000 [bus 00-ff]"
    assert [c.name for c in mmconfig.children] == ["Reserved"]
    assert [c.name for c in mmconfig.children[0].children] == ["pnp 00:04"]


def test_default_skips_leave_only_devices_named_after_their_outer_range():
    for machine in ("pc", "q35"):
        leaves = iomem_leaves(parse_iomem(IOMEM[machine]), DEFAULT_SKIPS)
        # HPET 0 holds PNP0103:00 with the same span: the leaf reads as the outer name
        assert spans(leaves) == [(0xFED00000, 0xFED003FF, "HPET 0")]
        assert leaves[0].aliases == ("PNP0103:00",)


def test_without_skips_every_leaf_shows_up():
    names = {t.name for t in iomem_leaves(parse_iomem(IOMEM["pc"]), ())}
    assert {"Kernel code", "Local APIC", "IOAPIC 0", "System ROM", "0000:00:02.0"} <= names
    assert "System RAM" in names  # the first RAM range has no children


def test_mmio_targets_take_bars_from_sysfs_with_names_and_cap_their_size():
    functions = parse_pci_listing(PCI["pc"])
    targets = mmio_targets(IOMEM["pc"], functions)
    assert spans(targets) == [
        (0xFEBC0000, 0xFEBC3FFF, "0000:00:02.0 8086:100e BAR0"),  # 128 KiB BAR cut to 16 KiB
        (0xFEBE0000, 0xFEBE3FFF, "0000:00:03.0 8086:293e BAR0"),
        (0xFEBE4000, 0xFEBE4FFF, "0000:00:04.0 1af4:1005 BAR1"),
        (0xFEBFC000, 0xFEBFFFFF, "0000:00:04.0 1af4:1005 BAR4"),  # 64-bit BAR
        (0xFED00000, 0xFED003FF, "HPET 0"),
    ]
    # the e1000's ROM (resource 6, 0xfeb80000) is no BAR target
    assert all(not t.start <= 0xFEB80000 <= t.end for t in targets)
    assert all(t.space == "mmio" for t in targets)


def test_only_iomem_accepts_ids_and_addresses_and_names_what_is_missing():
    functions = parse_pci_listing(PCI["q35"])
    e1000e = mmio_targets(IOMEM["q35"], functions, only_iomem="8086:10d3")
    assert [t.name for t in e1000e] == [f"0000:00:01.0 8086:10d3 BAR{i}" for i in (0, 1, 3)]
    assert spans(mmio_targets(IOMEM["q35"], functions, only_iomem="00:1f.2, HPET*")) == [
        (0xFEBC5000, 0xFEBC5FFF, "0000:00:1f.2 8086:2922 BAR5"),
        (0xFED00000, 0xFED003FF, "HPET 0"),
    ]
    with pytest.raises(RangeError, match=r"only_iomem: no MMIO range matches \['1234:5678'\] \(ranges: .*HPET 0"):
        mmio_targets(IOMEM["q35"], functions, only_iomem="1234:5678")


def test_skip_patterns_extra_ranges_and_cut_spans():
    functions = parse_pci_listing(PCI["pc"])
    skip = ", ".join(DEFAULT_SKIP_IOMEM) + ", 1af4:1005, HPET 0"
    targets = mmio_targets(
        IOMEM["pc"],
        functions,
        skip_iomem=skip,
        extra_iomem="0xfed1c000-0xfed1ffff:rcrb 0x100000000-0x10000000f:high",
        skip_mmio="0xfebc0010-0xfebc001f,0xfed1c000",
        max_size=0x8000,
    )
    assert spans(targets) == [
        (0xFEBC0000, 0xFEBC000F, "0000:00:02.0 8086:100e BAR0"),
        (0xFEBC0020, 0xFEBC7FFF, "0000:00:02.0 8086:100e BAR0"),
        (0xFEBE0000, 0xFEBE3FFF, "0000:00:03.0 8086:293e BAR0"),
        (0xFED1C001, 0xFED1FFFF, "rcrb"),
        (0x100000000, 0x10000000F, "high"),
    ]


def test_lifting_the_bus_window_skip_does_not_fuzz_a_bar_twice():
    functions = parse_pci_listing(PCI["pc"])
    skip = ", ".join(k for k in DEFAULT_SKIP_IOMEM if k != "PCI Bus *")
    targets = mmio_targets(IOMEM["pc"], functions, skip_iomem=skip)
    bar0 = next(t for t in targets if t.name == "0000:00:02.0 8086:100e BAR0")
    inside = [t.name for t in targets if bar0.start <= t.start <= bar0.end]
    assert inside == [bar0.name]  # /proc/iomem's own entry for that BAR is not fuzzed again
    # what /proc/iomem lists beyond the BARs stays: the e1000's ROM, the unclaimed window above 4 GiB
    assert (0xFEB80000, 0xFEB83FFF, "0000:00:02.0") in spans(targets)  # capped at 16 KiB like any range
    assert (0x100000000, 0x100003FFF, "PCI Bus 0000:00") in spans(targets)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("00000000-00000fff Reserved\n", r"/proc/iomem:1: not 'START-END : name'"),
        ("00001000-00000fff : Backwards\n", r"/proc/iomem:1: bad address span 0x1000-0xfff"),
        ("0-10000000000000000 : Too wide\n", r"bad address span 0x0-0x10000000000000000"),
        ("00000000-0000ffff : Bus\n   00000000-000000ff : Odd\n", r"/proc/iomem:2: odd indentation"),
        ("00000000-0000ffff : Bus\n    00000000-000000ff : Deep\n", r"/proc/iomem:2: indented too deep"),
        ("00000000-000000ff : Bus\n  00000000-000001ff : Out\n", r"/proc/iomem:2: .* lies outside its parent"),
        ("  00000000-000000ff : Orphan\n", r"/proc/iomem:1: indented line without a parent"),
        ("0000zz00-000000ff : Hex\n", r"/proc/iomem:1: not 'START-END : name'"),
    ],
)
def test_malformed_iomem_names_the_line(text, message):
    with pytest.raises(RangeError, match=message):
        parse_iomem(text)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: parse_extra_iomem("0xfed1c000-0xfed1ffff"), r"extra_iomem: .* lacks ':NAME'"),
        (lambda: parse_extra_iomem("0xg-0x1:x"), r"extra_iomem: '0xg-0x1' is not an address"),
        (lambda: parse_address_spans("0x10-0x1", "skip_mmio"), r"skip_mmio: '0x10-0x1': start 0x10 is greater"),
        (lambda: mmio_targets("", [], max_size=4), r"mmio_max_size: 4 is below 8 bytes"),
    ],
)
def test_bad_mmio_params_name_the_param(call, message):
    with pytest.raises(RangeError, match=message):
        call()


# --- sysfs PCI listing -----------------------------------------------------------------


def test_pci_listing_of_both_machines():
    pc = parse_pci_listing(PCI["pc"])
    assert [f.name for f in pc] == [
        "0000:00:00.0 8086:1237",
        "0000:00:01.0 8086:7000",
        "0000:00:01.1 8086:7010",
        "0000:00:01.3 8086:7113",
        "0000:00:02.0 8086:100e",
        "0000:00:03.0 8086:293e",
        "0000:00:04.0 1af4:1005",
    ]
    ide = pc[2]
    assert ide.class_code == 0x010180 and len(ide.resources) == 13
    assert ide.memory_bars() == []  # I/O BARs only: port I/O covers them
    q35 = parse_pci_listing(PCI["q35"])
    assert [f.address for f in q35][-3:] == ["0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3"]
    assert q35[-1].identifiers == ("0000:00:1f.3 8086:2930", "0000:00:1f.3", "00:1f.3", "8086:2930")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0x0 0x0 0x0\n", r"PCI listing:1: resource line before any"),
        ("== /sys/bus/pci/devices/0000:00:02.0 0x8086 0x100e\n", r"PCI listing:1: not '== <sysfs dir>"),
        ("== /sys/bus/pci/devices/0000:00:20.0 0x8086 0x100e 0x020000\n", r"PCI listing:1: not '== <sysfs dir>"),
        ("== /sys/bus/pci/devices/0000:00:02.8 0x8086 0x100e 0x020000\n", r"PCI listing:1: not '== <sysfs dir>"),
        (
            "== /x/0000:00:02.0 0x8086 0x100e 0x020000\n== /x/0000:00:02.0 0x8086 0x100e 0x020000\n",
            r"PCI listing:2: function 0000:00:02.0 is listed twice",
        ),
        ("== /x/0000:00:02.0 0x8086 0x100e 0x020000\n0x10 0x0f 0x200\n", r"PCI listing:2: resource start 0x10"),
        ("== /x/0000:00:02.0 0x8086 0x100e 0x020000\ncat: resource: No such file\n", r"PCI listing:2: not a"),
        ("== /x/0000:00:02.0 0x8086 0x100e 0x020000\n0x1 0x2\n", r"PCI listing:2: not a resource line"),
    ],
)
def test_malformed_pci_listing_names_the_line(text, message):
    with pytest.raises(PciListingError, match=message):
        parse_pci_listing(text)


def test_unassigned_and_disabled_bars_are_not_targets():
    listing = (
        "== /x/0000:00:05.0 0x1234 0x0001 0x000000\n"
        "0x0000000000000000 0x0000000000000fff 0x0000000000040200\n"  # unset: starts at 0, size only
        "0x00000000fe000000 0x00000000fe000fff 0x0000000010040200\n"  # disabled
        "0x00000000fe001000 0x00000000fe001fff 0x0000000000040200\n"
    )
    (function,) = parse_pci_listing(listing)
    assert [b.index for b in function.memory_bars()] == [0, 2]  # index 0 starts at 0 but spans > 1 byte


# --- config space ----------------------------------------------------------------


def test_config_targets_follow_ecam_layout_and_leave_the_default_holes_out():
    targets = config_targets(parse_pci_listing(PCI["q35"]), holes=DEFAULT_HOLES)
    assert spans(targets)[:3] == [
        (0x0, 0x5F, "0000:00:00.0 8086:29c0"),  # PCIEXBAR 0x60-0x67 cut out
        (0x68, 0xFF, "0000:00:00.0 8086:29c0"),
        (0x8000, 0x80FF, "0000:00:01.0 8086:10d3"),
    ]
    assert spans(targets)[-1] == (
        config_address(0, 0x1F, 3),
        config_address(0, 0x1F, 3, 0xFF),
        "0000:00:1f.3 8086:2930",
    )
    assert all(t.space == "pci" for t in targets)
    # the pc host bridge has no PCIEXBAR: nothing is cut from it
    assert spans(config_targets(parse_pci_listing(PCI["pc"]), holes=DEFAULT_HOLES))[0] == (
        0,
        0xFF,
        "0000:00:00.0 8086:1237",
    )


def test_config_targets_select_and_skip_functions():
    functions = parse_pci_listing(PCI["pc"])
    assert [t.name for t in config_targets(functions, only=["8086:100e", "00:04.0"])] == [
        "0000:00:02.0 8086:100e",
        "0000:00:04.0 1af4:1005",
    ]
    assert "0000:00:00.0 8086:1237" not in [t.name for t in config_targets(functions, skip=["0000:00:00.0"])]
    assert spans(config_targets(functions, only=["1af4:*"], size=0x1000)) == [
        (0x20000, 0x20FFF, "0000:00:04.0 1af4:1005")
    ]
    with pytest.raises(PciListingError, match=r"only_pci: no PCI function matches \['8086:10d3'\]"):
        config_targets(functions, only=["8086:10d3"])
    with pytest.raises(PciListingError, match=r"pci_config_size: 0x102 is not a multiple of 4"):
        config_targets(functions, size=0x102)


def test_other_domains_are_left_out():
    listing = "== /x/0001:00:00.0 0x8086 0x1237 0x060000\n== /x/0000:00:00.0 0x8086 0x1237 0x060000\n"
    assert [t.name for t in config_targets(parse_pci_listing(listing))] == ["0000:00:00.0 8086:1237"]


def test_ecam_and_type1_addresses():
    address = config_address(0x12, 0x1F, 7, 0x3D)
    assert address == 0x12 << 20 | 0x1F << 15 | 7 << 12 | 0x3D
    assert split_config_address(address) == (0x12, 0x1F, 7, 0x3D)
    assert cf8_address(config_address(0, 2, 0, 0x10)) == 0x80001010
    assert cf8_address(config_address(0, 2, 0, 0x06)) == 0x80001004  # dword-aligned; the byte goes to 0xcfe
    with pytest.raises(ValueError, match="beyond 0xff"):
        cf8_address(config_address(0, 2, 0, 0x100))
    with pytest.raises(ValueError, match="no PCI config register"):
        config_address(0, 0x20, 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("8086:29c0", r"skip_pci_config: '8086:29c0' is not PATTERN@0xFIRST-0xLAST"),
        ("8086:29c0@0x67-0x60", r"is not a register span"),
        ("*@0x1000", r"is not a register span"),
    ],
)
def test_bad_config_holes_name_the_param(text, message):
    with pytest.raises(PciListingError, match=message):
        parse_config_holes(text)


def test_name_patterns_treat_only_star_as_special():
    assert name_matches("PCI MMCONFIG 0000 [bus 00-ff]", ["PCI MMCONFIG 0000 [bus 00-ff]"])
    assert name_matches("PCI MMCONFIG 0000 [bus 00-ff]", ["PCI MMCONFIG *"])
    assert not name_matches("PCI MMCONFIG 0000 [bus 00-ff]", ["PCI MMCONFIG 0000 [bus 00-f]"])
    assert not name_matches("IOAPIC 0", ["IOAPIC"])
    assert name_matches("IOAPIC 0", ["*APIC*"])
    assert Target("mmio", 0, 1, "x BAR0", ("8086:100e",)).matches(["8086:*"])
