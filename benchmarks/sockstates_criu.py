#!/usr/bin/env python3
"""sockstates --criu in the Debian guest: states verified per minute, and what CRIU fails on.

Builds (or takes from the cache) the Debian guest, boots it in a bare QEMU
under the probed accelerator, runs one C/R sweep in it, detached from the
console, and reads the results back. Prints:

* states verified per minute (dumped, restored and checked, whatever the verdict);
* seconds per state, median and slowest, and the time of the guest's build and boot;
* the states CRIU did not restore intact, by kind (which socket types the state
  holds) and by depth, and their reasons grouped (`sockstates.findings`).

Usage: python benchmarks/sockstates_criu.py [--depth 3] [--types stream,dgram,seqpacket]
       [--names abstract] [--save DIR]
The last line is JSON: the figures above. ``--save`` keeps results.jsonl and
summary.json for a closer look.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code is what we measure

from benchmarks._common import BenchmarkError, print_figures, say, stopwatch

GUEST_DIR = "/tmp/sockstates-bench"
POLL_SECONDS = 15.0
TYPE_WORDS = {"S": "stream", "D": "dgram", "P": "seqpacket"}


def kind(description: str) -> str:
    """The socket types a state holds, e.g. 'dgram' or 'stream+dgram'; 'none' for the empty state."""
    types = sorted({token[0] for token in description.split("_") if token[:1] in TYPE_WORDS}, key="SDP".index)
    return "+".join(TYPE_WORDS[t] for t in types) or "none"


def fetch(session: Any, directory: str) -> dict[str, bytes]:
    text = session.cmd_output(f"tar czf - -C {directory} results.jsonl summary.json | base64", timeout=600)
    data = base64.b64decode("".join(line.strip() for line in text.splitlines() if line.strip()))
    files = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive:
            stream = archive.extractfile(member)
            if stream is not None:
                files[Path(member.name).name] = stream.read()
    return files


def sweep_in_guest(session: Any, args: argparse.Namespace) -> float:
    command = (f"sockstates --criu --depth {args.depth} --types {args.types} --names {args.names} "
               f"--out {GUEST_DIR} > {GUEST_DIR}.log 2>&1; echo $? > {GUEST_DIR}.status")
    session.cmd(f"rm -rf {GUEST_DIR} {GUEST_DIR}.status; setsid -f sh -c '{command}' </dev/null >/dev/null 2>&1")
    started = time.monotonic()
    while session.cmd_status(f"test -e {GUEST_DIR}.status", timeout=60) != 0:
        if time.monotonic() - started > args.timeout:
            raise BenchmarkError(f"the sweep did not finish within {args.timeout:.0f} s")
        time.sleep(POLL_SECONDS)
        done = session.cmd_output(f"wc -l < {GUEST_DIR}/results.jsonl 2>/dev/null || echo 0", timeout=60).strip()
        say(f"  ... {done} states after {time.monotonic() - started:.0f} s")
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--types", default="stream,dgram,seqpacket")
    parser.add_argument("--names", default="abstract")
    parser.add_argument("--timeout", type=float, default=6 * 3600.0)
    parser.add_argument("--save", type=Path, help="keep results.jsonl and summary.json here")
    args = parser.parse_args()

    from avocado_iofuzz.guest.build import build_guest
    from avocado_iofuzz.vm.bare import BareQemu
    from sockstates import findings

    with stopwatch() as built:
        guest = build_guest("debian")
    say(f"Debian guest {guest.key}: ready in {built[0]:.1f} s (cached unless an input changed)")
    with tempfile.TemporaryDirectory(prefix="sockstates-bench-") as run_dir:
        vm = BareQemu(guest, Path(run_dir), memory_mb=1024)
        with vm:
            with stopwatch() as booted:
                session = vm.login(180)
            say(f"booted to a prompt in {booted[0]:.1f} s under {vm.accel} ({vm.accel_reason})")
            say(f"sweep: depth {args.depth}, types {args.types}, names {args.names}")
            wall = sweep_in_guest(session, args)
            files = fetch(session, GUEST_DIR)
    records = [json.loads(line) for line in files["results.jsonl"].decode().splitlines() if line.strip()]
    summary = json.loads(files["summary.json"])
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (args.save / name).write_bytes(data)
    if not records:
        raise BenchmarkError("the sweep recorded no state")

    seconds = [r["seconds"] for r in records]
    counts = Counter(r["verdict"] for r in records)
    verified = counts["intact"] + counts["failed"]
    bad = [r for r in records if r["verdict"] in ("failed", "error")]
    by_kind = Counter(kind(r["description"]) for r in records)
    bad_by_kind = Counter(kind(r["description"]) for r in bad)
    bad_by_depth = Counter(r["depth"] for r in bad)
    groups = findings.grouped(records)

    say(summary["line"])
    say(f"CRIU {summary['criu_version']}: {len(records)} states in {wall:.0f} s of sweep; "
        f"{60 * verified / summary['seconds']:.1f} states verified per minute; per state median "
        f"{statistics.median(seconds):.2f} s, slowest {max(seconds):.2f} s")
    say("not restored intact, by kind (types the state holds):")
    for name, total in sorted(by_kind.items(), key=lambda item: (-item[1], item[0])):
        say(f"  {name:28s} {bad_by_kind[name]:4d} of {total:4d}")
    say("by depth: " + ", ".join(f"{d}: {n}" for d, n in sorted(bad_by_depth.items())))
    say("reasons:")
    for group, count, examples in groups:
        say(f"  {count:4d} x {group}  (e.g. {', '.join(examples)})")
    print_figures({
        "criu_version": summary["criu_version"],
        "accel": vm.accel,
        "depth": args.depth,
        "types": args.types,
        "states": len(records),
        "counts": dict(counts),
        "states_verified_per_minute": round(60 * verified / summary["seconds"], 2),
        "seconds_per_state_median": round(statistics.median(seconds), 3),
        "boot_s": round(booted[0], 2),
        "build_s": round(built[0], 2),
        "failed_by_kind": {k: [bad_by_kind[k], by_kind[k]] for k in sorted(by_kind)},
        "groups": [[g, n] for g, n, _ in groups],
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
