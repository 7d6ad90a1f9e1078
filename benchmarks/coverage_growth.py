#!/usr/bin/env python3
"""Blind fuzzing's coverage over time: trace events reached per device row in a fixed wall time.

For each device row (cfg/devices.cfg) with trace events of its own, one bare
QEMU with the row's device runs campaigns over the row's ranges -- the ranges
``avocado run iofuzz.<row>`` fuzzes -- with successive seeds until the row's
wall time is used up, and the union of the events reached grows. This is the
baseline a guided fuzzer (issue 13) is measured against: same rows, same
time, more events?

Usage: python benchmarks/coverage_growth.py [--quick] [--seconds S] [--rows nic.e1000e,...] [--values dma]
       [--layout auto|generic|uhci|...] [--pace E:U]
``--layout`` is ``dma_layout`` (the scratch memory's layout of ``dma`` ranges,
``auto``: each row's device family); ``--pace E:U`` sleeps U us before every
E-th op of every range, so timer-driven DMA engines (USB frames) run.
The last line is JSON: per row, events available and reached, and the curve
``[seconds, events reached]`` at each campaign's end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code is what we measure

from avocado_iofuzz.model.dma import VALUE_MODES
from avocado_iofuzz.model.layout_choice import LAYOUT_AUTO, LAYOUT_CHOICES
from benchmarks._common import print_figures, say
from benchmarks._rows import coverage_for, row_devices, row_params, row_plans, row_qemu_args, run_campaign
from benchmarks.iofuzz_throughput import campaign_config_of

ROWS = (
    "nic.e1000e",
    "storage.megasas",
    "storage.lsi53c895a",
    "storage.ahci",
    "storage.nvme",
    "display.qxl_vga",
    "usb.ich9_ehci",
    "nic.virtio_net",
    "storage.virtio_blk",
)
SECONDS, QUICK_SECONDS = 120.0, 20.0
CAMPAIGN_SECONDS = 5.0  # each campaign aims at this long: its start (idle baseline, executor) costs ~1 s


def grow(
    vm: Any, reference: str, params: dict[str, Any], seconds: float, workdir: Path, seed: int, pace: tuple[int, int]
) -> dict[str, Any]:
    """Campaigns with seeds seed, seed+1, ... over the row's ranges until ``seconds`` of wall time are used."""
    config = campaign_config_of(reference)
    first_seen: dict[str, float] = {}
    curve: list[list[float]] = []
    available = 0
    ops = campaigns = crashes = 0
    fuzz_count = 2
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            session = vm.login(60)
        except Exception as err:  # a guest the last campaign left dead (a device DMAed into its kernel): a fresh QEMU
            say(f"  {reference}: no login after campaign {campaigns} ({type(err).__name__}); restarting QEMU")
            crashes += 1
            vm.restart()
            continue
        plans = row_plans(session, params, seed + campaigns, fuzz_count)
        plans = [replace(plan, pause_every=pace[0], pause_us=pace[1]) for plan in plans]
        session.close()
        trace_file = workdir / "qemu-trace.log"
        coverage = coverage_for(vm, row_devices(params), trace_file)
        campaign_started = time.monotonic()
        try:
            result = run_campaign(vm, plans, config, workdir / f"trace-{campaigns}.iofuzz", observer=coverage)
        except Exception as err:  # a campaign that cannot go on (guest gone for good): a fresh QEMU, next seed
            say(f"  {reference}: campaign {campaigns} failed ({err!r}); restarting QEMU")
            campaigns += 1
            crashes += 1
            vm.restart()
            continue
        campaigns += 1
        ops += result.total_done
        summary = coverage.summary()
        if not summary.get("enabled"):
            raise SystemExit(f"coverage is off: {summary.get('reason')}")
        available = summary["events_available"]
        offset = campaign_started - started
        for name, seen in summary["events"].items():
            first_seen.setdefault(name, round(offset + seen["time_s"], 2))
        curve.append([round(time.monotonic() - started, 1), len(first_seen)])
        if result.crashed:
            crashes += 1
            say(f"  {reference}: QEMU crashed ({result.qemu_exit.describe() if result.qemu_exit else '?'}); restarting")
            vm.restart()
        # the next campaign as long as CAMPAIGN_SECONDS (or what is left), from this one's rate
        left = seconds - (time.monotonic() - started)
        rate = result.total_done / result.ops_elapsed if result.ops_elapsed else 0
        slots = sum(p.slots for p in plans) or 1
        wanted = min(CAMPAIGN_SECONDS, max(1.0, left)) * rate
        fuzz_count = max(2, int(wanted / slots) - 2)
    return {
        "events_available": available,
        "events_reached": len(first_seen),
        "curve": curve,
        "first_seen_s": dict(sorted(first_seen.items(), key=lambda kv: kv[1])),
        "ops": ops,
        "campaigns": campaigns,
        "crashes": crashes,
        "seconds": round(time.monotonic() - started, 1),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SECONDS:g} s per row instead of {SECONDS:g}")
    parser.add_argument("--seconds", type=float, help="wall time per row (overrides --quick)")
    parser.add_argument("--rows", default=",".join(ROWS), help="class.row names of cfg/devices.cfg (%(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="the first campaign's seed (%(default)s)")
    parser.add_argument("--values", choices=VALUE_MODES, default=VALUE_MODES[0], help="fuzz_values (%(default)s)")
    parser.add_argument("--layout", choices=LAYOUT_CHOICES, default=LAYOUT_AUTO, help="dma_layout (%(default)s)")
    parser.add_argument("--pace", default="0:0", help="E:U, a pause of U us before every E-th op (%(default)s: none)")
    args = parser.parse_args(argv)
    every, _, us = args.pace.partition(":")
    if not (every.isdigit() and us.isdigit()) or bool(int(every)) != bool(int(us)):
        parser.error(f"--pace {args.pace!r}: expected E:U, both 0 or both positive")
    args.pace_pair = (int(every), int(us))
    args.seconds = args.seconds or (QUICK_SECONDS if args.quick else SECONDS)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from avocado_iofuzz.coverage.run import trace_args
    from avocado_iofuzz.guest.build import default_guest
    from avocado_iofuzz.vm.bare import BareQemu

    guest = default_guest()
    rows: dict[str, Any] = {}
    accel = ""
    for row in [r.strip() for r in args.rows.split(",") if r.strip()]:
        reference = f"iofuzz.quick.{row}"
        params = {**row_params(reference), "fuzz_values": args.values, "dma_layout": args.layout}
        with tempfile.TemporaryDirectory(prefix="iofuzz-growth-") as tmp:
            workdir = Path(tmp)
            extra = [*row_qemu_args(params), *trace_args(workdir / "qemu-trace.log")]
            machine = str(params.get("machine_type", "pc") or "pc")
            with BareQemu(guest, workdir / "vm", machine=machine, extra_args=extra) as vm:
                accel = vm.accel or accel
                rows[row] = grow(vm, reference, params, args.seconds, workdir, args.seed, args.pace_pair)
        r = rows[row]
        say(
            f"{row}: {r['events_reached']}/{r['events_available']} events in {r['seconds']} s "
            f"({r['ops']:,} ops, {r['campaigns']} campaigns, {r['crashes']} crashes); curve {r['curve']}"
        )
    figures = {"seconds_per_row": args.seconds, "accelerator": accel, "values": args.values, "layout": args.layout}
    print_figures({**figures, "pace": args.pace, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
