"""qtest reproducer scripts: written from ops, read back into ops, bad lines named."""

from __future__ import annotations

import pytest

from avocado_iofuzz.model.program import SPACE_MMIO, SPACE_PCI, Op
from avocado_iofuzz.repro.qtest import (
    QtestScriptError,
    describe_ops,
    parse_script,
    read_script,
    write_script,
)
from avocado_iofuzz.repro.qtest_ops import format_script
from avocado_iofuzz.repro.qtest_run import RUNNING_CLOCK_PACING, Pacing, pieces

PIO_AND_MMIO = [
    Op("w", 0x70, 1, 0x8F),
    Op("r", 0x71, 1, 0),
    Op("w", 0xCFC, 2, 0xFFFF),
    Op("r", 0x3000, 4, 0),
    Op("w", 0xFEA00098, 8, 0x1, SPACE_MMIO),
    Op("r", 0xFEA00000, 4, 0, SPACE_MMIO),
]


def test_port_and_mmio_ops_survive_a_round_trip(tmp_path):
    path = write_script(tmp_path / "r.qtest", PIO_AND_MMIO)
    assert path.read_text().splitlines() == [
        "outb 0x70 0x8f",
        "inb 0x71",
        "outw 0xcfc 0xffff",
        "inl 0x3000",
        "writeq 0xfea00098 0x1",
        "readl 0xfea00000",
    ]
    assert read_script(path) == PIO_AND_MMIO


def test_a_config_op_is_a_type1_cycle_and_reads_back_as_its_two_port_ops():
    # register 0x06 of 00:02.0: dword 0x04 selected, byte lane 2
    op = Op("w", 2 << 15 | 0x06, 2, 0xABCD, SPACE_PCI)
    text = format_script([op])
    assert text == "outl 0xcf8 0x80001004\noutw 0xcfe 0xabcd\n"
    assert parse_script(text) == [Op("w", 0xCF8, 4, 0x80001004), Op("w", 0xCFE, 2, 0xABCD)]


def test_comments_blank_lines_and_decimal_numbers_are_accepted():
    assert parse_script("# made by hand\n\n  outb 112 15\ninw 0x1f0\n") == [Op("w", 0x70, 1, 15), Op("r", 0x1F0, 2, 0)]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("outb 0x80", "takes 2 argument"),
        ("inb 0x80 0x1", "takes 1 argument"),
        ("outb 0x80 0x100", "does not fit"),
        ("outl 0x10000 0x0", "above 0xffff"),
        ("outb zz 0x1", "not a number"),
        ("outb 010 0x1", "not a number"),
        ("memset 0x1000 0x10 0x0", "not an I/O access"),
        ("write 0x1000 0x2 0x01", "not 2 byte"),
        ("write 0x1000 0x1", "takes 3 arguments"),
        ("launch missiles", "unknown command 'launch'"),
    ],
)
def test_bad_lines_are_named_with_their_line_number(line, message):
    with pytest.raises(QtestScriptError, match=message) as error:
        parse_script(f"outb 0x70 0x1\n{line}\n", "r.qtest")
    assert str(error.value).startswith("r.qtest:2:")


def test_files_that_are_no_scripts_are_refused(tmp_path):
    binary = tmp_path / "binary"
    binary.write_bytes(b"outb 0x70 0x1\n\xff\xfe")
    with pytest.raises(QtestScriptError, match="not a text qtest script"):
        read_script(binary)
    empty = tmp_path / "empty"
    empty.write_text("# nothing here\n")
    with pytest.raises(QtestScriptError, match="no I/O command"):
        read_script(empty)
    with pytest.raises(QtestScriptError, match="cannot read"):
        read_script(tmp_path / "missing")


def test_ops_qemu_cannot_take_are_refused_when_writing():
    with pytest.raises(ValueError):
        format_script([Op("w", 0x70, 8, 0)])  # no 8-byte port access
    with pytest.raises(ValueError):
        format_script([Op("w", 0x70, 1, 0x100)])


def test_describe_ops_is_short():
    assert describe_ops(PIO_AND_MMIO, 2) == "outb 0x70 0x8f; inb 0x71; ... (6 ops)"


def test_replies_map_to_ops_of_one_and_two_lines():
    from avocado_iofuzz.repro.qtest_run import ops_answered

    ends = [1, 3, 5, 6]  # a port op, two PCI config ops (two lines each), a port op
    assert [ops_answered(ends, lines) for lines in range(7)] == [0, 1, 1, 2, 2, 3, 4]


def test_fuzzer_scripts_with_write_and_clock_step_are_read_and_say_what_became_of_them():
    from avocado_iofuzz.model.program import SPACE_MMIO

    notes: list[str] = []
    text = "outl 0xcf8 0x80001010\nwrite 0x40000 0x3 0x0a0b0c\nclock_step\nclock_step 1000\nwritel 0xfea00098 0x1\n"
    ops = parse_script(text, "fuzz.qtest", notes)
    assert ops == [
        Op("w", 0xCF8, 4, 0x80001010),
        Op("w", 0x40000, 1, 0x0A, SPACE_MMIO),
        Op("w", 0x40001, 1, 0x0B, SPACE_MMIO),
        Op("w", 0x40002, 1, 0x0C, SPACE_MMIO),
        Op("w", 0xFEA00098, 4, 0x1, SPACE_MMIO),
    ]
    assert len(notes) == 2 and "writeb per byte" in notes[0] and "no qtest accelerator" in notes[1]


def test_a_paced_feed_cuts_the_script_into_pieces_and_loses_no_byte():
    payload = format_script([Op("w", 0x70, 1, n & 0xFF) for n in range(1000)]).encode()
    cut = pieces(payload, Pacing(4096, 0.0005))
    assert b"".join(cut) == payload
    assert all(len(piece) == 4096 for piece in cut[:-1]) and 0 < len(cut[-1]) <= 4096
    assert len(cut) == -(-len(payload) // 4096)
    assert pieces(payload, None) == [payload]  # unpaced: one write, as fast as QEMU reads


def test_running_clock_replays_are_paced_by_default_and_pacing_is_checked():
    assert RUNNING_CLOCK_PACING.pause > 0 and RUNNING_CLOCK_PACING.piece >= 1024
    with pytest.raises(ValueError, match="piece >= 1 byte and pause >= 0 s"):
        Pacing(0, 0.001)
    with pytest.raises(ValueError, match="pause >= 0"):
        Pacing(4096, -1.0)
