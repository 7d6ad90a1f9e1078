#!/usr/bin/env python3
"""Does pacing let a DMA engine run? QEMU's own trace of a UHCI fuzzed flat out and paced, the same ops.

One busybox guest on ``pc`` with a ``piix3-usb-uhci`` (a controller whose
frame timer, every millisecond of virtual time, walks the frame list at the
address FLBASEADD holds). The same ``dma`` range over its 32 I/O ports runs
once per pacing given (``E:U``: a pause of U us before every E-th op; ``0:0``
flat out), seed and op count the same. Per run, from QEMU's trace file
(``-trace``): frames the controller started (``usb_uhci_frame_start``), TDs
and QHs it loaded from guest memory (``usb_uhci_td_load``, ``usb_uhci_qh_load``)
and the wall time.

Usage: python benchmarks/pacing_trace.py [--fuzz-count N] [--pace 0:0,1024:1000,...]
The last line is JSON: per pacing the counts, the seconds, and counts per million ops.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import print_figures, say

EVENTS = ("usb_uhci_frame_start", "usb_uhci_td_load", "usb_uhci_qh_load")
UHCI_ID = "0x7020"
SEED = 0x5EED00DA
RUN_TIMEOUT = 300


def parse_paces(text: str) -> list[tuple[int, int]]:
    paces = []
    for item in text.split(","):
        every, _, us = item.partition(":")
        paces.append((int(every), int(us)))
    return paces


def count_events(text: str) -> dict[str, int]:
    """How many lines of each of :data:`EVENTS` a ``-trace`` log holds (``NAME `` after the pid/time prefix)."""
    counts = dict.fromkeys(EVENTS, 0)
    for line in text.splitlines():
        for name in EVENTS:
            if f"{name} " in line:
                counts[name] += 1
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    from avocado_iofuzz.executor.protocol import executor_command
    from avocado_iofuzz.guest.build import default_guest
    from avocado_iofuzz.model.dma import VALUES_DMA
    from avocado_iofuzz.model.program import RangePlan
    from avocado_iofuzz.vm.bare import BareQemu

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fuzz-count", type=int, default=100_000, help="fuzz writes per slot (%(default)s)")
    parser.add_argument("--pace", default="0:0,1024:1000,256:1000", help="pacings E:U (%(default)s)")
    args = parser.parse_args(argv)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="iofuzz-pacing-") as tmp:
        vm = BareQemu(
            default_guest(), Path(tmp) / "vm", accel="tcg", extra_args=["-device", "piix3-usb-uhci"],
            trace_events=list(EVENTS),
        )  # fmt: skip
        with vm:
            session = vm.login(120)
            name = session.cmd_output(f"grep -l {UHCI_ID} /sys/bus/pci/devices/*/device").strip().split("/")[-2]
            bars = session.cmd_output(f"cat /sys/bus/pci/devices/{name}/resource").splitlines()
            io_base = int(bars[4].split()[0], 16)  # BAR 4: the UHCI's I/O ports
            log = vm.trace_log_path
            for every, us in parse_paces(args.pace):
                plan = RangePlan(
                    0, io_base, io_base + 0x1F, "uhci", SEED, args.fuzz_count, 4, values=VALUES_DMA,
                    pause_every=every, pause_us=us,
                )  # fmt: skip
                offset = log.stat().st_size if log.exists() else 0
                started = time.monotonic()
                output = session.cmd_output(executor_command([plan], report_every=1 << 20), timeout=RUN_TIMEOUT)
                seconds = time.monotonic() - started
                time.sleep(0.5)  # the trace file catches up
                with log.open("rb") as f:
                    f.seek(offset)
                    counts = count_events(f.read().decode(errors="replace"))
                key = f"{every}:{us}"
                runs[key] = {
                    "ops": plan.op_count, "seconds": round(seconds, 2), "done": "@DONE" in output, **counts,
                    "per_mops": {k: round(v * 1e6 / plan.op_count, 1) for k, v in counts.items()},
                }  # fmt: skip
                say(f"pace {key}: {plan.op_count:,} ops in {seconds:.1f} s: {counts}")
    print_figures({"fuzz_count": args.fuzz_count, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
