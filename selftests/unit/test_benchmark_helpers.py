"""Pure parts of the benchmark scripts: classic commands, port checks, plans, sample statistics."""

from __future__ import annotations

import math

import pytest

from avocado_iofuzz.campaign.trace import TraceWriter, read_trace
from avocado_iofuzz.model.program import Op, RangePlan
from benchmarks._common import BenchmarkError, Samples, ratio
from benchmarks.classic import classic_command, interleaved_ops
from benchmarks.iofuzz_throughput import TimedTraceWriter, benchmark_plans, check_inert

PC_IOPORTS = """\
0000-0cf7 : PCI Bus 0000:00
  0000-001f : dma1
  0080-008f : dma page reg
  03f8-03ff : serial
0cf8-0cff : PCI conf1
"""


def test_classic_commands_use_skip_for_reads_and_octal_for_values():
    assert classic_command(Op("r", 0x305, 1, 0)) == "dd if=/dev/port of=/dev/null bs=1 count=1 skip=773"
    assert classic_command(Op("w", 0x80, 1, 0xFF)) == "printf '\\377' | dd of=/dev/port bs=1 count=1 seek=128"
    assert classic_command(Op("w", 0x80, 1, 0)) == "printf '\\000' | dd of=/dev/port bs=1 count=1 seek=128"
    with pytest.raises(ValueError, match="byte accesses only: a 2-byte op"):
        classic_command(Op("w", 0x80, 2, 0x1234))


def test_interleaved_ops_take_each_range_in_turn_and_lose_none():
    a, b = RangePlan(0, 0x80, 0x80, "a", 1, 0), RangePlan(1, 0x300, 0x303, "b", 1, 0)
    ops = list(interleaved_ops([a, b]))
    assert ops[:4] == [a.op(0), b.op(0), a.op(1), b.op(1)]
    assert sorted(ops, key=repr) == sorted([*a.ops(), *b.ops()], key=repr)


def test_check_inert_accepts_the_pc_layout_and_names_a_claimed_port():
    check_inert(PC_IOPORTS)
    with pytest.raises(BenchmarkError, match=r"0x300-0x31f are claimed by \['ne2000'\].*expected no device"):
        check_inert(PC_IOPORTS + "0300-031f : ne2000\n")
    with pytest.raises(BenchmarkError, match=r"0x80-0x8f are claimed by no device.*only 'dma page reg'"):
        check_inert(PC_IOPORTS.replace("  0080-008f : dma page reg\n", ""))


def test_benchmark_plans_hold_about_the_asked_ops():
    plans = benchmark_plans(1_000_000, seed=5)
    total = sum(p.op_count for p in plans)
    assert 1_000_000 - 48 < total <= 1_000_000
    assert [(p.start, p.end) for p in plans] == [(0x80, 0x8F), (0x300, 0x31F)]


def test_samples_report_the_best_rate_and_refuse_nothing_measured():
    samples = Samples("x")
    with pytest.raises(BenchmarkError, match="x: no run was measured"):
        _ = samples.best
    samples.add(100, 2.0)
    samples.add(100, 0.5)
    assert samples.rates == [50.0, 200.0] and samples.best == 200.0
    with pytest.raises(BenchmarkError, match="took 0 s"):
        samples.add(1, 0)
    assert ratio(10, 4) == 2.5 and ratio(1, 0) == math.inf


def test_timed_trace_writer_passes_calls_through_and_adds_up_their_time(tmp_path):
    plan = RangePlan(0, 0x80, 0x8F, "dma page reg", 1, 4)
    timed = TimedTraceWriter(TraceWriter(tmp_path / "t", {}, [plan]))
    timed.write_batches([(plan, 0, plan.op_count)])
    timed.progress(0, plan.op_count)
    timed.close()
    assert timed.seconds > 0
    assert read_trace(tmp_path / "t").last_done(0) == plan.op_count


def test_the_executor_runs_with_the_settings_of_avocado_run_iofuzz():
    from avocado_iofuzz.vt.catalog import TestCatalog
    from avocado_iofuzz.vt.iofuzz_params import IofuzzParams
    from benchmarks.iofuzz_throughput import campaign_config_of

    settings = IofuzzParams.from_params(TestCatalog().variants("iofuzz")[0])
    config = campaign_config_of("iofuzz")
    assert (config.report_every, config.hang_timeout) == (settings.report_every, settings.hang_timeout)
    assert campaign_config_of("iofuzz", report_every=64, hang_timeout=None).report_every == 64


def test_runs_are_sized_by_what_the_limit_loop_does_in_a_run_time(monkeypatch):
    from benchmarks import iofuzz_throughput as bench

    seconds = {"value": 0.0}
    monkeypatch.setattr(bench, "run_loop", lambda session, plans, **mode: seconds["value"])
    calibration = sum(p.op_count for p in bench.benchmark_plans(bench.CALIBRATION_OPS, 1))
    seconds["value"] = 0.001  # an implausibly fast limit: clamped to the maximum
    assert bench.calibrated_ops(None, 1) == bench.MAX_OPS
    seconds["value"] = 2.0  # a KVM-like limit: ops for RUN_SECONDS
    assert bench.calibrated_ops(None, 1) == int(calibration / 2.0 * bench.RUN_SECONDS)
    seconds["value"] = 1000.0  # absurdly slow: clamped to the minimum
    assert bench.calibrated_ops(None, 1) == bench.MIN_OPS


def test_criu_comparison_splits_failures_by_version():
    from benchmarks.sockstates_criu import compare

    def rows(bad: set[str]) -> list[dict]:
        states = ("empty", "DA", "DA-CX", "DB@1")
        return [{"description": d, "verdict": "failed" if d in bad else "intact"} for d in states]

    diff = compare(rows({"DA-CX", "DB@1"}), rows({"DA-CX", "DA"}), "3.17.1", "4.1.1")
    assert diff == {"only_3.17.1": ["DB@1"], "only_4.1.1": ["DA"], "both": ["DA-CX"]}
    with pytest.raises(BenchmarkError, match="different states"):
        compare(rows(set()), rows(set())[:2], "3.17.1", "4.1.1")
