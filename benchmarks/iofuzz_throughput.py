#!/usr/bin/env python3
"""Port ops per second, three ways, on one booted guest and one inert port set.

a. classic   one shell command (``dd`` on /dev/port) per op through the console session;
b. executor  the in-guest executor as the VT test runs it: a Campaign with its
             TraceWriter, progress marks and watchdog, on a bare QEMU
             (coverage off; and once more with the coverage collector on);
c. limit     the same accesses in a tight loop with nothing else: the executor's
             ``--bare-loop`` (no generator, no marks, no host).

Ports: 0x80-0x8f (POST port and DMA page registers: latches) and 0x300-0x31f
(claimed by no device: QEMU's catch-all). Nothing there resets or hangs the
guest, so every run completes and only speed differs.

Usage: python benchmarks/iofuzz_throughput.py [--ops N] [--rounds R] ...
The last line is JSON: ops_per_s_classic, ops_per_s_executor, ops_per_s_limit,
vs_classic (b/a), vs_limit (b/c), coverage_on_vs_off, and the trace's cost.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code is what we measure

from avocado_iofuzz.campaign.runner import Campaign, CampaignConfig
from avocado_iofuzz.campaign.trace import TraceWriter
from avocado_iofuzz.coverage.run import TRACE_LOG, trace_args
from avocado_iofuzz.executor.protocol import Done, executor_command, parse_line
from avocado_iofuzz.model.program import RangePlan, plan_ranges
from avocado_iofuzz.model.ranges import leaves, parse_ioports
from avocado_iofuzz.vt.catalog import TestCatalog
from avocado_iofuzz.vt.iofuzz_params import IofuzzParams
from benchmarks._common import BenchmarkError, Samples, print_figures, ratio, say, stopwatch
from benchmarks._rows import coverage_for
from benchmarks.classic import interleaved_ops, run_classic

# (start, end, name): name is what the guest's /proc/ioports must say, "" for unclaimed
INERT_RANGES = ((0x80, 0x8F, "dma page reg"), (0x300, 0x31F, ""))
# Without --ops, a run holds as many ops as the limit loop does in RUN_SECONDS
# (20 M under TCG here; far fewer under KVM, where an access exits to QEMU).
RUN_SECONDS = 1.5
CALIBRATION_OPS = 1_000_000
MIN_OPS, MAX_OPS = 200_000, 100_000_000
LIMIT_TIMEOUT = 600.0
LISTED_SAMPLE_OPS = 200_000  # ops written in the listed encoding, for comparison
WATCHES: list[float] = []  # each executor run's watch for late crashes after @DONE, in seconds


def check_inert(ioports: str) -> None:
    """Refuse a guest where the benchmark's ports are claimed by something else than expected."""
    claimed = leaves(parse_ioports(ioports))
    for start, end, expected in INERT_RANGES:
        owners = sorted({r.name for r in claimed if r.start <= end and start <= r.end})
        if owners != ([expected] if expected else []):
            want = f"only {expected!r}" if expected else "no device"
            raise BenchmarkError(
                f"ports {start:#x}-{end:#x} are claimed by {owners or 'no device'} in this guest, expected {want}: "
                "they may not be inert here"
            )


def campaign_config_of(reference: str = "iofuzz", **overrides: Any) -> CampaignConfig:
    """The campaign settings ``avocado run <reference>`` uses, from the package's own cfg."""
    params = TestCatalog().variants(reference)[0]
    settings = IofuzzParams.from_params(params)
    values = {
        "report_every": settings.report_every,
        "hang_timeout": settings.hang_timeout,
        "max_hangs": settings.max_hangs,
        "login_timeout": settings.login_timeout,
        "progress_log_interval": settings.progress_interval,
    }
    return CampaignConfig(**{**values, **{k: v for k, v in overrides.items() if v is not None}})


def benchmark_plans(total_ops: int, seed: int) -> list[RangePlan]:
    """Plans over the inert ranges with about ``total_ops`` ops in all."""
    slots = sum(end - start + 1 for start, end, _ in INERT_RANGES)
    fuzz_count = max(0, total_ops // slots - 2)
    return plan_ranges(seed, [(s, e, name or "unclaimed") for s, e, name in INERT_RANGES], fuzz_count)


class TimedTraceWriter:
    """A TraceWriter that adds up the time the campaign spends in it."""

    def __init__(self, writer: TraceWriter) -> None:
        self._writer = writer
        self.seconds = 0.0

    def _timed(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return call

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._writer, name)
        return self._timed(attribute) if callable(attribute) else attribute


@dataclass
class TraceCost:
    bytes: int
    seconds: float
    ops: int


def run_executor(
    vm: Any, plans: Sequence[RangePlan], config: CampaignConfig, trace_path: Path, observer: Any = None
) -> tuple[float, TraceCost]:
    """One campaign over ``plans`` as the VT test runs it; (seconds, trace cost). Logging in is not timed."""
    session = vm.login(60)  # the VT test logs in (and reads /proc/ioports) before the campaign starts
    header = {"benchmark": "iofuzz_throughput", "accelerator": vm.accel, "qemu_cmdline": vm.qemu_cmdline()}
    writer = TimedTraceWriter(TraceWriter(trace_path, header, plans))
    try:
        campaign = Campaign(vm, plans, writer, config, session=session, observer=observer)
        result = campaign.run()
        # the campaign's own clock (without the coverage collector's idle baseline), up to @DONE:
        # the fixed watch after it (done_linger) is reported on its own line, not spread over the ops
        elapsed = [result.ops_elapsed]
        WATCHES.append(result.watched_after_done)
    finally:
        writer.close()
    planned = sum(p.op_count for p in plans)
    if result.findings or result.total_done != planned:
        raise BenchmarkError(
            f"the campaign did {result.total_done} of {planned} ops with findings {result.findings}: "
            "the benchmark ports are not inert on this machine"
        )
    return elapsed[0], TraceCost(trace_path.stat().st_size, writer.seconds, planned)


def run_loop(session: Any, plans: Sequence[RangePlan], *, limit_loop: bool = False, bare_loop: bool = False) -> float:
    """Seconds for the executor's benchmark loop (``bare_loop`` or ``limit_loop``) over ``plans``."""
    command = executor_command(plans, limit_loop=limit_loop, bare_loop=bare_loop)
    with stopwatch() as elapsed:
        output = session.cmd_output(command, timeout=LIMIT_TIMEOUT)
    messages = [m for m in map(parse_line, output.splitlines()) if m is not None]
    planned = sum(p.op_count for p in plans)
    if messages != [Done(planned)]:
        raise BenchmarkError(f"{command!r} did not report @DONE {planned}: {output[-500:]!r}")
    return elapsed[0]


def listed_encoding_cost(plans: Sequence[RangePlan], directory: Path) -> tuple[float, float]:
    """Bytes and seconds per op of a trace that lists every op (format 1's way), measured on a sample."""
    plan = plans[-1]
    stop = min(plan.op_count, LISTED_SAMPLE_OPS)
    path = directory / "listed.iofuzz"
    with TraceWriter(path, {}) as writer:
        base = path.stat().st_size
        with stopwatch() as elapsed:
            writer.write_ops(plan, 0, stop, listed=True)
    return (path.stat().st_size - base) / stop, elapsed[0] / stop


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ops", type=int, help=f"ops per executor and limit run (default: what the limit does in {RUN_SECONDS:g} s)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="executor and limit runs, interleaved (%(default)s)")
    parser.add_argument("--classic-ops", type=int, default=400, help="at most this many classic ops (%(default)s)")
    parser.add_argument(
        "--classic-seconds", type=float, default=10.0, help="at most this long for classic ops (%(default)s)"
    )
    parser.add_argument(
        "--report-every", type=int, help="progress mark interval in ops (default: the iofuzz test's cfg value)"
    )
    parser.add_argument("--seed", type=int, default=1, help="op generator seed (%(default)s)")
    args = parser.parse_args(argv)
    for name in ("ops", "rounds", "classic_ops", "report_every"):  # None: not given
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.classic_seconds <= 0:
        parser.error("--classic-seconds must be positive")
    return args


def calibrated_ops(session: Any, seed: int) -> int:
    """How many ops the limit loop does in RUN_SECONDS on this guest, within MIN_OPS..MAX_OPS."""
    plans = benchmark_plans(CALIBRATION_OPS, seed)
    rate = sum(p.op_count for p in plans) / run_loop(session, plans, bare_loop=True)
    return int(min(MAX_OPS, max(MIN_OPS, rate * RUN_SECONDS)))


def measure(vm: Any, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    session = vm.login(60)
    check_inert(session.cmd_output("cat /proc/ioports"))
    ops = args.ops or calibrated_ops(session, args.seed)
    plans = benchmark_plans(ops, args.seed)
    total = sum(p.op_count for p in plans)
    say(
        f"guest up under {vm.accel} ({vm.accel_reason}); {total:,} ops per run on ports "
        + ", ".join(f"{p.start:#x}-{p.end:#x}" for p in plans)
    )

    classic = Samples("a. classic (one dd per op)")
    done, seconds = run_classic(session, interleaved_ops(plans), args.classic_ops, args.classic_seconds)
    classic.add(done, seconds)
    session.close()
    say(classic.describe())

    config = campaign_config_of(report_every=args.report_every)
    say(f"campaign settings of `avocado run iofuzz`: report_every {config.report_every}, "
        f"hang_timeout {config.hang_timeout:g} s")  # fmt: skip
    executor, limit, generated = Samples("b. executor"), Samples("c. limit (--bare-loop)"), Samples("   --limit-loop")
    covered = Samples("b. executor, coverage on")
    costs: list[TraceCost] = []
    for round_ in range(args.rounds):
        seconds, cost = run_executor(vm, plans, config, workdir / f"trace-{round_}.iofuzz")
        executor.add(total, seconds)
        costs.append(cost)
        observer = coverage_for(vm, [], workdir / TRACE_LOG)
        seconds, _ = run_executor(vm, plans, config, workdir / f"trace-cov-{round_}.iofuzz", observer)
        covered.add(total, seconds)
        session = vm.login(60)
        limit.add(total, run_loop(session, plans, bare_loop=True))
        generated.add(total, run_loop(session, plans, limit_loop=True))
        session.close()
    for samples in (executor, covered, limit, generated):
        say(samples.describe())
    say("   (--limit-loop: the executor's own op generator in the loop, still no marks)")

    best_run = executor.rates.index(executor.best)
    cost = costs[best_run]
    listed_bytes, listed_seconds = listed_encoding_cost(plans, workdir)
    per_mops = cost.bytes / cost.ops * 1e6
    say(
        f"after @DONE each run watches QEMU {max(WATCHES):.2f} s for a late crash (done_linger "
        f"{config.done_linger:g} s): a fixed cost per run, outside the op rates above"
    )
    say(
        f"trace: {cost.bytes} bytes for {cost.ops:,} ops ({per_mops:,.1f} bytes per million ops), "
        f"{cost.seconds * 1e3:.1f} ms writing it ({cost.seconds / executor.seconds[best_run] * 100:.2f} % of the run)"
    )
    say(
        f"       listing every op instead would take {listed_bytes * 1e6 / 2**20:.1f} MiB and "
        f"{listed_seconds * 1e6:.2f} s per million ops (measured on {LISTED_SAMPLE_OPS:,} ops)"
    )
    figures = {
        "ops_per_s_classic": round(classic.best, 2),
        "ops_per_s_executor": round(executor.best),
        "ops_per_s_limit": round(limit.best),
        "ops_per_s_limit_generated": round(generated.best),
        "vs_classic": round(ratio(executor.best, classic.best)),
        "vs_limit": round(ratio(executor.best, limit.best), 3),
        "coverage_on_vs_off": round(ratio(covered.best, executor.best), 3),
        "trace_bytes_per_mops": round(per_mops, 1),
        "trace_write_s": round(cost.seconds, 4),
        "watch_after_done_s": round(max(WATCHES), 3),
        "trace_listed_bytes_per_mops": round(listed_bytes * 1e6),
        "accelerator": vm.accel,
        "ops": total,
        "report_every": config.report_every,
        "rounds": args.rounds,
    }
    say(f"b/a = {figures['vs_classic']:,} (target >= 10,000)   b/c = {figures['vs_limit']} (target >= 0.7)")
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from avocado_iofuzz.guest.build import default_guest
    from avocado_iofuzz.vm.bare import BareQemu

    with tempfile.TemporaryDirectory(prefix="iofuzz-bench-") as tmp:
        workdir = Path(tmp)
        # -trace file= costs nothing until the coverage runs enable events
        with BareQemu(default_guest(), workdir / "vm", extra_args=trace_args(workdir / TRACE_LOG)) as vm:
            figures = measure(vm, args, workdir)
    print_figures(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
