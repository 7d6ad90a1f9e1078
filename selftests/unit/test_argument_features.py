"""Argument features: reading trace arguments back from log lines, bounding their values, the [arguments] table."""

from __future__ import annotations

import logging
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from avocado_iofuzz.coverage.arguments import (
    EXACT_BELOW,
    MAX_ARGUMENTS,
    MAX_VALUES,
    OVERFLOW,
    ArgumentReader,
    event_of_key,
    parse_table,
    qualified,
    spell,
)
from avocado_iofuzz.coverage.backend import list_events
from avocado_iofuzz.coverage.catalog import Catalog
from avocado_iofuzz.coverage.collector import CoverageCollector
from avocado_iofuzz.coverage.formats import find_formats_file, line_pattern, parse_declarations, read_value
from avocado_iofuzz.guided.features import event_of, features_of
from avocado_iofuzz.model.program import plan_ranges

QEMU = shutil.which("qemu-system-x86_64")
FORMATS = find_formats_file(QEMU) if QEMU else None
needs_formats = pytest.mark.skipif(FORMATS is None, reason="QEMU's trace-events-all is not installed")
LINES = Path(__file__).parent / "data" / "trace-lines-qemu72.log"
_PREFIX = re.compile(r"^\d+@\d+\.\d+:")

# declarations written for these tests, in trace-events syntax: each exercises one corner of the formats
OWN_DECLARATIONS = r"""
# a comment, then a blank line

dev_status(void *dev, uint8_t val) "dev %p val %u"
dev_reg(uint64_t index, unsigned size, uint64_t val) "reg 0x%"PRIx64" size %u = 0x%" PRIx64
dev_name(int port, const char *reg) "[%d] \"%s\" 100%%"
dev_alt(uint32_t bits) "bits %#x"
dev_star(int width, int val) "%*d"
dev_float(double f) "%f"
dev_short(int a, int b) "only %d"
vcpu dev_vcpu(int n) "n=%d"
disable dev_off(int n) "n=%d"
not a declaration at all
"""


def own() -> dict:
    return parse_declarations(OWN_DECLARATIONS)


def split(line: str) -> tuple[str, str]:
    """A log line's event and argument text, as the collector splits it."""
    name, _, args = _PREFIX.sub("", line).partition(" ")
    return name, args


# -- the formats ---------------------------------------------------------------------------------
def test_declarations_give_argument_names_types_and_the_format_with_macros_resolved():
    declarations = own()
    assert set(declarations) == {"dev_status", "dev_reg", "dev_name", "dev_alt", "dev_star", "dev_float",
                                 "dev_short", "dev_vcpu", "dev_off"}  # fmt: skip
    reg = declarations["dev_reg"]
    assert [a.name for a in reg.arguments] == ["index", "size", "val"]
    assert reg.format == "reg 0x%x size %u = 0x%x"
    assert declarations["dev_status"].argument("dev").is_pointer
    assert not declarations["dev_name"].argument("reg").is_pointer  # a string is text, not an address
    assert declarations["dev_name"].format == '[%d] "%s" 100%%'


def test_a_format_reads_its_arguments_back_in_order():
    declarations = own()
    reg = line_pattern(declarations["dev_reg"])
    match = reg.regex.match("reg 0x1c size 4 = 0xdeadbeef")
    assert match.groups() == ("1c", "4", "deadbeef")
    assert reg.conversions == {"index": "x", "size": "u", "val": "x"}
    name = line_pattern(declarations["dev_name"])
    assert name.regex.match('[-1] "Px CMD" 100%').groups() == ("-1", "Px CMD")  # a string may hold spaces
    assert line_pattern(declarations["dev_alt"]).regex.match("bits 0x1f")[1] == "0x1f"
    assert line_pattern(declarations["dev_alt"]).regex.match("bits 0")[1] == "0"  # %#x of 0 prints no 0x
    assert line_pattern(declarations["dev_status"]).regex.match("dev (nil) val 7")[2] == "7"
    assert read_value("1c", "x") == 0x1C and read_value("0x1f", "x") == 0x1F and read_value(" -3", "d") == -3


def test_formats_that_cannot_be_read_back_exactly_give_no_pattern():
    declarations = own()
    assert line_pattern(declarations["dev_star"]) is None  # a width taken from an argument
    assert line_pattern(declarations["dev_float"]) is None
    assert line_pattern(declarations["dev_short"]) is None  # fewer conversions than arguments


@needs_formats
def test_nearly_every_declaration_of_the_installed_qemu_has_a_pattern():
    declarations = parse_declarations(FORMATS.read_text(encoding="utf-8"))
    patterns = [line_pattern(d) for d in declarations.values()]
    assert len(declarations) > 4000  # QEMU 7.2: 5078
    assert sum(p is None for p in patterns) <= 10  # QEMU 7.2: 2, a %*d and a float


# -- real lines ------------------------------------------------------------------------------------
EXPECTED_KEYS = {  # the captured lines in file order -> their qualified keys (None: not a tabled event)
    "virtio_set_status(val=0x0)", "virtio_set_status(val=0x3)", "virtio_set_status(val=0xb7)",
    "virtio_queue_notify(n=0x0)",
    "pci_nvme_mmio_write(addr=0x1000)", "pci_nvme_mmio_write(addr=0x28)", "pci_nvme_mmio_doorbell_sq(sqid=0x0)",
    "pci_nvme_admin_cmd(opcode=0x6)", "pci_nvme_admin_cmd(opcode=0x5)", "pci_nvme_create_sq(sqid=0x1)",
    "pci_nvme_identify(cns=0x1)", "pci_nvme_io_cmd(opcode=0x2)",
    "ahci_mem_write_host(reg=GHC)", "ahci_port_write(port=0x0,offset=0x8)", "ahci_trigger_irq(port=0x0,name=DHRS)",
    "ahci_port_read(port=0x0,offset=0x18)",
}  # fmt: skip


@needs_formats
def test_real_qemu_lines_give_the_qualified_keys_of_the_table():
    table = Catalog.load().arguments
    lines = [split(line) for line in LINES.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    reader = ArgumentReader.from_file(table, {name for name, _ in lines}, FORMATS)
    keys = [reader.key(name, args) for name, args in lines]
    assert {k for k in keys if k is not None} == EXPECTED_KEYS
    untabled = [name for (name, _), key in zip(lines, keys, strict=True) if key is None]
    assert untabled == ["memory_region_ops_write", "serial_write"]  # not in the table: no key


@needs_formats
def test_garbage_lines_give_no_key_and_do_not_raise():
    table = Catalog.load().arguments
    reader = ArgumentReader.from_file(table, ["virtio_set_status", "pci_nvme_admin_cmd", "ahci_port_write"], FORMATS)
    garbage = [
        ("virtio_set_status", ""),  # the event name alone (a line cut at its first space)
        ("virtio_set_status", "vdev 0x5626cbdeb700 val"),  # cut short
        ("virtio_set_status", "vdev 0x5626cbdeb700 val 12x"),
        ("virtio_set_status", "vdev 0x5626cbdeb700 val 3 trailing"),
        ("pci_nvme_admin_cmd", "cid 0 sqid 0 opc 0xZZ opname 'X'"),
        ("ahci_port_write", "\x00\xff\ufffd garbage"),
        ("not_tabled", "val 3"),
    ]
    assert [reader.key(name, args) for name, args in garbage] == [None] * len(garbage)
    assert reader.seen == {}  # nothing unreadable takes up one of the MAX_VALUES


# -- bounding -------------------------------------------------------------------------------------------
def test_values_spell_small_integers_exactly_and_collapse_addresses_and_odd_strings():
    assert spell(0xF) == "0xf"
    assert spell(EXACT_BELOW - 1) == hex(EXACT_BELOW - 1)
    assert spell(EXACT_BELOW) == "2^16"
    assert spell(0x7FDD000) == "2^26" and spell(0x7FD8000) == "2^26"  # two queue addresses: one feature
    assert spell(-1) == "-0x1" and spell(-(1 << 40)) == "-2^40"
    assert spell("PxCMD") == "PxCMD" and spell("NVME_ADM_CMD_IDENTIFY") == "NVME_ADM_CMD_IDENTIFY"
    assert spell("") == OVERFLOW and spell("two words") == OVERFLOW and spell("x" * 25) == OVERFLOW
    assert spell("a(b)#c") == OVERFLOW  # never a character that would break a feature's spelling


def test_an_event_argument_takes_at_most_max_values_distinct_values_then_one_overflow_key():
    reader = ArgumentReader.for_events({"dev_status": ("val",)}, ["dev_status"], own())
    keys = [reader.key("dev_status", f"dev 0x1 val {v}") for v in range(MAX_VALUES + 20)]
    assert keys[:MAX_VALUES] == [f"dev_status(val={v:#x})" for v in range(MAX_VALUES)]
    assert set(keys[MAX_VALUES:]) == {f"dev_status(val={OVERFLOW})"}
    assert reader.key("dev_status", "dev 0x1 val 3") == "dev_status(val=0x3)"  # a value seen before keeps its key
    assert len(reader.seen[("dev_status", "val")]) == MAX_VALUES


def test_keys_and_features_name_their_event():
    key = qualified("ahci_port_write", [("port", "0x1"), ("offset", "0x38")])
    assert key == "ahci_port_write(port=0x1,offset=0x38)"
    assert event_of_key(key) == "ahci_port_write" and event_of_key("ahci_port_write") == "ahci_port_write"
    features = features_of({"virtio_set_status": 5, "virtio_set_status(val=0xf)": 1, "virtio_set_status(val=0x3)": 4})
    assert features == {"virtio_set_status#4", "virtio_set_status(val=0xf)#1", "virtio_set_status(val=0x3)#4"}
    assert {event_of(f) for f in features} == {"virtio_set_status"}


# -- the table --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('"bad name!" = ["val"]', "not a trace event name"),
        ('virtio_set_status = "val"', "must be a non-empty list of argument names"),
        ("virtio_set_status = []", "must be a non-empty list of argument names"),
        ('virtio_set_status = ["va l"]', "must be a non-empty list of argument names"),
        ('virtio_set_status = ["val", "val"]', "names an argument twice"),
        ('ahci_port_write = ["port", "offset", "val"]', f"at most {MAX_ARGUMENTS}"),
    ],
)
def test_a_bad_table_entry_is_an_error_that_names_it(entry, message):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        parse_table(tomllib.loads(f"[arguments]\n{entry}\n"))
    event = entry.split(" = ")[0].strip('"')
    assert f"[arguments] {event}" in str(err.value)


def test_the_arguments_section_must_be_a_table():
    with pytest.raises(ValueError, match=r"\[arguments\] must be a table"):
        parse_table({"arguments": ["virtio_set_status"]})


def test_an_entry_this_qemu_cannot_serve_is_left_out_with_a_warning_naming_it(caplog):
    table = {"dev_status": ("dev",), "dev_reg": ("register",), "dev_gone": ("val",), "dev_star": ("val",),
             "dev_name": ("reg",)}  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="avocado.test.iofuzz"):
        reader = ArgumentReader.for_events(table, list(table), own())
    assert set(reader.readers) == {"dev_name"}
    text = caplog.text
    assert "dev_status left out: argument 'dev' is a host pointer" in text
    assert "dev_reg left out: it has no argument 'register' (it has index, size, val)" in text
    assert "dev_gone left out: this QEMU's trace-events-all does not declare it" in text
    assert "dev_star left out: its format '%*d' cannot be read back" in text


def test_only_the_watched_events_of_the_table_get_a_reader_and_no_formats_file_means_none():
    table = {"dev_status": ("val",), "dev_name": ("reg",)}
    assert set(ArgumentReader.for_events(table, ["dev_status", "other"], own()).readers) == {"dev_status"}
    assert ArgumentReader.from_file(table, ["dev_status"], None).readers == {}


@needs_formats
def test_every_table_entry_is_an_event_of_this_qemu_with_those_arguments_none_a_pointer():
    table = Catalog.load().arguments
    events = set(list_events(QEMU))
    assert [e for e in table if e not in events] == []
    declarations = parse_declarations(FORMATS.read_text(encoding="utf-8"))
    reader = ArgumentReader.for_events(table, table, declarations)
    assert set(reader.readers) == set(table)  # none left out: each argument declared, readable, not a pointer


# -- the collector ------------------------------------------------------------------------------------
PLANS = plan_ranges(1, [(0x0, 0x3, "BAR0")], 4)
TABLE = """
[bus]
events = []
[devices.dev]
prefixes = ["dev_"]
[arguments]
dev_status = ["val"]
"""


class LineQemu:
    """QMP state and a trace file the test writes lines to; only enabled events and the console get written."""

    def __init__(self, path: Path):
        self.path = path
        path.write_text("", encoding="utf-8")
        self.enabled: set[str] = set()

    def qmp(self, command, arguments):
        name = arguments["name"].rstrip("*")
        if arguments["enable"]:
            self.enabled.add(name)
        else:
            self.enabled.discard(name)

    def write(self, *lines: str) -> None:
        with open(self.path, "a", encoding="utf-8", errors="surrogateescape") as f:
            for line in lines:
                if any(line.startswith(e) for e in self.enabled):
                    f.write(line + "\n")

    def mark(self, range_index: int, ops_done: int) -> None:
        self.write(*(f"serial_write write addr 0x00 val 0x{b:02x}" for b in f"@P {range_index} {ops_done}\n".encode()))


def counting_collector(tmp_path: Path, count_hits: bool = True) -> tuple[CoverageCollector, LineQemu]:
    qemu = LineQemu(tmp_path / "trace.log")
    catalog = Catalog.load(TABLE)
    selection = catalog.select(["dev"], ["BAR0"], ["dev_status", "dev_reg", "serial_write"])
    reader = ArgumentReader.for_events(catalog.arguments, selection.events, own())
    col = CoverageCollector(selection, qemu.path, qemu.qmp, sleep=lambda s: None, count_hits=count_hits,
                            arguments=reader)  # fmt: skip
    return col, qemu


def test_the_collector_counts_qualified_keys_beside_the_name_and_reaches_names_only(tmp_path):
    col, qemu = counting_collector(tmp_path)
    col.start(PLANS)
    qemu.mark(0, 0)
    qemu.write("dev_status dev 0x55 val 1", "dev_status dev 0x55 val 3", "dev_status dev 0x55 val 3",
               "dev_status dev 0x55 val", "dev_status \udcff\udcfe", "dev_reg reg 0x4 size 4 = 0x1")  # fmt: skip
    qemu.mark(0, PLANS[0].op_count)
    col.settle()
    assert col.hits == {0: {"dev_status": 5, "dev_status(val=0x1)": 1, "dev_status(val=0x3)": 2, "dev_reg": 1}}
    assert set(col.first_seen) == {"dev_status", "dev_reg"}  # garbage lines count by name, reached by name


def test_a_blind_collector_reads_no_arguments(tmp_path):
    col, qemu = counting_collector(tmp_path, count_hits=False)
    assert col.arguments is None
    col.start(PLANS)
    qemu.mark(0, 0)
    qemu.write("dev_status dev 0x55 val 1")
    qemu.mark(0, PLANS[0].op_count)
    col.settle()
    assert col.hits == {} and set(col.first_seen) == {"dev_status"}


def test_declarations_can_be_limited_to_the_events_a_run_reads():
    assert set(parse_declarations(OWN_DECLARATIONS, only={"dev_reg", "dev_vcpu", "absent"})) == {"dev_reg", "dev_vcpu"}
