"""Host side of the executor protocol: command building and console line parsing."""

from __future__ import annotations

import shlex
from dataclasses import replace

import pytest

from avocado_iofuzz.executor.protocol import (
    Denied,
    Done,
    ExecError,
    Hang,
    Progress,
    Ready,
    executor_command,
    format_dry_run_op,
    inflight_window,
    parse_dry_run_op,
    parse_line,
    range_argument,
)
from avocado_iofuzz.model.program import Op, RangePlan, plan_ranges

PLANS = plan_ranges(77, [(0x60, 0x64, "keyboard"), (0x70, 0x71, "rtc"), (0x1F0, 0x1F7, "ide")], 4)


def test_command_lists_every_element():
    argv = shlex.split(executor_command(PLANS, report_every=512))
    assert argv == [
        "/usr/bin/iofuzz-exec",
        "--seed",
        "77",
        "--fuzz-count",
        "4",
        "--report-every",
        "512",
        "0:0x60-0x64",
        "1:0x70-0x71",
        "2:0x1f0-0x1f7",
    ]


def test_command_with_resume_hang_and_width():
    plans = [PLANS[1], RangePlan(2, 0x1F0, 0x1F7, "ide", 77, 4, width=2)]
    argv = shlex.split(
        executor_command(plans, report_every=8, resume=(1, 3), hang_at=(2, 5), binary="/bin/x y", dry_run=True)
    )
    assert argv[0] == "/bin/x y"
    assert "--dry-run" in argv
    assert argv[argv.index("--resume") + 1] == "1:3"
    assert argv[argv.index("--hang-at") + 1] == "2:5"
    assert argv[-2:] == ["1:0x70-0x71", "2:0x1f0-0x1f7/2"]


def test_range_argument_names_index_and_width():
    assert range_argument(RangePlan(12, 0xCF8, 0xCFF, "pci", 1, 1, width=4)) == "12:0xcf8-0xcff/4"


def test_range_argument_names_space_and_own_fuzz_count():
    mmio = RangePlan(3, 0xFEBC0000, 0xFEBC0FFF, "0000:00:02.0 BAR0", 1, 9, width=8, space="mmio")
    pci = RangePlan(4, 0x10000, 0x100FF, "0000:00:02.0", 1, 2, width=4, space="pci")
    assert range_argument(mmio) == "3:mmio:0xfebc0000-0xfebc0fff/8"
    assert range_argument(mmio, fuzz_count=9) == "3:mmio:0xfebc0000-0xfebc0fff/8"
    assert range_argument(mmio, fuzz_count=2) == "3:mmio:0xfebc0000-0xfebc0fff/8,9"
    assert range_argument(pci, fuzz_count=9) == "4:pci:0x10000-0x100ff/4,2"


def test_command_gives_each_plan_its_fuzz_count_and_check_mode():
    plans = [PLANS[0], RangePlan(1, 0x1000, 0x100F, "m", 77, 11, width=4, space="mmio")]
    argv = shlex.split(executor_command(plans, check=True))
    assert "--check" in argv
    assert argv[argv.index("--fuzz-count") + 1] == "4"
    assert argv[-2:] == ["0:0x60-0x64", "1:mmio:0x1000-0x100f/4,11"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"plans": []}, "no range plans"),
        ({"plans": [PLANS[0], PLANS[0]]}, "range index 0 appears twice"),
        ({"report_every": 0}, "report_every must be within"),
        ({"resume": (9, 0)}, "resume names range 9"),
        ({"resume": (0, PLANS[0].op_count + 1)}, "resume op 31 is outside"),
        ({"hang_at": (0, PLANS[0].op_count)}, "hang_at op 30 is outside"),
        ({"resume": (1, 4), "hang_at": (0, 9)}, "before resume"),
        ({"resume": (1, 4), "hang_at": (1, 3)}, "before resume"),
        ({"limit_loop": True, "hang_at": (0, 1)}, "does not combine"),
        ({"bare_loop": True, "hang_at": (0, 1)}, "does not combine"),
        ({"bare_loop": True, "limit_loop": True}, "exclusive"),
        ({"bare_loop": True, "dry_run": True}, "does not combine with dry_run"),
        ({"bare_loop": True, "plans": [RangePlan(0, 0x1000, 0x1003, "m", 77, 4, space="mmio")]}, "port I/O only"),
        ({"check": True, "dry_run": True}, "check combines with none"),
    ],
)
def test_command_validation(kwargs, message):
    args = {"plans": PLANS, "report_every": 100} | kwargs
    with pytest.raises(ValueError, match=message):
        executor_command(**args)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("@IOFUZZ READY 1 3\n", Ready(1, 3)),
        ("@P 2 4096\r\n", Progress(2, 4096)),
        ("\x1b[6n@P 0 0\r", Progress(0, 0)),
        ("/ # \x1b[6n@DONE 123", Done(123)),
        ("[   12.345678] @HANG 1 77", Hang(1, 77)),
        (
            "@ERR /proc/cmdline lacks iofuzz.guest=1: refusing  \r\n",
            ExecError("/proc/cmdline lacks iofuzz.guest=1: refusing"),
        ),
        ("\x1b[?2004l@DONE 5\x1b[?2004h", Done(5)),
        (
            "@DENIED 3 cannot open /dev/mem: Operation not permitted\r",
            Denied(3, "cannot open /dev/mem: Operation not permitted"),
        ),
        ("@DENIED x no", None),
        # not protocol lines: shell echo, partial or mangled marks, other text
        ("/usr/bin/iofuzz-exec --seed 1 --fuzz-count 1 0:0x60-0x64", None),
        ("@P 1", None),
        ("@P 1 2 3", None),
        ("@P one 2", None),
        ("mail@P 1 2", None),
        ("@P 0 40[   1.2] kernel says hi", None),
        ("", None),
    ],
)
def test_parse_line(line, message):
    assert parse_line(line) == message


def test_dry_run_op_line_round_trip():
    op = Op("w", 0x3F8, 1, 0xA5)
    line = format_dry_run_op(4, 17, op)
    assert line == "4 17 w 0x3f8 1 0xa5"
    assert parse_dry_run_op(line) == (4, 17, op)
    assert format_dry_run_op(0, 0, Op("r", 0x60, 1, 0)) == "0 0 r 0x60 1 0x0"
    with pytest.raises(ValueError, match="not a dry-run op line"):
        parse_dry_run_op("4 17 x 0x3f8 1 0xa5")
    with pytest.raises(ValueError, match="not a dry-run op line"):
        parse_dry_run_op("4 17 w 0xzz 1 0xa5")
    assert parse_dry_run_op("1 2 w 0xfebc0000 8 0x1", space="mmio") == (1, 2, Op("w", 0xFEBC0000, 8, 1, "mmio"))


def test_inflight_window():
    plan = RangePlan(0, 0x0, 0xFF, "big", 1, 10)  # 3072 ops
    assert inflight_window(plan, 0, 1000) == (0, 1000)
    assert inflight_window(plan, 13, 1000) == (13, 1000)  # after a resume at 13
    assert inflight_window(plan, 3000, 1000) == (3000, 3072)
    assert inflight_window(plan, 3072, 1000) == (3072, 3072)
    with pytest.raises(ValueError, match="ops_done 3073 is outside"):
        inflight_window(plan, 3073, 1000)


def test_a_range_whose_seed_differs_from_the_first_carries_its_own():
    """Guided rounds: every batch its own seed (``@S``); a blind command has no ``@`` and is as before."""
    plans = [PLANS[0], replace(PLANS[1], seed=2**64 - 1), replace(PLANS[2], seed=78, fuzz_count=9, pause_every=64,
                                                                   pause_us=100)]  # fmt: skip
    argv = shlex.split(executor_command(plans, report_every=512))
    assert argv[1:3] == ["--seed", "77"]
    assert argv[-3:] == ["0:0x60-0x64", f"1:0x70-0x71@{2**64 - 1}", "2:0x1f0-0x1f7,9@78~64:100"]
    assert "@" not in executor_command(PLANS)
    assert range_argument(PLANS[1], 4, 77) == "1:0x70-0x71" and range_argument(PLANS[1], 4) == "1:0x70-0x71"
