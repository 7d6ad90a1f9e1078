#!/usr/bin/env python3
"""Shards side by side on one host: one avocado job, run serially and in parallel.

Runs the same campaign (``iofuzz.quick`` split into N shards, one seed) as two
avocado jobs, ``--max-parallel-tasks 1`` and ``--max-parallel-tasks N``, with
avocado's ordinary process spawner, and prints both job times, the speed-up,
the ops each shard did and the ops per second of the whole job. The ratio is
what a host with this many cores gains: each shard boots its own VM, so boot
and login overlap as well as fuzzing.

Usage: python benchmarks/parallel_shards.py [--shards N] [--fuzz-count C]
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import BenchmarkError, print_figures, ratio, say, stopwatch

AVOCADO = Path(sys.executable).with_name("avocado")


def run_job(results: Path, shards: int, parallel: int, fuzz_count: int) -> tuple[float, dict]:
    params = {"iofuzz_shards": str(shards), "fuzz_seed": "2024", "fuzz_count": str(fuzz_count)}
    command = [str(AVOCADO), "run", "iofuzz.quick", "--job-results-dir", str(results), "--disable-sysinfo"]
    command += ["--max-parallel-tasks", str(parallel)]
    for key, value in params.items():
        command += ["--vt-extra-params", f"{key}={value}"]
    # avocado runs the installed package, as for users (`pip install --no-deps .` after a change)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with stopwatch() as elapsed:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    (job,) = results.glob("job-*")
    statuses = [t["status"] for t in json.loads((job / "results.json").read_text())["tests"]]
    if statuses != ["PASS"] * shards:
        raise BenchmarkError(f"job with {parallel} parallel tasks: {statuses}\n{proc.stdout}{proc.stderr}")
    return elapsed[0], json.loads((job / "iofuzz" / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--fuzz-count", type=int, default=200000)
    args = parser.parse_args()
    figures = {"shards": args.shards, "cpus": os.cpu_count(), "fuzz_count": args.fuzz_count}
    with tempfile.TemporaryDirectory() as tmp:
        for parallel in (1, args.shards):
            seconds, merged = run_job(Path(tmp) / f"p{parallel}", args.shards, parallel, args.fuzz_count)
            key = "serial" if parallel == 1 else "parallel"
            figures[f"{key}_job_s"] = round(seconds, 1)
            figures[f"{key}_ops_per_job_s"] = round(merged["ops_done_total"] / seconds)
            say(f"{key:8}: {seconds:6.1f} s for {merged['ops_done_total']} ops in {args.shards} shards")
    figures["speedup"] = round(ratio(figures["serial_job_s"], figures["parallel_job_s"]), 2)
    say(f"parallel speed-up: {figures['speedup']}x on {os.cpu_count()} CPUs")
    print_figures(figures)


if __name__ == "__main__":
    main()
