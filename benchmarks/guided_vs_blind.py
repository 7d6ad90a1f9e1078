#!/usr/bin/env python3
"""Guided vs blind fuzzing: trace events reached per device row, each strategy given the same wall time.

The rows are coverage_growth's (cfg/devices.cfg, each with trace events of
its own; NICs and storage controllers that DMA among them). Per row, two bare
QEMUs with the row's device boot side by side, one per strategy, and take
turns: a round of blind, a round of guided, until each has used
``--seconds`` of wall time -- so the load of a shared machine hits both
alike. Both run the same round driver (avocado_iofuzz.guided.rounds: one
campaign per round, coverage armed across rounds) and differ only in what a
round fuzzes: blind sweeps every range whole with seeds seed, seed+1, ...;
guided follows its corpus (started empty: the figure is one run's, not the
corpus's accumulated reach). A round aims at ROUND_SECONDS, sized from the
strategy's overall op rate (all its ops over all its rounds' wall time:
avocado_iofuzz.guided.sizing), so guided rounds, which mix cheap and
expensive batches, stay as long as blind ones. Events are counted in each
strategy's own time. QEMU dying ends nothing: it restarts and
the strategy goes on (its events stay counted).

``--values dma`` gives both strategies DMA-aware values (``fuzz_values = dma``):
blind sweeps with them, guided's bases carry them and its ``values``
mutation toggles a batch between them and uniform.

``--pace E:U`` measures pacing alone: the second contender is not guided but
blind with every sweep paced (a pause of U us before every E-th op), the
same ops as the first, so what it reaches more is what the pauses let the
device's timers and bottom halves do. Its figures are under ``paced``.

``--readback steps|all`` gives guided read-back features (``guided_readback``;
default off, the blind control never has them).

``--no-recipes`` runs guided without the bring-up recipes
(``guided_recipes = no``): what coverage feedback alone reaches; by default
guided's round 0 runs the recipes that apply (with either ``--values``: they need the guest's scratch memory).

``--profile`` also measures where each strategy's rounds spend their wall
time (benchmarks/_round_profile.py: QEMU's CPU, the trace lines QEMU wrote,
the collector's QMP switches, login, linger, between-round gaps) and prints
guided / blind of the per-op costs, measured in the same run.

``--counting`` measures what guided's collector costs alone: the second
contender is blind, the same ops as the first, under a counting collector
(seen events stay on, hits counted per range, capped, exhausted ones
retired), as guided's is. Its figures are under ``counting``.

``--kinds "pio mmio"`` overrides the rows' ``fuzz_kinds`` for both
strategies: config-space writes move a device's BARs away (QEMU 7.2,
usb.ich9_ehci: BAR0 at 0xff112000 after round 0's config sweep, not one
usb_ehci_* event in any later round), so without restoring BARs every round
after the first fuzzes memory no device decodes, whatever the strategy.

Usage: python benchmarks/guided_vs_blind.py [--quick] [--seconds S] [--rows nic.e1000e,...] [--values dma]
       [--kinds "pio mmio"] [--no-recipes] [--readback off|steps|all] [--profile] [--counting]
The last line is JSON: per row the events available and reached by each
strategy, their curves, ``ratio`` (guided / blind), ``guided_s_to_blind_final``
(guided's own seconds until it had blind's final count; null if never), and
over the rows ``events_ratio_geomean``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code is what we measure

from avocado_iofuzz.guided.readback import MODES as READBACK_MODES
from avocado_iofuzz.guided.readback import is_feature
from avocado_iofuzz.guided.sizing import RoundSizer
from benchmarks._common import print_figures, say
from benchmarks._round_profile import RoundProfile
from benchmarks._round_profile import ratios as profile_ratios
from benchmarks._rows import coverage_for, row_devices, row_params, row_plans_and_listing, row_qemu_args
from benchmarks.coverage_growth import ROWS
from benchmarks.iofuzz_throughput import campaign_config_of

SECONDS, QUICK_SECONDS = 120.0, 20.0
ROUND_SECONDS = 2.0
FIRST_ROUND_OPS = 200_000  # before a rate is measured
HANG_TIMEOUT = 8.0  # not the cfg's 20 s: a hang (lsi SCRIPTS loops) would eat a minute of the row's time


@dataclass
class Contender:
    """One strategy on its own QEMU: its round driver, the wall time it has used, when it reached each event.

    ``reached`` is in the strategy's own time: the seconds of its rounds before
    the round that reached the event, plus how far into that round it came
    (the collector's clock), so the other strategy's turns never count.
    """

    name: str
    vm: Any
    run: Any  # GuidedRun
    used: float = 0.0
    sizer: RoundSizer = field(default_factory=lambda: RoundSizer(ROUND_SECONDS, FIRST_ROUND_OPS))
    crashes: int = 0
    reached: dict[str, float] = field(default_factory=dict)
    profile: RoundProfile | None = None  # --profile: where the rounds' wall time went

    def step(self, seconds_left: float) -> None:
        started = time.monotonic()
        done = 0
        try:
            ops = self.sizer.next_ops(seconds_left)
            if self.profile is None:
                record = self.run.run_round(ops)
            else:
                record = self.profile.round(self.vm, lambda: self.run.run_round(ops))
                self.profile.book(record, self.run.coverage.collector)
            crashed = record.result.crashed
            done = record.result.total_done
        except Exception as err:  # a round that cannot go on (guest gone for good): a fresh QEMU
            say(f"    {self.name}: round failed ({err!r})")
            crashed = True
        if not crashed:  # a crash's restart is not a round's cost
            self.sizer.record(done, time.monotonic() - started)
        collector = self.run.coverage.collector
        if collector is not None:
            for name, seen in collector.first_seen.items():
                if name not in self.reached:
                    into_round = collector.started_at + seen.time_s - started
                    self.reached[name] = round(self.used + min(max(0.0, into_round), time.monotonic() - started), 2)
        if crashed:
            self.crashes += 1
            self.vm.restart()
        self.used += time.monotonic() - started

    def recipe_events(self) -> list[str]:
        """The events the recipe programs reached first (their batches' origin is ``recipe:NAME``)."""
        return sorted(
            event
            for record in self.run.rounds
            for index, origin in enumerate(record.round.origins)
            if origin.startswith("recipe:")
            for event in record.new_events.get(index, [])
        )

    def count_within(self, seconds: float) -> int:
        return sum(t <= seconds for t in self.reached.values())

    def curve(self, step: float) -> list[list[float]]:
        points, t = [], step
        while t < self.used + step:
            points.append([round(min(t, self.used), 1), self.count_within(t)])
            t += step
        return points

    def figures(self, available: int, seconds: float) -> dict[str, Any]:
        return {
            "events_reached": self.count_within(seconds),
            "events_reached_overtime": len(self.reached) - self.count_within(seconds),
            "events_available": available,
            "curve": self.curve(max(1.0, seconds / 12)),
            "ops": self.run.ops_done,
            "rounds": len(self.run.rounds),
            "round_s_mean": round(self.used / len(self.run.rounds), 2) if self.run.rounds else None,
            "crashes": self.crashes,
            "seconds": round(self.used, 1),
            "corpus_entries": len(self.run.corpus.entries),
            "corpus_features": len(self.run.corpus.features),
            # of those, argument-qualified ones ("virtio_set_status(val=0xf)#1", coverage/arguments.py)
            "corpus_argument_features": sum("(" in f for f in self.run.corpus.features),
            # entries only argument features made: no new event, no new plain hit-count bucket
            "corpus_entries_by_argument_only": sum(
                not e.events and bool(e.features) and all("(" in f for f in e.features) for e in self.run.corpus.entries
            ),
            # read-back features ("rb:<base>+0xOFF=<class>", guided/readback.py): registers answering in a new class
            "corpus_readback_features": sum(is_feature(f) for f in self.run.corpus.features),
            "corpus_entries_by_readback_only": sum(
                not e.events and bool(e.features) and all(is_feature(f) for f in e.features)
                for e in self.run.corpus.entries
            ),
            "events": sorted(n for n, t in self.reached.items() if t <= seconds),
            "recipes": [f"{r.name} on {r.function}" for r in getattr(self.run.schedule, "recipes", ())],
            # what the recipe programs themselves reached first (round records: origin recipe:NAME)
            "recipe_events": self.recipe_events(),
            **({"profile": self.profile.figures()} if self.profile is not None else {}),
            # events whose every hit-count bucket the corpus held: off in QEMU for the rest of the run
            "retired_events": sorted(getattr(self.run.coverage.collector, "retired", ())),
        }


def contender(
    name: str, vm: Any, params: dict[str, Any], reference: str, workdir: Path, seed: int, pace: tuple[int, int],
    recipes: bool = True,
    read_backs: str = "off",
    profile: bool = False,
) -> Contender:  # fmt: skip
    from avocado_iofuzz.campaign.guest_access import scratch_reserved
    from avocado_iofuzz.campaign.trace import TraceWriter
    from avocado_iofuzz.executor.protocol import DEFAULT_BINARY
    from avocado_iofuzz.guided.corpus import Corpus
    from avocado_iofuzz.guided.recipes import recipes_for_run
    from avocado_iofuzz.guided.rounds import GuidedRun, bases_of
    from avocado_iofuzz.guided.schedule import BlindSchedule, GuidedSchedule
    from avocado_iofuzz.model.layout_choice import LAYOUT_AUTO, guided_layouts, pci_functions
    from avocado_iofuzz.repro.vt_triage import header_extras
    from avocado_iofuzz.vt.iofuzz_params import IofuzzParams

    session = vm.login(60)
    plans, listing = row_plans_and_listing(session, params, seed, 1)  # one read of the guest's listings
    functions = pci_functions(listing) if name == "guided" else []
    scratch = name == "guided" and recipes and scratch_reserved(session, plans, DEFAULT_BINARY)
    session.close()
    if name == "guided" and IofuzzParams.from_params(params).layout == LAYOUT_AUTO:
        plans = guided_layouts(plans, functions)  # guided's own layouts, as the VT test's guided step takes them
    bases = bases_of(plans)
    if name == "guided":
        applied = recipes_for_run(recipes, functions, bases, scratch)
        schedule: GuidedSchedule | BlindSchedule = GuidedSchedule(bases, seed, recipes=applied)
    else:
        schedule = BlindSchedule(bases, seed, pace if name == "paced" else (0, 0))
    coverage = coverage_for(vm, row_devices(params), workdir / "qemu-trace.log")
    config = campaign_config_of(reference, hang_timeout=HANG_TIMEOUT)
    # what a replay or triage of a finding needs, as a VT run's trace has it: the QEMU and the PCI setup
    header = {"benchmark": "guided_vs_blind", "strategy": name, "qemu_cmdline": vm.qemu_cmdline(),
              **header_extras(listing, None, config.report_every)}  # fmt: skip
    trace = TraceWriter(workdir / "trace.iofuzz", header)
    # hit counts feed guided's corpus only: the blind controls pay what a blind run pays for coverage
    # read-backs likewise: guided's alone, in the mode asked (the blind controls' commands stay blind)
    guided = name == "guided"
    # "counting": blind's ops under guided's collector (hits counted, seen events on): what counting costs
    run = GuidedRun(vm, schedule, Corpus("benchmark", name), coverage, config, trace,
                    count_hits=guided or name == "counting",
                    read_backs=read_backs if guided else "off")  # fmt: skip
    measured = None
    if profile:
        measured = RoundProfile()
        measured.attach(vm, run)
    return Contender(name, vm, run, profile=measured)


def time_to_reach(contender: Contender, count: int) -> float | None:
    """The strategy's own seconds until it had reached ``count`` events (None: it never did)."""
    times = sorted(contender.reached.values())
    return times[count - 1] if 0 < count <= len(times) else (0.0 if count == 0 else None)


def compare(
    row: str,
    seconds: float,
    seed: int,
    tmp: Path,
    values: str = "uniform",
    pace: tuple[int, int] = (0, 0),
    layout: str = "auto",
    kinds: str = "",
    recipes: bool = True,
    read_backs: str = "off",
    profile: bool = False,
    counting: bool = False,
) -> dict[str, Any]:
    from avocado_iofuzz.coverage.run import trace_args
    from avocado_iofuzz.guest.build import default_guest
    from avocado_iofuzz.vm.bare import BareQemu

    reference = f"iofuzz.quick.{row}"
    params = {**row_params(reference), "fuzz_values": values, "dma_layout": layout}  # both plan the same values
    if kinds:
        params["fuzz_kinds"] = kinds
    machine = str(params.get("machine_type", "pc") or "pc")
    guest = default_guest()
    contenders: list[Contender] = []
    vms: list[Any] = []
    challenger = "paced" if pace[0] else "counting" if counting else "guided"
    try:
        for name in ("blind", challenger):
            workdir = tmp / name
            workdir.mkdir()
            extra = [*row_qemu_args(params), *trace_args(workdir / "qemu-trace.log")]
            vm = BareQemu(guest, workdir / "vm", machine=machine, extra_args=extra).start()
            vms.append(vm)
            contenders.append(contender(name, vm, params, reference, workdir, seed, pace, recipes, read_backs,
                                         profile))  # fmt: skip
        while any(c.used < seconds for c in contenders):
            for c in contenders:
                if c.used < seconds:
                    c.step(seconds - c.used)
        summary = contenders[0].run.coverage.summary()
        available = summary.get("events_available", 0)
        for c in contenders:
            c.run.close()
            c.run.trace.close()
    finally:
        for vm in vms:
            vm.stop()
    blind, guided = (c.figures(available, seconds) for c in contenders)
    ratio = guided["events_reached"] / blind["events_reached"] if blind["events_reached"] else None
    only_guided = sorted(set(guided["events"]) - set(blind["events"]))
    only_blind = sorted(set(blind["events"]) - set(guided["events"]))
    return {
        "events_available": available,
        "challenger": challenger,
        "blind": blind,
        challenger: guided,
        "ratio": round(ratio, 3) if ratio is not None else None,
        "guided_s_to_blind_final": time_to_reach(contenders[1], blind["events_reached"]),
        "only_guided": only_guided,
        "only_blind": only_blind,
        "accelerator": vms[0].accel if vms else "",
        "loadavg_1m_after": round(os.getloadavg()[0], 2),  # a shared machine: how loaded it was
        **({"profile_ratios": profile_ratios(guided["profile"], blind["profile"])} if profile else {}),
    }


def geomean(values: Sequence[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_SECONDS:g} s per strategy and row (not {SECONDS:g})"
    )
    parser.add_argument("--seconds", type=float, help="wall time per strategy and row (overrides --quick)")
    parser.add_argument("--rows", default=",".join(ROWS), help="class.row names of cfg/devices.cfg (%(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="both strategies' seed (%(default)s)")
    parser.add_argument(
        "--values", default="uniform", choices=("uniform", "dma"), help="both strategies' fuzz_values (%(default)s)"
    )
    parser.add_argument(
        "--layout", default="auto", help="both strategies' dma_layout, with --values dma (%(default)s)"
    )
    parser.add_argument(
        "--pace", default="", metavar="E:U", help="blind vs blind paced: a pause of U us before every E-th op"
    )
    parser.add_argument(
        "--readback", default="off", choices=READBACK_MODES,
        help="guided's guided_readback: which batches' read-backs become features (%(default)s)",
    )  # fmt: skip
    parser.add_argument("--kinds", default="", help="both strategies' fuzz_kinds, not the rows' (e.g. 'pio mmio')")
    parser.add_argument(
        "--no-recipes", dest="recipes", action="store_false",
        help="guided without the bring-up recipes (guided_recipes = no): what feedback alone reaches",
    )  # fmt: skip
    parser.add_argument(
        "--profile", action="store_true",
        help="also measure where each strategy's round time goes (QEMU CPU, trace lines, QMP, collector, gaps)",
    )  # fmt: skip
    parser.add_argument(
        "--counting", action="store_true",
        help="blind vs blind counting: the second contender runs blind's ops under guided's collector",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (QUICK_SECONDS if args.quick else SECONDS)
    every, _, us = args.pace.partition(":")
    args.pace_pair = (int(every), int(us)) if args.pace else (0, 0)
    if args.pace and (args.pace_pair[0] < 1 or not 1 <= args.pace_pair[1] <= 1_000_000):
        parser.error(f"--pace {args.pace}: expected E:U with E >= 1 and 1 <= U <= 1000000")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows: dict[str, Any] = {}
    for row in [r.strip() for r in args.rows.split(",") if r.strip()]:
        with tempfile.TemporaryDirectory(prefix="iofuzz-guided-") as tmp:
            rows[row] = r = compare(
                row, args.seconds, args.seed, Path(tmp), args.values, args.pace_pair, args.layout, args.kinds,
                args.recipes, args.readback, args.profile, args.counting,
            )  # fmt: skip
        name = r["challenger"]
        b, g = r["blind"], r[name]
        say(
            f"{row}: blind {b['events_reached']}, {name} {g['events_reached']} of "
            f"{r['events_available']} events (ratio {r['ratio']}); {name} reached blind's final count after "
            f"{r['guided_s_to_blind_final']} s; ops blind {b['ops']:,} {name} {g['ops']:,}; "
            f"rounds {b['rounds']}/{g['rounds']}, crashes {b['crashes']}/{g['crashes']}, "
            f"corpus {g['corpus_entries']} ({g['corpus_entries_by_argument_only']} by arguments alone; "
            f"{g['corpus_features']} features, {g['corpus_argument_features']} by argument, "
            f"{g['corpus_readback_features']} read-backs; {g['corpus_entries_by_readback_only']} entries by read-backs "
            "alone), "
            f"load {r['loadavg_1m_after']}; "
            f"only {name}: {r['only_guided']}; recipes {g.get('recipes')} first reached {g.get('recipe_events')}"
        )
        if "profile_ratios" in r:
            say(f"{row}: profile blind {b['profile']}")
            say(f"{row}: profile {name} {g['profile']}")
            say(f"{row}: profile {name}/blind {r['profile_ratios']}")
    ratios = [r["ratio"] for r in rows.values() if r["ratio"]]
    mean = geomean(ratios)
    print_figures(
        {
            "seconds_per_strategy": args.seconds,
            "values": args.values,
            "layout": args.layout,
            "pace": args.pace or None,
            "kinds": args.kinds or "the rows'",
            "recipes": args.recipes,
            "readback": args.readback,
            "round_seconds": ROUND_SECONDS,
            "rows": rows,
            "rows_without_blind_events": sorted(k for k, r in rows.items() if not r["ratio"]),
            "events_ratio_geomean": round(mean, 3) if mean is not None else None,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
