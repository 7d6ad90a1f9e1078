"""Argument features in a real guest: the status values QEMU's own trace shows are the collector's qualified keys.

One busybox guest on ``pc`` with the ``nic.virtio_net`` row's
``virtio-net-pci``, fuzzed on its legacy I/O BAR only (``fuzz_kinds = pio``)
with hit counting on, as a guided round counts. The BAR's byte at 0x12 is
the virtio device status, so fuzzing it makes QEMU call ``virtio_set_status``
with the values written; QEMU's ``log`` backend writes each call to the trace
file the collector reads. The test reads that file itself, with its own
pattern, and derives what the collector must hold: a key
``virtio_set_status(val=0x..)`` for each distinct value in the order QEMU
printed them (past MAX_VALUES distinct ones: ``*``), and as many qualified
hits as QEMU wrote lines. Events reached stay plain names.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from avocado_iofuzz.coverage.arguments import MAX_VALUES, OVERFLOW
from avocado_iofuzz.coverage.run import trace_args
from avocado_iofuzz.guest.build import default_guest
from avocado_iofuzz.guided.features import event_of, features_of
from avocado_iofuzz.vm.bare import BareQemu
from benchmarks._rows import coverage_for, row_devices, row_params, row_plans, row_qemu_args, run_campaign
from benchmarks.iofuzz_throughput import campaign_config_of

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]

ROW = "iofuzz.quick.nic.virtio_net"
SEED = 0xA59F
FUZZ_COUNT = 40  # writes per slot: a few hundred ops on the 32-byte BAR, dozens on the status byte
# QEMU 7.2's format for virtio_set_status is "vdev %p val %u"; read here without our format machinery
STATUS_LINE = re.compile(r"^(?:\d+@\d+\.\d+:)?virtio_set_status vdev \S+ val (\d+)$")


def status_values(trace_file: Path) -> list[int]:
    """Every value QEMU logged for virtio_set_status, in file order."""
    values = []
    for line in trace_file.read_text(encoding="utf-8", errors="replace").splitlines():
        match = STATUS_LINE.match(line)
        if match:
            values.append(int(match[1]))
    return values


def expected_keys(values: list[int]) -> set[str]:
    """The qualified keys for ``values``: the first MAX_VALUES distinct ones by value, the rest as one ``*``."""
    distinct = list(dict.fromkeys(values))
    spelled = {f"val={v:#x}" for v in distinct[:MAX_VALUES]} | ({f"val={OVERFLOW}"} if distinct[MAX_VALUES:] else set())
    return {f"virtio_set_status({s})" for s in spelled}


def test_virtio_status_values_in_qemus_trace_become_qualified_hit_counts(tmp_path):
    params = {**row_params(ROW), "fuzz_kinds": "pio"}
    trace_file = tmp_path / "qemu-trace.log"
    extra = [*row_qemu_args(params), *trace_args(trace_file)]
    vm = BareQemu(default_guest(), tmp_path / "vm", machine="pc", extra_args=extra).start()
    try:
        session = vm.login(120)
        plans = row_plans(session, params, SEED, FUZZ_COUNT)
        session.close()
        assert plans, "the guest lists no I/O BAR of the virtio-net-pci to fuzz"
        coverage = coverage_for(vm, row_devices(params), trace_file)
        coverage.keep_armed(count_hits=True)  # what a guided round does
        result = run_campaign(vm, plans, campaign_config_of(ROW, hang_timeout=20.0), tmp_path / "trace.iofuzz",
                              observer=coverage)  # fmt: skip
        coverage.close()
    finally:
        vm.stop()
    assert not result.crashed, result.findings
    collector = coverage.collector
    assert collector is not None

    values = status_values(trace_file)
    assert len(set(values)) >= 2, f"QEMU logged virtio_set_status with {sorted(set(values))} only: too few"
    counted: dict[str, int] = {}
    for counts in collector.hits.values():
        for key, hits in counts.items():
            counted[key] = counted.get(key, 0) + hits
    qualified = {k: n for k, n in counted.items() if k.startswith("virtio_set_status(")}
    assert set(qualified) == expected_keys(values)
    assert sum(qualified.values()) == len(values) == counted["virtio_set_status"]  # every line QEMU wrote, once
    features = features_of(counted)
    assert {event_of(f) for f in features if f.startswith("virtio_set_status(")} == {"virtio_set_status"}
    assert not [name for name in collector.first_seen if "(" in name]  # events reached: names only
    assert "virtio_set_status" in collector.first_seen
