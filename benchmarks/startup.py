#!/usr/bin/env python3
"""Seconds from ``avocado run iofuzz`` to the first fuzz op, by phase, with a warm guest cache.

Phases, each ending where the next one starts:

  avocado         launch -> the test's first log line (CLI, resolver, job, runner processes)
  qemu_start      -> QEMU lets the guest run ('cont'): avocado-vt's preprocess, the guest
                  cache and accelerator lookups, QEMU's start
  boot            -> the shell prompt on the console (firmware, kernel, init)
  login           -> the test's first command echoed by the guest
  executor_ready  -> '@IOFUZZ READY' (reading /proc/ioports, planning, the trace's
                  write-ahead, starting the executor, which performs its first op next)

Console times come from QEMU's own ``serial_write`` trace events (passed in with
``--vt-extra-params extra_params=...``): microseconds, on the host clock. Also
measured: the whole job, the size of the default run's trace, and the time to
build the guest into an empty cache (downloaded packages reused unless
``--download``) and to probe the accelerator without its cached verdict.

Usage: python benchmarks/startup.py [--runs N] [--reference iofuzz] [--download]
The last line is JSON: first_op_s and the phases of the fastest run.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code is what we measure

from avocado_iofuzz.guest.busybox import PROMPT_TEXT
from benchmarks._common import BenchmarkError, print_figures, run_in_own_group, say, stopwatch
from benchmarks.console_timeline import ConsoleTimeline, read_serial_trace

AVOCADO = Path(sys.executable).with_name("avocado")
JOB_TIMEOUT = 900.0
INTERRUPT_GRACE = 60.0
PHASES = ("avocado", "qemu_start", "boot", "login", "executor_ready")
_LOG_TIME = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
GUEST_RELEASED = "Sending command 'cont'"  # avocado-vt starts QEMU with -S and sends 'cont' when it is set up
FIRST_COMMAND = "cat /proc/ioports"  # the VT test's first command after login
READY = "@IOFUZZ READY"


def log_line_time(line: str) -> float | None:
    """Unix time of an avocado log line (local time, millisecond stamps), None for a line without one."""
    match = _LOG_TIME.search(line)
    if match is None:
        return None
    return datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def debug_log_times(text: str) -> tuple[float, float]:
    """(first line, guest released) times of a VT test's debug.log."""
    times = (log_line_time(line) for line in text.splitlines())
    first = next((t for t in times if t is not None), None)
    released = next((log_line_time(line) for line in text.splitlines() if GUEST_RELEASED in line), None)
    if first is None or released is None:
        raise BenchmarkError(f"debug.log lacks a timestamped line or {GUEST_RELEASED!r}: avocado-vt changed?")
    return first, released


def phase_seconds(launched: float, test_started: float, released: float, console: ConsoleTimeline) -> dict[str, float]:
    """Each phase's seconds; raises naming the console marker that never came."""
    marks = {"avocado": test_started, "qemu_start": released}
    for phase, marker in (("boot", PROMPT_TEXT), ("login", FIRST_COMMAND), ("executor_ready", READY)):
        when = console.first(marker, after=max(marks.values()))
        if when is None:
            raise BenchmarkError(f"the console never showed {marker!r} after the {list(marks)[-1]} phase")
        marks[phase] = when
    previous, seconds = launched, {}
    for phase in PHASES:
        seconds[phase] = marks[phase] - previous
        previous = marks[phase]
    return seconds


def run_job(reference: str, workdir: Path) -> dict[str, Any]:
    """One ``avocado run``; its phases, job time, result and trace size."""
    console_log = workdir / "serial-events.log"
    results = workdir / "results"
    command = [
        str(AVOCADO), "run", reference, "--job-results-dir", str(results),
        "--vt-extra-params", f"extra_params=-msg timestamp=on -trace serial_write -D {console_log}",
    ]  # fmt: skip
    launched = time.time()
    with stopwatch() as job_seconds:
        output = run_in_own_group(command, workdir, JOB_TIMEOUT, INTERRUPT_GRACE)
    jobs = sorted(results.glob("job-*"))
    if not jobs:
        raise BenchmarkError(f"avocado left no job directory:\n{output}")
    test = json.loads((jobs[-1] / "results.json").read_text())["tests"][0]
    if test["status"] not in ("PASS", "WARN"):
        raise BenchmarkError(f"the test ended {test['status']}: {test.get('fail_reason')}")
    logdir = Path(test["logdir"])
    test_started, released = debug_log_times((logdir / "debug.log").read_text(errors="replace"))
    phases = phase_seconds(launched, test_started, released, read_serial_trace(console_log))
    summary = json.loads((logdir / "data" / "summary.json").read_text())
    return {
        "phases": phases,
        "first_op_s": sum(phases.values()),
        "job_s": job_seconds[0],
        "status": test["status"],
        "ops": sum(r["ops_done"] for r in summary["ranges"]),
        "fuzz_count": summary["fuzz_count"],
        "trace_bytes": (logdir / "data" / "trace.iofuzz").stat().st_size,
    }


def cold_build(download: bool) -> dict[str, float]:
    """Seconds to build the default guest into an empty cache, and to probe the accelerator afresh."""
    from avocado_iofuzz.executor.build import build_executor
    from avocado_iofuzz.guest.accel import probe_accelerator
    from avocado_iofuzz.guest.build import default_guest
    from avocado_iofuzz.guest.cache import resolve_cache_root

    warm = resolve_cache_root(None)
    with tempfile.TemporaryDirectory(prefix="iofuzz-cold-") as tmp:
        root = Path(tmp)
        if not download and (warm / "debs").is_dir():
            (root / "debs").symlink_to(warm / "debs")  # the packages, not what was built from them
        with stopwatch() as executor_seconds:
            build_executor(root / "executor")
        with stopwatch() as guest_seconds:
            default_guest(cache_root=root)
        with stopwatch() as probe_seconds:
            choice = probe_accelerator(cache_root=root)
    say(f"cold cache: executor {executor_seconds[0]:.2f} s, guest {guest_seconds[0]:.2f} s (kernel, busybox, "
        f"initramfs{', downloads' if download else '; packages already downloaded'}), "
        f"accelerator probe {probe_seconds[0]:.2f} s -> {choice.name}")  # fmt: skip
    return {
        "cold_build_s": round(guest_seconds[0], 2),
        "cold_executor_build_s": round(executor_seconds[0], 2),
        "cold_accel_probe_s": round(probe_seconds[0], 2),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="avocado jobs to run; the fastest counts (%(default)s)")
    parser.add_argument("--reference", default="iofuzz", help="what to pass to avocado run (%(default)s)")
    parser.add_argument("--download", action="store_true", help="cold build downloads the packages too")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-cache build")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from avocado_iofuzz.guest.accel import probe_accelerator
    from avocado_iofuzz.guest.build import default_guest

    default_guest()  # warm cache: what a second `avocado run` finds
    accel = probe_accelerator()
    say(f"warm guest cache; accelerator {accel.name} ({accel.reason})")
    runs = []
    for n in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="iofuzz-startup-") as tmp:
            run = run_job(args.reference, Path(tmp))
        runs.append(run)
        phases = "  ".join(f"{name} {seconds:.2f}" for name, seconds in run["phases"].items())
        say(f"run {n + 1}: first op after {run['first_op_s']:.2f} s  ({phases})  job {run['job_s']:.1f} s")
    best = min(runs, key=lambda r: r["first_op_s"])
    say(
        f"default run: fuzz_count {best['fuzz_count']}, {best['ops']:,} ops, trace {best['trace_bytes']:,} bytes; "
        f"first op: best {best['first_op_s']:.2f} s, median {statistics.median(r['first_op_s'] for r in runs):.2f} s "
        "(target <= 10 s under TCG)"
    )
    figures: dict[str, Any] = {
        "first_op_s": round(best["first_op_s"], 2),
        **{f"{name}_s": round(seconds, 2) for name, seconds in best["phases"].items()},
        "first_op_s_all": [round(r["first_op_s"], 2) for r in runs],
        "job_s": round(best["job_s"], 2),
        "default_run_ops": best["ops"],
        "default_run_trace_bytes": best["trace_bytes"],
        "accelerator": accel.name,
    }
    if not args.no_cold:
        figures.update(cold_build(args.download))
    print_figures(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
