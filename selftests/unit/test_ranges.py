from pathlib import Path

import pytest

from avocado_iofuzz.model.ranges import (
    PortRange,
    RangeError,
    check_skip_devices,
    cut_ports,
    fuzz_targets,
    leaves,
    parse_extra_ranges,
    parse_ioports,
    parse_name_list,
    parse_port_spans,
)

SAMPLE = (Path(__file__).parent / "data" / "ioports-pc-busybox.txt").read_text()


def spans(ranges):
    return [(r.start, r.end, r.name) for r in ranges]


def test_parse_builds_nested_tree():
    forest = parse_ioports(SAMPLE)
    assert [r.name for r in forest] == ["PCI Bus 0000:00", "PCI conf1", "PCI Bus 0000:00"]
    rtc = next(c for c in forest[0].children if c.name == "rtc_cmos")
    assert spans(rtc.children) == [(0x70, 0x71, "rtc0")]
    acpi = next(c for c in forest[0].children if c.name == "0000:00:01.3")
    assert [c.name for c in acpi.children] == ["ACPI PM1a_EVT_BLK", "ACPI PM1a_CNT_BLK", "ACPI PM_TMR"]


def test_leaves_replace_parents_by_children():
    names = [r.name for r in leaves(parse_ioports(SAMPLE))]
    assert "rtc0" in names and "rtc_cmos" not in names
    assert "PCI Bus 0000:00" not in names
    assert "PCI conf1" in names  # a root without children is a leaf


def test_skip_device_takes_its_subtree():
    names = [r.name for r in leaves(parse_ioports(SAMPLE), ["0000:00:01.3", "fpu"])]
    assert "ACPI PM_TMR" not in names and "fpu" not in names
    assert "dma1" in names


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("0000-zzzz : nonsense", ":1: not 'START-END : name'"),
        ("0010-0001 : backwards", "bad port span"),
        ("0000-1ffff : too big", "bad port span"),
        ("   0000-0001 : odd", "odd indentation"),
        ("  0000-0001 : orphan", "without a parent"),
        ("no colon at all", "not 'START-END"),
    ],
)
def test_bad_lines_name_line_and_text(line, fragment):
    with pytest.raises(RangeError, match=fragment) as err:
        parse_ioports(line)
    assert line.strip()[:8] in str(err.value)


def test_child_outside_parent_is_rejected():
    with pytest.raises(RangeError, match=r":2: .*outside its parent"):
        parse_ioports("0000-000f : bus\n  0010-0011 : stray\n")


def test_too_deep_indentation_is_rejected():
    with pytest.raises(RangeError, match=":2: indented too deep"):
        parse_ioports("0000-000f : bus\n    0001-0002 : deep\n")


def test_cut_ports_splits_ranges():
    cut = cut_ports([PortRange(0xCF8, 0xCFF, "PCI conf1")], [(0xCF9, 0xCF9)])
    assert spans(cut) == [(0xCF8, 0xCF8, "PCI conf1"), (0xCFA, 0xCFF, "PCI conf1")]
    assert cut_ports([PortRange(0x64, 0x64, "keyboard")], [(0x60, 0x6F)]) == []


def test_port_spans_and_errors():
    assert parse_port_spans("0x64, 0x3f8-0x3ff 92", "skip_ports") == [(0x64, 0x64), (0x3F8, 0x3FF), (0x92, 0x92)]
    with pytest.raises(RangeError, match="skip_ports: 'zz'"):
        parse_port_spans("zz", "skip_ports")
    with pytest.raises(RangeError, match="start 0x10 is greater than end 0x1"):
        parse_port_spans("0x10-0x1", "skip_ports")
    with pytest.raises(RangeError, match="'0x10-0x10000' is not a span within 0x0-0xffff"):
        parse_port_spans("0x10-0x10000", "skip_ports")


def test_extra_ranges_syntax():
    assert spans(parse_extra_ranges("0x0e9-0x0e9:debug 0x100-0x10f:x")) == [(0xE9, 0xE9, "debug"), (0x100, 0x10F, "x")]
    with pytest.raises(RangeError, match="lacks ':NAME'"):
        parse_extra_ranges("0xe9")


def test_name_list_keeps_spaces_inside_names():
    assert parse_name_list(" dma page reg ,fpu,, ") == ["dma page reg", "fpu"]


def test_default_targets_exclude_dangerous_ports():
    targets = fuzz_targets(SAMPLE)
    covered = {port for r in targets for port in range(r.start, r.end + 1)}
    for port in (0x64, 0x92, 0x3F8, 0x3FF, 0x604, 0x605, 0xCF9):
        assert port not in covered, hex(port)
    assert 0x60 in covered and 0xCF8 in covered and 0x70 in covered


def test_only_devices_and_extra():
    targets = fuzz_targets(SAMPLE, only_devices="debug, rtc0", extra_ioports="0xe9-0xe9:debug")
    assert spans(targets) == [(0x70, 0x71, "rtc0"), (0xE9, 0xE9, "debug")]
    with pytest.raises(RangeError) as err:
        fuzz_targets(SAMPLE, only_devices="nope, rtc0")
    assert str(err.value).startswith("only_devices: no fuzzable range named 'nope' (known: ")
    assert "'rtc0'" in str(err.value) and "[" not in str(err.value).split("(known")[0]


def test_skip_devices_that_match_nothing_are_an_error_naming_the_known_ones():
    check_skip_devices(SAMPLE, "rtc0, dma*, PCI Bus 0000:00, debug", "0xe9-0xe9:debug")  # leaves, parents, extras
    with pytest.raises(RangeError) as err:
        check_skip_devices(SAMPLE, "rtc0, typo, tmer*")
    message = str(err.value)
    assert message.startswith("skip_devices: 'typo', 'tmer*' matches no range of the guest's /proc/ioports")
    assert "(known: " in message and "'rtc0'" in message and "'timer0'" in message
