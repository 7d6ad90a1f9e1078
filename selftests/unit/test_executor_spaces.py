"""The C executor's MMIO and PCI config ranges: same ops as program.py, per-range fuzz counts.

Only --dry-run runs here (and --check, which refuses on a host without the
guest marker before it maps or opens anything).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avocado_iofuzz.executor.protocol import (
    ExecError,
    executor_command,
    format_dry_run_op,
    parse_dry_run_op,
    parse_line,
)
from avocado_iofuzz.model.program import SPACE_MMIO, SPACE_PCI, SPACE_PIO, RangePlan


def dry_run(executor: Path, plans: list[RangePlan], **kwargs) -> list[str]:
    command = executor_command(plans, binary=str(executor), dry_run=True, **kwargs)
    result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if not line.startswith("@")]


def expected_lines(plans: list[RangePlan]) -> list[str]:
    return [format_dry_run_op(p.index, i, op) for p in plans for i, op in enumerate(p.ops())]


MIXED = [
    RangePlan(0, 0x70, 0x71, "rtc", seed=11, fuzz_count=3),
    RangePlan(1, 0xFEBC0000, 0xFEBC003F, "0000:00:02.0 BAR0", seed=11, fuzz_count=5, width=8, space=SPACE_MMIO),
    RangePlan(2, 0xFED00000, 0xFED0001F, "HPET 0", seed=11, fuzz_count=0, width=1, space=SPACE_MMIO),
    RangePlan(3, 0x10000, 0x100FF, "0000:00:02.0", seed=11, fuzz_count=2, width=4, space=SPACE_PCI),
    RangePlan(4, 0xFFFF000, 0xFFFF001, "0000:ff:1f.7 tail", seed=11, fuzz_count=9, width=2, space=SPACE_PCI),
]


def test_mixed_spaces_and_fuzz_counts_identical_to_python(executor):
    assert dry_run(executor, MIXED, report_every=7) == expected_lines(MIXED)


def test_dry_run_lines_parse_back_into_the_plans_ops(executor):
    lines = dry_run(executor, MIXED)
    parsed = [parse_dry_run_op(line, MIXED[int(line.split()[0])].space)[2] for line in lines]
    assert parsed == [op for plan in MIXED for op in plan.ops()]
    assert {op.space for op in parsed} == {SPACE_PIO, SPACE_MMIO, SPACE_PCI}
    assert max(op.value for op in parsed if op.width == 8) > 0xFFFFFFFF  # 8-byte values use all 64 bits


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**64 - 1),
    width=st.sampled_from([1, 2, 4, 8]),
    page=st.integers(0, 2**40),
    slots=st.integers(1, 12),
    fuzz_count=st.integers(0, 4),
)
def test_mmio_random_plans_match(executor, seed, width, page, slots, fuzz_count):
    start = page * 4096
    plan = RangePlan(0, start, start + slots * width - 1, "m", seed, fuzz_count, width=width, space=SPACE_MMIO)
    assert dry_run(executor, [plan]) == expected_lines([plan])


def test_check_refuses_before_any_setup_without_the_guest_marker(executor):
    # the host has no iofuzz.guest=1 on its command line: nothing may be mapped or opened
    command = executor_command(MIXED, binary=str(executor), check=True)
    result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    messages = [parse_line(line) for line in result.stdout.splitlines()]
    assert messages == [ExecError(messages[0].message)]
    assert "lacks iofuzz.guest=1" in messages[0].message


def test_long_command_passes_ranges_as_short_heredoc_lines(executor):
    plans = [
        RangePlan(i, 0x10000 * i, 0x10000 * i + 0xFF, f"r{i}", seed=3, fuzz_count=1, width=4, space=SPACE_MMIO)
        for i in range(120)
    ]
    command = executor_command(plans, binary=str(executor), dry_run=True)
    lines = command.split("\n")
    assert len(lines) > 3
    assert "--ranges-stdin" in lines[0] and lines[-1] == "IOFUZZ_RANGES"
    assert max(len(line) for line in lines) < 1024  # what busybox ash's line editor holds
    result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-500:]
    ops = [line for line in result.stdout.splitlines() if not line.startswith("@")]
    assert ops == expected_lines(plans)


def test_short_command_stays_one_line():
    assert "\n" not in executor_command(MIXED)
