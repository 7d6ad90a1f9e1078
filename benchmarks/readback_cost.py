#!/usr/bin/env python3
"""What read-backs cost a guided round: the same batches with and without ``--readback``, on one guest.

A round here is shaped like a guided one at its most line-heavy: many short
batches (one-register fuzz-only steps and whole sweeps) over the DMA page
registers 0x80-0x8f, which latch what is written (so read-backs find values
and their ``@RB`` lines carry pairs) and neither reset nor hang the guest.
Each batch costs a few ms anyway (its @P marks cross the serial console);
read-backs add one line per batch, and for a step its extra reads. The runs
alternate, off then on, ``--rounds`` times, so the load of a shared machine
hits both alike.

Usage: python benchmarks/readback_cost.py [--rounds R] [--batches B] [--seed S]
The last line is JSON: seconds per round off and on (median), the cost per
batch in ms, ops per second off and on, and the @RB line's mean and largest
length in bytes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code is what we measure

from avocado_iofuzz.campaign.runner import Campaign, CampaignConfig
from avocado_iofuzz.campaign.trace import TraceWriter
from avocado_iofuzz.guided.batch import Base, Batch
from avocado_iofuzz.guided.program import step
from avocado_iofuzz.model.program import RangePlan
from benchmarks._common import BenchmarkError, print_figures, say

PAGE_REGISTERS = Base("pio", 0x80, 0x8F, 1, "dma page reg")


def round_plans(batches: int, seed: int) -> list[RangePlan]:
    """Every third batch a sweep of the 16 registers, the others fuzz-only steps on one of them."""
    plans = []
    for i in range(batches):
        if i % 3 == 0:
            batch = Batch(PAGE_REGISTERS, 0x80, 0x8F, seed + i, 4)
        else:
            batch = step(PAGE_REGISTERS, 0x80 + (i * 5) % 16, 1, seed + i, 6, "uniform")
        plans.append(batch.plan(i))
    return plans


def run_once(vm: Any, plans: Sequence[RangePlan], config: CampaignConfig, trace: Path) -> tuple[float, list[int]]:
    """(seconds up to @DONE, @RB line lengths) of one campaign over ``plans``."""
    session = vm.login(60)
    with TraceWriter(trace, {"benchmark": "readback_cost", "seed": plans[0].seed}) as writer:
        result = Campaign(vm, plans, writer, config, session=session).run()
    if result.findings or result.total_done != sum(p.op_count for p in plans):
        raise BenchmarkError(f"the campaign did {result.total_done} ops with findings {result.findings}")
    lines = [len(f"@RB {i}" + "".join(f" {o:x}:{c}" for o, c in pairs)) + 1 for i, pairs in result.readbacks.items()]
    if config.readback and len(lines) != len(plans):
        raise BenchmarkError(f"{len(lines)} @RB lines for {len(plans)} batches")
    return result.ops_elapsed, lines


def measure(vm: Any, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    plans = round_plans(args.batches, args.seed)
    ops = sum(p.op_count for p in plans)
    off = CampaignConfig(hang_timeout=60.0, login_timeout=120.0, done_linger=0.0)
    on = replace(off, readback=True)
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    lengths: list[int] = []
    for number in range(args.rounds):
        for name, config in (("off", off), ("on", on)):
            elapsed, lines = run_once(vm, plans, config, workdir / f"{name}-{number}.iofuzz")
            seconds[name].append(elapsed)
            lengths += lines
            say(f"round {number} readback {name}: {elapsed:.2f} s for {len(plans)} batches, {ops} ops")
    median = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "batches": len(plans),
        "ops": ops,
        "rounds": args.rounds,
        "seconds_off": round(median["off"], 3),
        "seconds_on": round(median["on"], 3),
        "cost_per_batch_ms": round(1000 * (median["on"] - median["off"]) / len(plans), 2),
        "ops_per_s_off": round(ops / median["off"]),
        "ops_per_s_on": round(ops / median["on"]),
        "rb_line_bytes_mean": round(statistics.mean(lengths), 1) if lengths else 0,
        "rb_line_bytes_max": max(lengths, default=0),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="off/on pairs, interleaved (%(default)s)")
    parser.add_argument("--batches", type=int, default=60, help="batches per round (%(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="the batches' first seed (%(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from avocado_iofuzz.guest.build import default_guest
    from avocado_iofuzz.vm.bare import BareQemu

    with tempfile.TemporaryDirectory(prefix="iofuzz-readback-") as tmp:
        workdir = Path(tmp)
        with BareQemu(default_guest(), workdir / "vm", accel="tcg") as vm:
            vm.login(120)
            figures = measure(vm, args, workdir)
    print_figures(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
