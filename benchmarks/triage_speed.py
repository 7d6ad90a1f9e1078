#!/usr/bin/env python3
"""How fast triage minimizes real crashers buried in noise: time, replays and final size per case.

Each case is a crash this machine's QEMU (7.2) really has, as a qtest script
with ~400 harmless ops in front (CMOS and DMA page registers, random values,
seeded) and the crashing ops spread among their last quarter (kept together
where they race a device timer). Triage gets
the script and the QEMU args only (``triage_script``: what ``avocado iofuzz
replay SCRIPT --qemu-args ARGS --minimize`` does), minimizes it keeping the
crash's signature, and verifies reproducer.sh as written (3 runs).

Usage: python benchmarks/triage_speed.py [--noise N] [--seed S] [--only NAME]
The last line is JSON: one entry per case.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avocado_iofuzz.repro.pipeline import TriageOptions, triage_script
from avocado_iofuzz.repro.qtest import parse_script
from avocado_iofuzz.repro.qtest_run import QtestTarget
from benchmarks._common import BenchmarkError, print_figures, say


@dataclass(frozen=True)
class Crasher:
    name: str
    args: tuple[str, ...]
    script: str  # the ops that crash it, qtest lines
    expect: str  # a piece of the message (or status) the crash shows
    spread: bool = True  # False: its ops stay together (a race with a device timer)


CRASHERS = [
    Crasher(
        "hyperv-sint-route-create", ("-machine", "pc", "-device", "hyperv-testdev"),
        "outl 0x3000 0x10000\n", "sint_route_create",
    ),
    Crasher(
        "hyperv-msg-conn-destroy", ("-machine", "pc", "-device", "hyperv-testdev"),
        "outl 0x3000 0x50000\n", "msg_conn_destroy",
    ),
    Crasher(
        "hyperv-evt-conn-destroy", ("-machine", "pc", "-device", "hyperv-testdev"),
        "outl 0x3000 0x70000\n", "evt_conn_destroy",
    ),
    Crasher("pvpanic", ("-machine", "pc", "-device", "pvpanic"), "outb 0x505 0x1\n", "status 0"),
    Crasher(  # BAR0 at 0xfea00000, memory decoding on, a DMA from address 0: hw_error 100 ms later
        "edu-dma-timer", ("-machine", "pc", "-nodefaults", "-device", "edu"),
        "outl 0xcf8 0x80001010\noutl 0xcfc 0xfea00000\noutl 0xcf8 0x80001004\noutw 0xcfc 0x7\n"
        "writel 0xfea00098 0x1\n",
        "EDU: DMA range",
    ),
    Crasher(  # what triage made of the VT run's 641 k ops: interrupt cause and mask, then MSI-X on
        "e1000e-throttling-timer", ("-machine", "pc", "-nodefaults", "-device", "e1000e"),
        "outl 0xcf8 0x80001010\noutl 0xcfc 0xfeba0000\noutl 0xcf8 0x80001004\noutb 0xcfc 0x2\n"
        "writeb 0xfeba00c8 0x4\nwriteb 0xfeba00d0 0x4\noutl 0xcf8 0x800010a0\noutl 0xcfc 0x80000000\n",
        # MSI-X must come on before the throttling timer fires: noise in between loses the race
        "e1000e_intrmgr_on_throttling_timer", spread=False,
    ),
]  # fmt: skip


def noisy_script(crasher: Crasher, noise: int, seed: int) -> str:
    """``noise`` harmless ops, the crasher's lines spread over the last quarter, in their order."""
    rng = random.Random(seed)
    lines = []
    for _ in range(noise):
        port = rng.choice([0x70, 0x71, *range(0x81, 0x88)])
        lines.append(f"inb {port:#x}" if rng.random() < 0.3 else f"outb {port:#x} {rng.randrange(256):#x}")
    crashing = crasher.script.splitlines()
    if not crasher.spread:
        spot = rng.randrange(noise * 3 // 4, noise + 1)
        return "\n".join([*lines[:spot], *crashing, *lines[spot:]]) + "\n"
    spots = sorted(rng.randrange(noise * 3 // 4, noise + 1) for _ in crashing)
    for offset, (spot, line) in enumerate(zip(spots, crashing, strict=True)):
        lines.insert(spot + offset, line)
    return "\n".join(lines) + "\n"


def run_case(crasher: Crasher, binary: str, noise: int, seed: int, workdir: Path) -> dict:
    text = noisy_script(crasher, noise, seed)
    ops = parse_script(text, crasher.name)
    started = time.monotonic()
    result = triage_script(ops, QtestTarget(binary, crasher.args), workdir / crasher.name, TriageOptions())
    seconds = time.monotonic() - started
    if not result.reproduced or result.signature is None:
        raise BenchmarkError(f"{crasher.name}: not reproduced: {result.summary()}")
    shown = result.signature.describe()
    if crasher.expect not in shown:
        raise BenchmarkError(f"{crasher.name}: the crash was {shown!r}, expected {crasher.expect!r}")
    final_lines = (workdir / crasher.name / "reproducer.qtest").read_text().count("\n")
    figures = {
        "case": crasher.name,
        "lines_before": text.count("\n"),
        "lines_after": final_lines,
        "ops_after": len(result.ops),
        "replays": result.replays,
        "seconds": round(seconds, 2),
        "verified": result.verified,
        "clock": result.clock,
        "args": list(result.qemu_args),
    }
    say(
        f"{crasher.name}: {figures['lines_before']} -> {final_lines} lines, {result.replays} replays, "
        f"{seconds:.1f} s, reproducer.sh verified {result.verified} (clock {result.clock})"
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=int, default=400, help="harmless ops in front (default 400)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", default=None, help="one case by name")
    options = parser.parse_args()
    binary = shutil.which("qemu-system-x86_64")
    if binary is None:
        raise BenchmarkError("qemu-system-x86_64 is not installed")
    cases = [c for c in CRASHERS if options.only in (None, c.name)]
    if not cases:
        raise BenchmarkError(f"no case named {options.only!r}: {', '.join(c.name for c in CRASHERS)}")
    with tempfile.TemporaryDirectory(prefix="triage-speed-") as workdir:
        results = [run_case(c, binary, options.noise, options.seed, Path(workdir)) for c in cases]
    print_figures({"noise": options.noise, "seed": options.seed, "cases": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
