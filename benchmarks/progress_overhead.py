#!/usr/bin/env python3
"""Does logging progress slow the executor? The same run with frequent and with no progress lines.

Runs ``iofuzz.quick`` (one seed, a large fuzz_count) in one avocado job as two
tests: progress every 0.2 s and progress every 10000 s (never, in practice),
one after the other (``--max-parallel-tasks 1``), and prints each test's
executor throughput from its summary and their ratio.

Usage: python benchmarks/progress_overhead.py [--fuzz-count C]
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

from benchmarks._common import BenchmarkError, print_figures, ratio, say

AVOCADO = Path(sys.executable).with_name("avocado")


def run(results: Path, interval: str, fuzz_count: int) -> dict:
    command = [str(AVOCADO), "run", "iofuzz.quick", "--job-results-dir", str(results), "--disable-sysinfo"]
    command += ["--max-parallel-tasks", "1"]
    for item in ("fuzz_seed=77", f"fuzz_count={fuzz_count}", f"iofuzz_progress_interval={interval}"):
        command += ["--vt-extra-params", item]
    # avocado runs the installed package, as for users (`pip install --no-deps .` after a change)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    (job,) = results.glob("job-*")
    (test,) = json.loads((job / "results.json").read_text())["tests"]
    if test["status"] != "PASS":
        raise BenchmarkError(f"progress every {interval} s: {test['status']}\n{proc.stdout}{proc.stderr}")
    log = (Path(test["logdir"]) / "debug.log").read_text()
    summary = json.loads((Path(test["logdir"]) / "data" / "summary.json").read_text())
    return {"ops_per_s": summary["ops_per_s"], "lines": log.count("progress: ")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz-count", type=int, default=200000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        often = run(Path(tmp) / "often", "0.2", args.fuzz_count)
        never = run(Path(tmp) / "never", "10000", args.fuzz_count)
    say(f"progress every 0.2 s: {often['ops_per_s']:.0f} ops/s ({often['lines']} lines)")
    say(f"no progress lines   : {never['ops_per_s']:.0f} ops/s ({never['lines']} lines)")
    figures = {
        "ops_per_s_with_progress": often["ops_per_s"],
        "ops_per_s_without": never["ops_per_s"],
        "progress_lines": often["lines"],
        "ratio_with_over_without": round(ratio(often["ops_per_s"], never["ops_per_s"]), 3),
    }
    say(f"ratio: {figures['ratio_with_over_without']}")
    print_figures(figures)


if __name__ == "__main__":
    main()
