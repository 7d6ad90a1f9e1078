"""The C executor computes exactly the ops of program.py and reports progress as documented.

Only --dry-run is ever run here: on the host the executor must not touch ports.
"""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from dry_run_model import python_lines
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avocado_iofuzz.executor import build
from avocado_iofuzz.executor.build import ExecutorBuildError, build_executor, build_key
from avocado_iofuzz.executor.protocol import (
    Done,
    ExecError,
    Hang,
    Progress,
    Ready,
    executor_command,
    parse_dry_run_op,
    parse_line,
)
from avocado_iofuzz.model.program import RangePlan, plan_ranges

RANGES = [(0x60, 0x64, "keyboard"), (0x70, 0x71, "rtc"), (0x3F8, 0x3FF, "serial")]


def run_dry(executor: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(executor), "--dry-run", *args], capture_output=True, text=True, timeout=60)


def run_plans(executor: Path, plans: list[RangePlan], **kwargs) -> list[str]:
    command = executor_command(plans, binary=str(executor), dry_run=True, **kwargs)
    assert "--dry-run" in command
    result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def op_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith("@")]


@pytest.mark.parametrize("seed", [0, 1, 0x7FFF_FFFF_FFFF_FFFF, 2**64 - 1, 123456789])
@pytest.mark.parametrize("fuzz_count", [0, 1, 7])
def test_c_ops_identical_to_python(executor, seed, fuzz_count):
    plans = plan_ranges(seed, RANGES, fuzz_count)
    assert "\n".join(op_lines(run_plans(executor, plans, report_every=16))) == "\n".join(python_lines(plans))


@pytest.mark.parametrize("resume", [(0, 0), (0, 7), (1, 0), (1, 9), (2, 17), (2, 80)])
def test_c_resume_identical_to_python(executor, resume):
    plans = plan_ranges(99, RANGES, 9)
    lines = op_lines(run_plans(executor, plans, report_every=8, resume=resume))
    assert lines == python_lines(plans, resume)
    assert parse_dry_run_op(lines[0])[:2] == resume


def test_c_wide_accesses_identical_to_python(executor):
    plans = [
        RangePlan(0, 0xCF8, 0xCFF, "pci", seed=5, fuzz_count=20, width=4),
        RangePlan(1, 0x1F0, 0x1F7, "ide", seed=5, fuzz_count=20, width=2),
    ]
    assert op_lines(run_plans(executor, plans, report_every=64)) == python_lines(plans)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seeds=st.lists(st.integers(0, 2**64 - 1), min_size=3, max_size=3), resume_at=st.integers(0, 2))
def test_c_per_range_seeds_identical_to_python(executor, seeds, resume_at):
    """Each range with its own seed (``@S``, a guided round's batches): the model's ops, also when resumed."""
    plans = [replace(plan, seed=seed) for plan, seed in zip(plan_ranges(0, RANGES, 5), seeds, strict=True)]
    assert op_lines(run_plans(executor, plans, report_every=16)) == python_lines(plans)
    resume = (plans[resume_at].index, 3)
    assert op_lines(run_plans(executor, plans, report_every=16, resume=resume)) == python_lines(plans, resume)


def test_c_large_range_identical_to_python(executor):
    plans = plan_ranges(2024, [(0x0, 0xFFF, "big")], 2)
    assert op_lines(run_plans(executor, plans, report_every=4096)) == python_lines(plans)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**64 - 1),
    fuzz_count=st.integers(0, 6),
    bounds=st.lists(st.tuples(st.integers(0, 0xFFC0), st.integers(0, 60)), min_size=1, max_size=4),
    report_every=st.integers(1, 50),
)
def test_c_matches_python_on_random_plans(executor, seed, fuzz_count, bounds, report_every):
    plans = plan_ranges(seed, [(s, s + n, f"r{i}") for i, (s, n) in enumerate(bounds)], fuzz_count)
    lines = run_plans(executor, plans, report_every=report_every)
    assert op_lines(lines) == python_lines(plans)
    assert progress_marks(lines) == expected_marks(plans, report_every)


def progress_marks(lines: list[str]) -> list[tuple[int, int]]:
    return [(m.range_index, m.ops_done) for m in map(parse_line, lines) if isinstance(m, Progress)]


def expected_marks(plans: list[RangePlan], k: int, resume: tuple[int, int] | None = None) -> list[tuple[int, int]]:
    """As documented: at the range's first op, at every multiple of k after it, at its end."""
    marks = []
    started = resume is None
    for plan in plans:
        first = 0
        if not started:
            if plan.index != resume[0]:
                continue
            started, first = True, resume[1]
        points = {first, plan.op_count} | set(range(k * (first // k + 1), plan.op_count, k))
        marks += [(plan.index, p) for p in sorted(points)]
    return marks


def test_protocol_stream_shape(executor):
    plans = plan_ranges(11, RANGES, 5)
    lines = run_plans(executor, plans, report_every=10)
    messages = [parse_line(line) for line in lines]
    assert messages[0] == Ready(1, len(plans))
    assert messages[-1] == Done(sum(p.op_count for p in plans))
    assert progress_marks(lines) == expected_marks(plans, 10)
    # every op line lies after the mark that announced its range and before the next mark
    last_mark = None
    for line, message in zip(lines, messages, strict=True):
        if isinstance(message, Progress):
            last_mark = message
        elif message is None:
            range_index, op_index, _ = parse_dry_run_op(line)
            assert last_mark.range_index == range_index
            assert last_mark.ops_done <= op_index < last_mark.ops_done + 10


def test_resume_marks_and_total(executor):
    plans = plan_ranges(11, RANGES, 5)
    lines = run_plans(executor, plans, report_every=10, resume=(1, 13))
    assert progress_marks(lines) == expected_marks(plans, 10, (1, 13))
    assert parse_line(lines[-1]) == Done(plans[1].op_count - 13 + plans[2].op_count)


def test_resume_at_range_end(executor):
    plans = plan_ranges(3, RANGES[:2], 1)
    lines = run_plans(executor, plans, resume=(0, plans[0].op_count))
    assert progress_marks(lines)[:2] == [(0, plans[0].op_count), (1, 0)]
    assert op_lines(lines) == python_lines(plans[1:])


def test_explicit_range_indices_are_reported(executor):
    plans = [RangePlan(7, 0x60, 0x61, "a", 1, 1), RangePlan(3, 0x70, 0x70, "b", 1, 1)]
    lines = run_plans(executor, plans, report_every=100)
    assert progress_marks(lines) == [(7, 0), (7, 6), (3, 0), (3, 3)]
    assert {parse_dry_run_op(line)[0] for line in op_lines(lines)} == {7, 3}


def test_limit_loop_prints_only_done(executor):
    plans = plan_ranges(8, RANGES, 50)
    lines = run_plans(executor, plans, limit_loop=True)
    assert [parse_line(line) for line in lines] == [Done(sum(p.op_count for p in plans))]


def test_hang_at_stops_before_the_op_and_stays_silent(executor):
    plans = plan_ranges(4, RANGES, 3)
    command = executor_command(plans, report_every=4, hang_at=(1, 6), binary=str(executor), dry_run=True)
    with subprocess.Popen(command, shell=True, stdout=subprocess.PIPE, text=True, start_new_session=True) as proc:
        try:
            lines = []
            while not lines or not lines[-1].startswith("@HANG"):
                line = proc.stdout.readline()
                assert line, f"executor ended without @HANG: {lines}"
                lines.append(line.rstrip("\n"))
            time.sleep(0.3)
            assert proc.poll() is None, "a hung executor must not exit"
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
    assert parse_line(lines[-1]) == Hang(1, 6)
    ops = [parse_dry_run_op(line)[:2] for line in op_lines(lines)]
    assert ops[-1] == (1, 5)
    assert progress_marks(lines)[-1] == (1, 4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fuzz-count", "1", "0x60-0x64"], "--seed and --fuzz-count are required"),
        (["--seed", "1", "--fuzz-count", "1"], "no range given"),
        (["--seed", "x1", "--fuzz-count", "1", "0x60-0x64"], "--seed: 'x1' is not a number"),
        (["--seed", "-1", "--fuzz-count", "1", "0x60-0x64"], "--seed: '-1' is not a number"),
        (["--seed", "1", "--fuzz-count", "4294967296", "0x60-0x64"], "greater than the maximum"),
        (["--seed", "1", "--fuzz-count", "1", "60-64"], "bound '60' must be hex with a 0x prefix"),
        (["--seed", "1", "--fuzz-count", "1", "0x64-0x60"], "start is greater than end"),
        (["--seed", "1", "--fuzz-count", "1", "0x60-0x10000"], "above 0xffff"),
        (["--seed", "1", "--fuzz-count", "1", "0x60-0x64/2"], "size 5 is not a multiple of width 2"),
        (["--seed", "1", "--fuzz-count", "1", "0x60-0x63/3"], "width must be 1, 2 or 4"),
        (["--seed", "1", "--fuzz-count", "1", "0x60"], "expected \\[I:\\]\\[SPACE:\\]0xSTART-0xEND"),
        (["--seed", "1", "--fuzz-count", "1", "mmio:0x60-0x6f/16"], "greater than the maximum 8"),
        (["--seed", "1", "--fuzz-count", "1", "pci:0x60-0x67/8"], "greater than the maximum 4"),
        (["--seed", "1", "--fuzz-count", "1", "mmio:0x62-0x65/4"], "not aligned to width 4"),
        (["--seed", "1", "--fuzz-count", "1", "pci:0xff0-0x100f/4"], "within one function"),
        (["--seed", "1", "--fuzz-count", "1", "pci:0x0-0x10000000"], "pci address 0x10000000 is above 0xfffffff"),
        (["--seed", "1", "--fuzz-count", "1", "dma:0x0-0x1"], "neither a range index nor a space"),
        (["--seed", "1", "--fuzz-count", "1", "0x60-0x61,x"], "range fuzz count: 'x' is not a number"),
        (["--seed", "1", "--fuzz-count", "1", "0x60-0x61@"], "'@' must be followed by the range's seed"),
        (["--seed", "1", "--fuzz-count", "1", "0x60-0x61@-3"], "range seed: '-3' is not a number"),
        (["--seed", "1", "--fuzz-count", "1", "0x60-0x61@18446744073709551616"], "range seed: '1844.*not a number"),
        (["--seed", "1", "--fuzz-count", "1", "0x60-0x61~64:100@5"], "range pause: '100@5' is not a number"),
        (["--seed", "1", "--fuzz-count", "1", "--check", "--dry-run", "0x60-0x61"], "--check combines with none"),
        (["--seed", "1", "--fuzz-count", "1", "1:0x60-0x61", "1:0x70-0x71"], "range index 1 given twice"),
        (["--seed", "1", "--fuzz-count", "1", "--resume", "5:0", "0x60-0x61"], "no range with index 5"),
        (["--seed", "1", "--fuzz-count", "1", "--resume", "0:7", "0x60-0x61"], "has only 6 ops"),
        (["--seed", "1", "--fuzz-count", "1", "--hang-at", "0:6", "0x60-0x61"], "has only 6 ops"),
        (["--seed", "1", "--fuzz-count", "1", "--resume", "0:3", "--hang-at", "0:1", "0x60-0x61"], "never be reached"),
        (["--seed", "1", "--fuzz-count", "1", "--report-every", "0", "0x60-0x61"], "at least 1"),
        (["--seed", "1", "--fuzz-count", "1", "--bogus", "0x60-0x61"], "unknown option .*--bogus"),
        (["--seed", "1", "--fuzz-count", "1", "--bare-loop", "0x60-0x61"], "combines with neither"),
        (["--seed", "1", "--fuzz-count", "1", "--limit-loop", "--hang-at", "0:1", "0x60-0x61"], "does not combine"),
    ],
)
def test_bad_arguments_give_err_and_usage_status(executor, args, message):
    result = run_dry(executor, args)
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert len(lines) == 1, lines
    error = parse_line(lines[0])
    assert isinstance(error, ExecError)
    assert re.search(message, error.message), error.message


def test_build_is_cached_by_source_and_flags(tmp_path, executor):
    first = build_executor(tmp_path)
    mtime = first.stat().st_mtime_ns
    assert build_executor(tmp_path) == first
    assert first.stat().st_mtime_ns == mtime
    assert first.name == executor.name  # same inputs, same key
    source = build.SOURCE.read_bytes()
    assert build_key(source, "gcc") != build_key(source + b"\n", "gcc")
    assert build_key(source, "gcc") != build_key(source, "gcc", ("-O0",))
    assert build_key(source, "gcc") != build_key(source, "clang")


def test_binary_is_static(executor):
    # No PT_INTERP program header: the guests need no dynamic loader.
    data = executor.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2  # 64-bit
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    assert 3 not in types  # PT_INTERP


def test_missing_compiler_is_reported(tmp_path):
    with pytest.raises(ExecutorBuildError, match="'no-such-cc' not found on PATH"):
        build_executor(tmp_path, cc="no-such-cc")
    assert list(tmp_path.iterdir()) == []


def test_compile_failure_is_reported(tmp_path, monkeypatch):
    broken = tmp_path / "broken.c"
    broken.write_text("int main(void) { return undefined_thing; }\n")
    monkeypatch.setattr(build, "SOURCE", broken)
    with pytest.raises(ExecutorBuildError, match=r"compilation failed(.|\n)*undefined_thing"):
        build_executor(tmp_path / "out")
    assert not any((tmp_path / "out").iterdir())  # no half-built leftovers


@pytest.mark.parametrize("resume", [None, (1, 0), (1, 5), (2, 3)])
def test_c_fuzz_only_ranges_identical_to_python(executor, resume):
    """Fuzz-only ranges (``!``, a guided program's steps): no read or zero phase, in C as in the model."""
    plans = [
        RangePlan(0, 0xC000, 0xC01F, "whole", seed=3, fuzz_count=4, width=2),
        RangePlan(1, 0xC010, 0xC013, "one register", seed=4, fuzz_count=9, width=4, fuzz_only=True),
        RangePlan(2, 0xC000, 0xC007, "two registers", seed=5, fuzz_count=6, width=2, fuzz_only=True),
    ]
    assert plans[1].op_count == 9 and plans[2].op_count == 24
    assert all(op.kind == "w" for plan in plans[1:] for op in plan.ops())
    assert op_lines(run_plans(executor, plans, report_every=4, resume=resume)) == python_lines(plans, resume)


def test_fuzz_only_range_is_the_fuzz_phase_of_its_plain_twin():
    plain = RangePlan(0, 0xC000, 0xC00F, "r", seed=8, fuzz_count=5, width=4)
    bare = replace(plain, fuzz_only=True)
    assert list(bare.ops()) == list(plain.ops(plain.lead))
    assert {bare.phase_of(i) for i in range(bare.op_count)} == {"fuzz"}
