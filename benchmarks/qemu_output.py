#!/usr/bin/env python3
"""A row whose device warns on every access: QEMU's output to a file (ours) vs a log record per line.

Runs ``avocado run REFERENCE`` with ``qemu_output=log`` (avocado-vt's way: each
line QEMU prints is a ``[qemu output]`` record in debug.log) and with
``qemu_output=file`` (every line to ``qemu-output-vm1.log``, a throttled share
in debug.log), alternately, same seed, and prints each job's seconds, the
test's own seconds, the ops done, the lines of debug.log and of QEMU's output
file, and the ratio of the best test times.

Usage: python benchmarks/qemu_output.py [--reference iofuzz.quick.nic.i82559er]
       [--fuzz-count 200] [--runs 1] [--param mmio_max_size=0x40 ...]
The last line is JSON: the runs and ``speedup`` (log's test seconds / file's).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avocado_iofuzz.vm.qemu_output import expand_lines
from benchmarks._common import BenchmarkError, print_figures, ratio, run_in_own_group, say, stopwatch

AVOCADO = Path(sys.executable).with_name("avocado")
JOB_TIMEOUT = 3600.0  # the baseline of a warning row can take many minutes
INTERRUPT_GRACE = 60.0
MODES = ("log", "file")  # baseline first: a warm page cache then favours ours no more than it
SEED = "1"


def count_lines(path: Path) -> tuple[int, int]:
    """(lines in the file, lines QEMU printed): runs of one line are written once with their count."""
    if not path.exists():
        return 0, 0
    with path.open(encoding="utf-8", errors="replace") as handle:
        written = handle.read().splitlines()
    return len(written), sum(1 for _ in expand_lines(written))


def run_job(reference: str, params: Sequence[str], mode: str, workdir: Path) -> dict[str, Any]:
    results = workdir / "results"
    results.mkdir(parents=True, exist_ok=True)
    command = [str(AVOCADO), "run", reference, "--job-results-dir", str(results), "--disable-sysinfo"]
    for param in (f"fuzz_seed={SEED}", *params, f"qemu_output={mode}"):
        command += ["--vt-extra-params", param]
    with stopwatch() as job_seconds:
        output = run_in_own_group(command, workdir, JOB_TIMEOUT, INTERRUPT_GRACE)
    jobs = sorted(results.glob("job-*"))
    if not jobs:
        raise BenchmarkError(f"avocado left no job directory:\n{output}")
    test = json.loads((jobs[-1] / "results.json").read_text())["tests"][0]
    if test["status"] not in ("PASS", "WARN"):
        raise BenchmarkError(f"{mode}: the test ended {test['status']}: {test.get('fail_reason')}")
    logdir = Path(test["logdir"])
    summary = json.loads((logdir / "data" / "summary.json").read_text())
    debug_log = (logdir / "debug.log").read_text(errors="replace")
    file_lines, printed = count_lines(logdir / "qemu-output-vm1.log")
    return {
        "mode": mode,
        "job_s": round(job_seconds[0], 1),
        "test_s": round(float(test["time_elapsed"]), 1),
        "ops": sum(r["ops_done"] for r in summary["ranges"]),
        "debug_log_lines": debug_log.count("\n"),
        "qemu_output_records": debug_log.count("[qemu output]"),
        "qemu_output_file_lines": file_lines,
        "qemu_output_file_expands_to": printed,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="iofuzz.quick.nic.i82559er")
    parser.add_argument("--fuzz-count", type=int, default=200)
    parser.add_argument("--runs", type=int, default=1, help="runs of each mode, alternating")
    parser.add_argument("--param", action="append", default=[], help="KEY=VALUE for --vt-extra-params, repeatable")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the jobs here (default: a temp dir)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-qemu-output-"))
    runs = []
    for number in range(args.runs):
        for mode in MODES:
            params = [f"fuzz_count={args.fuzz_count}", *args.param]
            run = run_job(args.reference, params, mode, workdir / f"{mode}-{number}")
            say(
                f"{mode:4}: job {run['job_s']} s, test {run['test_s']} s, {run['ops']:,} ops; debug.log "
                f"{run['debug_log_lines']:,} lines ({run['qemu_output_records']:,} [qemu output]); "
                f"qemu-output-vm1.log {run['qemu_output_file_lines']:,} lines "
                f"({run['qemu_output_file_expands_to']:,} expanded)"
            )
            runs.append(run)
    best = {mode: min(r["test_s"] for r in runs if r["mode"] == mode) for mode in MODES}
    speedup = ratio(best["log"], best["file"])
    row = " ".join([args.reference, *args.param, f"fuzz_count={args.fuzz_count}"])
    say(f"{row}: test {best['log']} s logged line by line, {best['file']} s to a file: {speedup:.1f}x")
    figures = {"reference": args.reference, "fuzz_count": args.fuzz_count, "params": args.param, "runs": runs}
    print_figures({**figures, "speedup": speedup})
    return 0


if __name__ == "__main__":
    sys.exit(main())
