"""fuzz_kinds: params, targets from captured listings, budget shares, planning order, refused ranges."""

from __future__ import annotations

from pathlib import Path

import pytest

from avocado_iofuzz.campaign.guest_access import check_access, read_listings
from avocado_iofuzz.executor.protocol import executor_command
from avocado_iofuzz.model.kinds import (
    AccessRefused,
    KindParams,
    Listings,
    check_output,
    choose_targets,
    drop_refused,
    kind_fuzz_counts,
    plan_kinds,
    renumber,
    units,
)
from avocado_iofuzz.model.pci import PCI_LISTING_COMMAND
from avocado_iofuzz.model.program import RangePlan
from avocado_iofuzz.model.ranges import RangeError, fuzz_targets
from avocado_iofuzz.model.target import Target
from avocado_iofuzz.vt.iofuzz_params import parse_kinds, read_kinds
from avocado_iofuzz.vt.params import ParamError

DATA = Path(__file__).parent / "data"
LISTINGS = {
    m: Listings((DATA / f"iomem-{m}-devices.txt").read_text(), (DATA / f"pci-resources-{m}-devices.txt").read_text())
    for m in ("pc", "q35")
}
PIO = fuzz_targets((DATA / "ioports-pc-devices.txt").read_text())
ALL = {"fuzz_kinds": "pio mmio pci"}


def test_defaults_keep_the_port_only_run():
    kinds = read_kinds({})
    assert kinds.kinds == ["pio"]
    assert (kinds.pio_widths, kinds.mmio_widths, kinds.pci_widths, kinds.mmio_max_size, kinds.pci_config_size) == (
        (1, 2, 4),
        (4,),
        (4,),
        0x4000,
        0x100,
    )
    assert "Local APIC" in kinds.skip_iomem and kinds.skip_pci_config == "8086:29c0@0x60-0x67"


def test_kinds_parse_weights_and_keep_planning_order():
    assert parse_kinds("pci mmio:3, pio") == {"pci": 1, "mmio": 3, "pio": 1}
    assert parse_kinds("pci mmio pio") == {"pci": 0, "mmio": 0, "pio": 0}  # no weights at all
    assert read_kinds({"fuzz_kinds": "pci mmio"}).kinds == ["mmio", "pci"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"fuzz_kinds": "pio dma"}, r"param fuzz_kinds: unknown kind 'dma'"),
        ({"fuzz_kinds": "pio pio"}, r"param fuzz_kinds: kind 'pio' given twice"),
        ({"fuzz_kinds": "mmio:0"}, r"param fuzz_kinds: 'mmio:0': the weight"),
        ({"fuzz_kinds": "mmio:x"}, r"param fuzz_kinds: 'mmio:x': the weight"),
        ({"fuzz_kinds": " "}, r"param fuzz_kinds: empty"),
        ({"mmio_widths": "3"}, r"param mmio_widths: '3' is not an access width"),
        ({"pci_widths": "8"}, r"param pci_widths: '8' is not an access width in bytes \(1, 2, 4\)"),
        ({"mmio_widths": ""}, r"param mmio_widths: empty"),
        ({"mmio_max_size": "64k"}, r"param mmio_max_size = '64k': not an integer"),
        ({"skip_mmio": "0xfed0000g"}, r"param skip_mmio: '0xfed0000g' is not an address"),
        ({"extra_iomem": "0x1000-0x1fff"}, r"param extra_iomem: .* lacks ':NAME'"),
        ({"skip_pci_config": "8086:29c0"}, r"param skip_pci_config: '8086:29c0' is not PATTERN@"),
    ],
)
def test_bad_params_name_the_param(params, message):
    with pytest.raises(ParamError, match=message):
        read_kinds(params)


def test_targets_of_every_kind_from_captured_listings():
    kinds = read_kinds(ALL)
    targets = choose_targets(kinds, LISTINGS["pc"], PIO)
    assert [t.space for t in targets] == sorted((t.space for t in targets), key=["pio", "mmio", "pci"].index)
    by_space = {s: [t.name for t in targets if t.space == s] for s in ("pio", "mmio", "pci")}
    assert "rtc0" in by_space["pio"]
    assert by_space["mmio"][-1] == "HPET 0" and "0000:00:02.0 8086:100e BAR0" in by_space["mmio"]
    assert by_space["pci"][0] == "0000:00:00.0 8086:1237" and len(by_space["pci"]) == 7


def test_only_patterns_focus_on_one_device_in_both_kinds():
    kinds = read_kinds(ALL | {"only_iomem": "8086:10d3", "only_pci": "8086:10d3"})
    targets = choose_targets(kinds, LISTINGS["q35"], ())
    assert {t.name.split(" BAR")[0] for t in targets} == {"0000:00:01.0 8086:10d3"}
    missing = read_kinds(ALL | {"only_pci": "1b36:0010"})
    with pytest.raises(RangeError, match=r"only_pci: no PCI function matches \['1b36:0010'\]"):
        choose_targets(missing, LISTINGS["q35"], ())


def test_units_trim_to_aligned_slots_per_width():
    kinds = read_kinds({"fuzz_kinds": "mmio pci", "mmio_widths": "8 2", "pci_widths": "4"})
    targets = [
        Target("mmio", 0x1002, 0x1013, "odd"),  # 8-byte slots: 0x1008-0x100f only
        Target("mmio", 0x2001, 0x2006, "tiny"),  # no 8-byte slot at all
        Target("pci", 0x68, 0xFE, "cut"),
    ]
    assert [(u.target.name, u.width, u.start, u.end) for u in units(targets, kinds)] == [
        ("odd", 8, 0x1008, 0x100F),
        ("odd", 2, 0x1002, 0x1013),
        ("tiny", 2, 0x2002, 0x2005),
        ("cut", 4, 0x68, 0xFB),
    ]


def test_each_kind_gets_its_weighted_share_of_the_budget():
    kinds = read_kinds({"fuzz_kinds": "pio mmio:2 pci"})
    targets = [
        Target("pio", 0x60, 0x63, "p"),  # 4 + 2 + 1 slots at 1, 2 and 4 bytes
        Target("mmio", 0x1000, 0x13FF, "m"),  # 256 slots of 4 bytes
        Target("pci", 0x0, 0x3F, "c"),  # 16 slots
    ]
    counts = kind_fuzz_counts(units(targets, kinds), kinds.weights, 10)
    budget = 10 * (7 + 256 + 16)
    assert counts == {"pio": budget // 4 // 7, "mmio": budget // 2 // 256, "pci": budget // 4 // 16}
    plans = plan_kinds(7, 10, kinds, targets)
    shares = {"pio": budget // 4, "mmio": budget // 2, "pci": budget // 4}
    for kind, share in shares.items():
        # whole writes per slot: a kind's fuzz ops fall short of its share by less than one per slot
        slots = sum(p.slots for p in plans if p.space == kind)
        assert share - slots < sum(p.fuzz_count * p.slots for p in plans if p.space == kind) <= share


def test_without_weights_every_slot_of_every_kind_gets_fuzz_count():
    kinds = read_kinds(ALL)
    plans = plan_kinds(2, 7, kinds, choose_targets(kinds, LISTINGS["pc"], PIO))
    assert {p.space for p in plans} == {"pio", "mmio", "pci"}
    assert {p.fuzz_count for p in plans} == {7}


def test_one_kind_means_fuzz_count_per_slot_and_zero_means_none():
    kinds = read_kinds({})
    plans = plan_kinds(1, 5, kinds, [Target("pio", 0x60, 0x64, "k"), Target("pio", 0x70, 0x71, "r")])
    assert [(p.name, p.fuzz_count) for p in plans] == [
        ("k (1-byte)", 5),
        ("k (2-byte)", 5),
        ("k (4-byte)", 5),
        ("r (1-byte)", 5),
        ("r (2-byte)", 5),
    ]
    assert kind_fuzz_counts(units([Target("pio", 0, 1, "x")], kinds), {"pio": 1}, 0) == {"pio": 0}
    # a small kind next to a huge one still gets at least one write per slot
    tiny = read_kinds({"fuzz_kinds": "pio mmio:1000"})
    counts = kind_fuzz_counts(units([Target("pio", 0, 1, "p"), Target("mmio", 0, 0xFFFF, "m")], tiny), tiny.weights, 1)
    assert counts["pio"] >= 1


def test_plans_are_numbered_in_kind_order_and_named_per_width():
    kinds = read_kinds({"fuzz_kinds": "pci mmio pio", "mmio_widths": "4 8"})
    targets = [Target("pci", 0x0, 0xFF, "host"), Target("mmio", 0x1000, 0x100F, "bar"), Target("pio", 0x60, 0x60, "k")]
    plans = plan_kinds(3, 1, kinds, targets)
    assert [(p.index, p.space, p.name, p.width) for p in plans] == [
        (0, "pio", "k (1-byte)", 1),  # pio_widths has three widths: every port plan says its own
        (1, "mmio", "bar (4-byte)", 4),
        (2, "mmio", "bar (8-byte)", 8),
        (3, "pci", "host", 4),
    ]


def test_renumber_keeps_every_op():
    plans = plan_kinds(
        9, 3, read_kinds(ALL), choose_targets(read_kinds(ALL), LISTINGS["pc"], PIO)
    )
    kept = renumber(plans[5:9])
    assert [p.index for p in kept] == [0, 1, 2, 3]
    assert [list(p.ops()) for p in kept] == [list(p.ops()) for p in plans[5:9]]


PLANS = [
    RangePlan(0, 0x60, 0x64, "keyboard", 1, 1),
    RangePlan(1, 0xFED00000, 0xFED003FF, "HPET 0", 1, 1, 4, "mmio"),
    RangePlan(2, 0xFEE00000, 0xFEE00FFF, "lapic", 1, 1, 4, "mmio"),
    RangePlan(3, 0x10000, 0x100FF, "0000:00:02.0 8086:100e", 1, 1, 4, "pci"),
]


def test_refused_ranges_are_left_out_and_the_rest_renumbered():
    output = (
        "iofuzz-exec --check ...\n"
        "@DENIED 2 cannot mmap 0xfee00000-0xfee00fff through /dev/mem: Operation not permitted\n"
        "@DONE 0\n"
    )
    kept, refusals = drop_refused(PLANS, check_output(output))
    assert [(p.index, p.name) for p in kept] == [(0, "keyboard"), (1, "HPET 0"), (2, "0000:00:02.0 8086:100e")]
    assert [(r.plan.name, r.reason) for r in refusals] == [
        ("lapic", "cannot mmap 0xfee00000-0xfee00fff through /dev/mem: Operation not permitted")
    ]


def test_a_kind_refused_entirely_is_a_cancel_with_the_kernels_reason():
    output = (
        "@DENIED 0 iopl(3) refused: Operation not permitted\n"
        "@DENIED 1 cannot open /dev/mem: Operation not permitted\n"
        "@DENIED 2 cannot open /dev/mem: Operation not permitted\n"
        "@DONE 0\n"
    )
    with pytest.raises(
        AccessRefused, match=r"refuses raw access \(pio: iopl\(3\) refused: .*; mmio: cannot open /dev/mem"
    ):
        drop_refused(PLANS, check_output(output))


def test_an_executor_error_during_the_check_is_no_cancel():
    with pytest.raises(RuntimeError, match=r"access check failed: /proc/cmdline lacks iofuzz\.guest=1"):
        check_output("@ERR /proc/cmdline lacks iofuzz.guest=1: not an iofuzz guest\n")


class FakeSession:
    """Answers the commands the kinds module sends, from captured listings."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers
        self.sent: list[str] = []

    def cmd_output(self, command: str, timeout: float = 60) -> str:
        self.sent.append(command)
        return self.answers.get(command, "")


def test_check_access_sends_the_check_command_and_listings_are_read_only_when_needed(tmp_path):
    command = executor_command(PLANS, check=True, binary="/x/exec")
    session = FakeSession({command: "@DENIED 2 nope: Operation not permitted\n@DONE 0\n"})
    assert [p.name for p in check_access(session, PLANS, "/x/exec")] == ["keyboard", "HPET 0", "0000:00:02.0 8086:100e"]
    assert session.sent == [command]

    session = FakeSession({"cat /proc/iomem": LISTINGS["pc"].iomem, PCI_LISTING_COMMAND: LISTINGS["pc"].pci})
    assert read_listings(session, read_kinds({}), tmp_path) == Listings("", "")
    assert session.sent == []
    assert read_listings(session, read_kinds({"fuzz_kinds": "pci"}), tmp_path) == Listings(
        "", LISTINGS["pc"].pci
    )
    assert read_listings(session, read_kinds(ALL), tmp_path) == LISTINGS["pc"]
    assert (tmp_path / "proc-iomem.txt").read_text() == LISTINGS["pc"].iomem


def test_only_pci_focuses_every_kind_on_the_device():
    pio = fuzz_targets((DATA / "ioports-q35-devices.txt").read_text(), extra_ioports="0x3c0-0x3df:vga-legacy")
    kinds = read_kinds(ALL | {"only_pci": "8086:10d3"})
    targets = choose_targets(kinds, LISTINGS["q35"], pio, pio_extra=["vga-legacy"])
    assert [(t.start, t.end) for t in targets if t.space == "pio"] == [(0x3C0, 0x3DF), (0xC040, 0xC05F)]
    assert {t.name for t in targets if t.space == "mmio"} == {f"0000:00:01.0 8086:10d3 BAR{i}" for i in (0, 1, 3)}
    assert [t.name for t in targets if t.space == "pci"] == ["0000:00:01.0 8086:10d3"]
    with pytest.raises(RangeError, match=r"only_pci: no PCI function matches \['1b36:0010'\]"):
        choose_targets(read_kinds({"only_pci": "1b36:0010"}), LISTINGS["q35"], pio)


def test_cfg_defaults_are_the_code_defaults():
    from avocado_iofuzz.vt.catalog import TestCatalog

    params = TestCatalog().variants("iofuzz")[0]
    assert read_kinds(params) == KindParams()


def test_weights_that_push_a_kind_past_the_executors_limit_name_fuzz_count():
    kinds = read_kinds({"fuzz_kinds": "pio:1 mmio:1"})
    targets = [Target("pio", 0x60, 0x60, "k"), Target("mmio", 0x1000, 0x4FFF, "bar")]  # 1 port, 4096 mmio slots
    with pytest.raises(RangeError) as err:
        plan_kinds(1, 2**31, kinds, targets)
    assert str(err.value).startswith("fuzz_count = 2147483648: with fuzz_kinds weights, pio gets ")
    assert "the in-guest executor's limit 4294967295" in str(err.value)
