#!/usr/bin/env python3
"""What device coverage costs: ops/s with coverage on vs off, on the default run and on a device row.

Two workloads, each on its own bare QEMU started with ``-trace file=`` (which
costs nothing while no event is enabled):

* ``default``: the ranges ``avocado run iofuzz`` fuzzes on the pc machine
  (port I/O), watched devices mapped from the range names (events.toml);
* ``nic.e1000e``: the e1000e row's I/O and memory BARs (its config space is
  left out: fuzzing it aborts QEMU 7.2, docs/results/findings.rst).

Each round runs the same plans (same seed) once without and once with the
collector, interleaved; a coverage run enables every watched event afresh,
as a new test would. Ops/s are the campaign's own (its ``ops_elapsed``, which
leaves out the collector's idle baseline, reported separately, and the fixed
watch for late crashes after @DONE).

Usage: python benchmarks/coverage_overhead.py [--quick] [--rounds R]
The last line is JSON: per workload, best ops/s off and on and their ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code is what we measure

from avocado_iofuzz.model.kinds import renumber
from benchmarks._common import BenchmarkError, Samples, print_figures, ratio, say
from benchmarks._rows import coverage_for, row_devices, row_params, row_plans, row_qemu_args, run_campaign
from benchmarks.iofuzz_throughput import campaign_config_of

WORKLOADS = {"default": "iofuzz.quick", "nic.e1000e": "iofuzz.quick.nic.e1000e"}
# fuzz_count per workload (full, --quick): the default run's ~240 port slots at several M ops/s; the
# e1000e's ~12 k BAR slots at ~0.1 M ops/s (each MMIO access exits to the device model)
FUZZ_COUNTS = {"default": (50_000, 10_000), "nic.e1000e": (25, 4)}


def measure(vm: Any, reference: str, rounds: int, fuzz_count: int, workdir: Path) -> dict[str, Any]:
    params = row_params(reference)
    session = vm.login(60)
    plans = row_plans(session, params, 1, fuzz_count)
    session.close()
    if reference != "iofuzz.quick":
        plans = renumber(p for p in plans if p.space != "pci")
    total = sum(p.op_count for p in plans)
    config = campaign_config_of(reference)
    off, on = Samples("coverage off"), Samples("coverage on")
    reached: list[int] = []
    start_costs: list[float] = []
    for round_ in range(rounds):
        result = run_campaign(vm, plans, config, workdir / f"off-{round_}.iofuzz")
        _check(result, total)
        off.add(result.total_done, result.ops_elapsed)
        coverage = coverage_for(vm, row_devices(params), workdir / "qemu-trace.log")
        wall = time.monotonic()
        result = run_campaign(vm, plans, config, workdir / f"on-{round_}.iofuzz", observer=coverage)
        wall = time.monotonic() - wall
        _check(result, total)
        on.add(result.total_done, result.ops_elapsed)
        start_costs.append(wall - result.elapsed)
        reached.append(coverage.summary()["events_reached"])
    say(f"{reference}: {total:,} ops per run over {len(plans)} ranges")
    say("  " + off.describe())
    say("  " + on.describe())
    return {
        "ops": total,
        "ops_per_s_off": round(off.best),
        "ops_per_s_on": round(on.best),
        "on_vs_off": round(ratio(on.best, off.best), 3),
        "events_reached": reached,
        "collector_start_s": round(min(start_costs), 2),
    }


def _check(result: Any, planned: int) -> None:
    if result.findings or result.total_done != planned:
        raise BenchmarkError(f"a run did {result.total_done} of {planned} ops with findings {result.findings}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (for development)")
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs per workload (%(default)s)")
    args = parser.parse_args(argv)
    from avocado_iofuzz.coverage.run import trace_args
    from avocado_iofuzz.guest.build import default_guest
    from avocado_iofuzz.vm.bare import BareQemu

    figures: dict[str, Any] = {}
    for name, reference in WORKLOADS.items():
        with tempfile.TemporaryDirectory(prefix="iofuzz-covcost-") as tmp:
            workdir = Path(tmp)
            params = row_params(reference)
            extra = [*row_qemu_args(params), *trace_args(workdir / "qemu-trace.log")]
            with BareQemu(default_guest(), workdir / "vm", extra_args=extra) as vm:
                fuzz_count = FUZZ_COUNTS[name][1 if args.quick else 0]
                figures[name] = measure(vm, reference, args.rounds, fuzz_count, workdir)
                figures["accelerator"] = vm.accel
        say(f"{name}: on/off = {figures[name]['on_vs_off']} (aim >= 0.9)")
    print_figures(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
