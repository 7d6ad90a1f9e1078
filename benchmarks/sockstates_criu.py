#!/usr/bin/env python3
"""sockstates --criu in the Debian guest: states verified per minute, and what CRIU fails on.

Builds (or takes from the cache) the Debian guest, boots it in a bare QEMU
under the probed accelerator, runs one C/R sweep in it, detached from the
console, and reads the results back. Prints:

* states verified per minute (dumped, restored and checked, whatever the verdict);
* seconds per state, median and slowest, and the time of the guest's build and boot;
* the states CRIU did not restore intact, by kind (which socket types the state
  holds) and by depth, and their reasons grouped (`sockstates.findings`).

With ``--host-criu PATH`` (or ``--host-criu build``: Debian trixie's CRIU,
built by ``avocado_iofuzz.host_criu``), the same sweep also runs on the host
with that CRIU (root; CRIU >= 4.1 on kernels >= 6.13), and it prints the
host's rate against the guest's, and which states fail under one CRIU but
not the other: what a newer CRIU fixed, and what it broke.

Usage: python benchmarks/sockstates_criu.py [--depth 3] [--types stream,dgram,seqpacket]
       [--names abstract] [--save DIR] [--host-criu PATH|build]
The last line is JSON: the figures above. ``--save`` keeps results.jsonl and
summary.json for a closer look.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code is what we measure

from benchmarks._common import REPO, BenchmarkError, print_figures, say, stopwatch

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


def sweep_on_host(args: argparse.Namespace, criu: str, out: Path) -> tuple[list[dict], dict, float]:
    argv = [sys.executable, "-m", "sockstates", "--criu", "--depth", str(args.depth), "--types", args.types,
            "--names", args.names, "--criu-bin", criu, "--out", str(out)]
    with stopwatch() as took:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout, check=False,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    if not (out / "summary.json").is_file():
        raise BenchmarkError(f"the host sweep wrote no summary (status {proc.returncode}): {proc.stderr[-800:]}")
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    return records, json.loads((out / "summary.json").read_text()), took[0]


def analyse(where: str, records: list[dict], summary: dict, wall: float) -> dict[str, Any]:
    """Print what one sweep found; returns its figures."""
    from sockstates import findings

    if not records:
        raise BenchmarkError(f"the sweep ({where}) recorded no state")
    seconds = [r["seconds"] for r in records]
    counts = Counter(r["verdict"] for r in records)
    verified = counts["intact"] + counts["failed"]
    bad = [r for r in records if r["verdict"] in ("failed", "error")]
    by_kind = Counter(kind(r["description"]) for r in records)
    bad_by_kind = Counter(kind(r["description"]) for r in bad)
    bad_by_depth = Counter(r["depth"] for r in bad)
    groups = findings.grouped(records)

    say(f"== {where}: {summary['line']}")
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
    return {
        "criu_version": summary["criu_version"],
        "states": len(records),
        "counts": dict(counts),
        "states_verified_per_minute": round(60 * verified / summary["seconds"], 2),
        "seconds_per_state_median": round(statistics.median(seconds), 3),
        "failed_by_kind": {k: [bad_by_kind[k], by_kind[k]] for k in sorted(by_kind)},
        "groups": [[g, n] for g, n, _ in groups],
    }


def compare(guest: list[dict], host: list[dict], guest_version: str, host_version: str) -> dict[str, list[str]]:
    """States not intact under one CRIU only, and under both (same sweep, so the same states)."""
    bad_guest = {r["description"] for r in guest if r["verdict"] != "intact"}
    bad_host = {r["description"] for r in host if r["verdict"] != "intact"}
    if {r["description"] for r in guest} != {r["description"] for r in host}:
        raise BenchmarkError("the guest and host sweeps visited different states: not comparable")
    diff = {
        f"only_{guest_version}": sorted(bad_guest - bad_host),
        f"only_{host_version}": sorted(bad_host - bad_guest),
        "both": sorted(bad_guest & bad_host),
    }
    for name, states in diff.items():
        say(f"not intact {name.replace('_', ' with ')}: {len(states)}" + (f"  (e.g. {', '.join(states[:4])})"
                                                                             if states else ""))
    return diff


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--types", default="stream,dgram,seqpacket")
    parser.add_argument("--names", default="abstract")
    parser.add_argument("--timeout", type=float, default=6 * 3600.0)
    parser.add_argument("--save", type=Path, help="keep results.jsonl and summary.json here")
    parser.add_argument("--host-criu", metavar="PATH|build", help="also sweep on the host with this CRIU (root)")
    args = parser.parse_args()

    from avocado_iofuzz.guest.build import build_guest
    from avocado_iofuzz.vm.bare import BareQemu

    host_criu = args.host_criu
    if host_criu == "build":
        from avocado_iofuzz.host_criu import host_criu as build_host_criu

        host_criu = str(build_host_criu())
    if host_criu and os.geteuid() != 0:
        raise BenchmarkError("--host-criu: CRIU dumps need root")

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
    figures = analyse(f"guest ({vm.accel})", records, summary, wall)
    figures.update({"accel": vm.accel, "depth": args.depth, "types": args.types,
                    "boot_s": round(booted[0], 2), "build_s": round(built[0], 2)})
    if host_criu:
        with tempfile.TemporaryDirectory(prefix="sockstates-bench-host-") as host_dir:
            host_records, host_summary, host_wall = sweep_on_host(args, host_criu, Path(host_dir) / "out")
        host = analyse("host", host_records, host_summary, host_wall)
        host["vs_guest_rate"] = round(host["states_verified_per_minute"] / figures["states_verified_per_minute"], 2)
        say(f"host CRIU {host['criu_version']} verifies {host['vs_guest_rate']}x the states per minute of "
            f"guest CRIU {figures['criu_version']} under {vm.accel}")
        host["not_intact"] = compare(records, host_records, figures["criu_version"], host["criu_version"])
        figures["host"] = host
    print_figures(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
