"""What the benchmark scripts share: a booted guest, timing, and the JSON last line."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class BenchmarkError(RuntimeError):
    """A benchmark cannot measure what it set out to (wrong guest, a run that did not complete)."""


@dataclass
class Samples:
    """Throughput of repeated runs of one method: ops per second of each."""

    name: str
    ops: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def add(self, ops: int, seconds: float) -> None:
        if seconds <= 0:
            raise BenchmarkError(f"{self.name}: a run took {seconds} s; the clock cannot measure it")
        self.ops.append(ops)
        self.seconds.append(seconds)

    @property
    def rates(self) -> list[float]:
        return [n / s for n, s in zip(self.ops, self.seconds, strict=True)]

    @property
    def best(self) -> float:
        """The fastest run: on a shared machine noise only ever slows a run down."""
        if not self.ops:
            raise BenchmarkError(f"{self.name}: no run was measured")
        return max(self.rates)

    def describe(self) -> str:
        rates = self.rates
        spread = f", median {statistics.median(rates):,.0f}" if len(rates) > 2 else ""
        return (
            f"{self.name}: best {self.best:,.0f} ops/s over {len(rates)} run(s) of "
            f"{self.ops[0]:,} ops{spread} ({', '.join(f'{r:,.0f}' for r in rates)})"
        )


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.inf


@contextlib.contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as elapsed:`` ... ``elapsed[0]`` holds the seconds once the block ends."""
    elapsed = [0.0]
    started = time.perf_counter()
    try:
        yield elapsed
    finally:
        elapsed[0] = time.perf_counter() - started


def say(message: str) -> None:
    """A human-readable line; the last line of a benchmark's output is its JSON."""
    print(message, flush=True)


def print_figures(figures: dict[str, Any]) -> None:
    """The last line: the figures as one JSON object, for comparison across commits."""
    print(json.dumps(figures, sort_keys=True), flush=True)


def use_checkout() -> None:
    """Import avocado_iofuzz from this checkout (what we measure), not from an installed copy."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def avocado_env() -> dict[str, str]:
    """avocado runs the installed package, as for users (`pip install --no-deps .` after a change)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


# A benchmark started in the background by a shell without job control inherits SIGINT ignored, and
# so would avocado: restore SIGINT's default action in the child, then become avocado (same PID).
_DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
)


def run_in_own_group(command: list[str], workdir: Path, timeout: float, interrupt_grace: float) -> str:
    """Run avocado in a process group of its own; after ``timeout`` interrupt it (avocado-vt then
    destroys its VM), and kill what is left of the group if that does not end it in ``interrupt_grace``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _DEFAULT_SIGINT, *command], env=avocado_env(), cwd=workdir,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(interrupt_grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return output
