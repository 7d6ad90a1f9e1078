"""The guided signal read from recorded QEMU trace files: the collector's fast read gives what it gave before.

The samples are slices of the ``-trace file=`` logs of guided rounds (QEMU
7.2, busybox guest, ``benchmarks/guided_vs_blind.py --values dma``): nvme
and virtio-net-pci, each from an executor's command line through some 60-120
ranges' marks (see data/README). ``data/collector-recorded-expected.json``
holds what the collector of main 67c4b2f (line by line, before the read loop
was made cheaper) made of them -- hits per range with the argument-qualified
keys, where each event was first seen, the background, the trace-event
switches -- written by running this module as a script against that tree:
``PYTHONPATH=<main> python selftests/unit/test_collector_recorded.py``.
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
import gzip
import json
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from avocado_iofuzz.coverage.arguments import ArgumentReader
from avocado_iofuzz.coverage.backend import list_events
from avocado_iofuzz.coverage.catalog import Catalog
from avocado_iofuzz.coverage.collector import CoverageCollector
from avocado_iofuzz.coverage.formats import find_formats_file
from avocado_iofuzz.guided.features import features_of
from avocado_iofuzz.model.program import RangePlan

DATA = Path(__file__).parent / "data"
SAMPLES = {"nvme": "trace-guided-nvme-qemu72.log.gz", "virtio-net-pci": "trace-guided-virtio-net-qemu72.log.gz"}
EXPECTED = DATA / "collector-recorded-expected.json"
QEMU = shutil.which("qemu-system-x86_64")
FORMATS = find_formats_file(QEMU) if QEMU else None
CHUNK = 65_536  # bytes QEMU "appended" between two reads: lines and console marks get cut anywhere
_MARK_BYTE = re.compile(rb"^serial_write write addr 0x00 val 0x([0-9a-f]+)$")
_PROGRESS = re.compile(r"^@P (\d+) (\d+)")
# prefixes events.toml gained after the samples were recorded: the devices' event lists as they were then
# (the net_rx_pkt group, session 9: the samples' QEMU had those events off, so they hold none of their lines)
ADDED_SINCE_RECORDING = ("net_rx_pkt_",)


def catalog_as_recorded() -> Catalog:
    catalog = Catalog.load()
    prefixes = {d: tuple(p for p in ps if p not in ADDED_SINCE_RECORDING) for d, ps in catalog.prefixes.items()}
    return dataclasses.replace(catalog, prefixes=prefixes)


def recorded_plans(sample: bytes) -> list[RangePlan]:
    """One plan per range the sample's marks name, as many ops as its last mark (the sample ends at a mark)."""
    text, ops = bytearray(), collections.Counter[int]()
    for line in sample.split(b"\n"):
        match = _MARK_BYTE.match(line)
        if match is None:
            continue
        byte = int(match[1], 16)
        if byte != 0x0A:
            text.append(byte)
            continue
        progress = _PROGRESS.match(text.decode("ascii", "replace"))
        text.clear()
        if progress is not None:
            ops[int(progress[1])] = max(ops[int(progress[1])], int(progress[2]))
    return [
        RangePlan(index=i, start=0, end=0, name=f"r{i}", seed=1, fuzz_count=max(1, ops[i]), fuzz_only=True)
        for i in range(max(ops) + 1)
    ]


def observe(device: str, tmp: Path, retire: Sequence[str] = (), retire_at: int = 0) -> dict[str, Any]:
    """What a counting collector makes of the sample, read in CHUNK pieces as a run reads a growing file.

    ``transitions`` are the switches QEMU's events took, read by read, a pattern standing for the selection's
    events it names (a switch to the state an event is in already is no transition). With ``retire``,
    those events are retired once ``retire_at`` bytes of the sample are read, and their later lines left
    out of the file, as QEMU writes no more of them.
    """
    sample = gzip.decompress((DATA / SAMPLES[device]).read_bytes())
    assert QEMU is not None
    catalog = catalog_as_recorded()
    selection = catalog.select([device], [], list_events(QEMU))
    arguments = ArgumentReader.from_file(catalog.arguments, selection.events, FORMATS)
    switches: collections.Counter[str] = collections.Counter()
    enabled: set[str] = set()
    on: set[str] = set()  # QEMU's side: the selection's events that are on
    transitions: list[list[str]] = [[]]  # per read of the file (the order within one read does not matter)

    def qmp(command: str, args: dict[str, Any]) -> None:
        switches[f"{args['name']}={args['enable']}"] += 1
        (enabled.add if args["enable"] else enabled.discard)(args["name"])
        for event in sorted(fnmatch.filter(selection.events, args["name"])):
            if (event in on) != args["enable"]:
                (on.add if args["enable"] else on.discard)(event)
                transitions[-1].append(f"{event}={args['enable']}")

    log = tmp / f"{device}.log"
    log.write_bytes(b"")
    collector = CoverageCollector(selection, log, qmp, clock=lambda: 0.0, sleep=lambda s: None, count_hits=True,
                                  arguments=arguments)  # fmt: skip
    collector.start(recorded_plans(sample))
    transitions.append([])
    retired: list[str] = []
    after_retiring = 0  # transitions before the retirement
    at = 0
    with open(log, "ab") as out:
        while at < len(sample):
            out.write(sample[at : at + CHUNK])
            out.flush()
            at += CHUNK
            collector.progress(0, 0)
            transitions.append([])
            if retire and not retired and at >= retire_at:
                after_retiring = len(transitions)
                retired = collector.retire(retire)
                sample = sample[:at] + _without(sample[at:], retired)  # QEMU writes no more of them
    collector.settle()
    later = [switch for read in transitions[after_retiring:] for switch in read]
    return {
        "hits": {str(r): dict(sorted(counts.items())) for r, counts in collector.hits.items()},
        "features": {str(r): sorted(features_of(counts)) for r, counts in collector.hits.items()},
        "first_seen": {name: [s.range_index, s.op, s.ops_total] for name, s in sorted(collector.first_seen.items())},
        "background": sorted(collector.background),
        "switches": dict(sorted(switches.items())),
        "enabled_at_end": sorted(enabled),
        "transitions": [sorted(switched) for switched in transitions],
        **({"retired": retired, "transitions_after_retiring": later} if retire else {}),
    }


def _without(rest: bytes, events: Sequence[str]) -> bytes:
    """``rest`` of the file without the events' lines (the first, cut by the last piece, stays as it is)."""
    cut = rest.find(b"\n") + 1
    names = tuple(e.encode() + b" " for e in events)
    return rest[:cut] + b"\n".join(line for line in rest[cut:].split(b"\n") if not line.startswith(names))


@pytest.mark.skipif(FORMATS is None, reason="QEMU's trace-events-all (and QEMU) are not installed")
@pytest.mark.parametrize("device", sorted(SAMPLES))
def test_the_collector_reads_a_recorded_guided_trace_as_before(device, tmp_path):
    expected = json.loads(EXPECTED.read_text(encoding="utf-8"))[device]
    seen = observe(device, tmp_path)
    assert seen["features"] == expected["features"]  # the guided signal, range by range
    for same in ("hits", "first_seen", "background"):
        assert seen[same] == expected[same], same
    # QEMU's events go on and off exactly as before, in the same order: the same lines written for the same ops
    assert seen["transitions"] == expected["transitions"]
    # a switch to the state an event is in already is no longer sent: fewer QMP calls, never more
    assert all(seen["switches"].get(key, 0) <= calls for key, calls in expected["switches"].items())
    assert set(seen["switches"]) <= set(expected["switches"])
    # the sample is one that exercises what the fast read must keep: caps, argument keys, several ranges
    assert any(n >= 128 for counts in seen["hits"].values() for n in counts.values())
    assert any("(" in key for counts in seen["hits"].values() for key in counts)
    assert len(seen["hits"]) > 10


# hot events of the samples counted by name alone: what a guided run retires once the corpus has all their buckets
HOT_BY_NAME = {
    "nvme": ["pci_nvme_mmio_read", "pci_nvme_ub_db_wr_invalid_cq", "pci_nvme_ub_db_wr_invalid_sq"],
    "virtio-net-pci": ["pci_update_mappings_add", "pci_update_mappings_del", "virtio_pci_notify_write"],
}


@pytest.mark.skipif(FORMATS is None, reason="QEMU's trace-events-all (and QEMU) are not installed")
@pytest.mark.parametrize("device", sorted(SAMPLES))
def test_retired_events_leave_every_other_key_of_the_signal_as_it_was(device, tmp_path):
    """Retired half-way, with QEMU writing none of their lines after: every other event and argument key is
    counted as in the full trace, range by range, and the retired ones are counted only before."""
    expected = json.loads(EXPECTED.read_text(encoding="utf-8"))[device]
    sample_size = len(gzip.decompress((DATA / SAMPLES[device]).read_bytes()))
    retire = HOT_BY_NAME[device]
    seen = observe(device, tmp_path, retire, retire_at=sample_size // 3)
    qualified = {key for counts in expected["hits"].values() for key in counts if "(" in key}
    retired = [event for event in retire if not any(key.startswith(f"{event}(") for key in qualified)]
    assert seen["retired"] == sorted(retired) and retired  # the qualified ones stay: new argument keys may come

    def others(hits: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        kept = {r: {k: n for k, n in counts.items() if k not in retired} for r, counts in hits.items()}
        return {r: counts for r, counts in kept.items() if counts}

    assert others(seen["hits"]) == others(expected["hits"])
    assert seen["first_seen"] == expected["first_seen"]
    late = [r for r in seen["hits"] if any(k in retired for k in seen["hits"][r])]
    early = [r for r in expected["hits"] if any(k in retired for k in expected["hits"][r])]
    assert late and len(late) < len(early)  # counted before they retired, never after
    after = seen["transitions_after_retiring"]
    assert not {f"{event}=True" for event in retired} & set(after)  # never on again (a next range's uncap)


if __name__ == "__main__":  # writes the expected figures with the collector on sys.path (see the docstring)
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        figures = {device: observe(device, Path(scratch)) for device in sorted(SAMPLES)}
    EXPECTED.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {EXPECTED}", file=sys.stderr)
