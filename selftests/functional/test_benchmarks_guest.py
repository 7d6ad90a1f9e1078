"""The throughput benchmark's measurements on a real guest: the classic baseline hits exactly its
ports, and each method completes the planned ops (figures are printed by the script, never asserted)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from avocado_iofuzz.guest.build import default_guest
from avocado_iofuzz.model.program import Op
from avocado_iofuzz.vm.bare import BareQemu
from benchmarks import iofuzz_throughput
from benchmarks.classic import classic_command

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]

QEMU_ACCESS = re.compile(r"memory_region_ops_(read|write) .*?addr 0x([0-9a-f]+) value 0x([0-9a-f]+) size (\d+)")


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BareQemu]:
    run_dir = tmp_path_factory.mktemp("bench-vm")
    # a log file for trace events, switched on over QMP only while the classic commands run
    with BareQemu(default_guest(), run_dir, extra_args=["-D", str(run_dir / "events.log")]) as vm:
        yield vm


def test_classic_commands_make_exactly_their_access(vm: BareQemu):
    ops = [Op("r", 0x305, 1, 0), Op("w", 0x306, 1, 0xFF), Op("w", 0x307, 1, 0x00), Op("w", 0x300, 1, 0x5A)]
    session = vm.login(90)
    vm.qmp("trace-event-set-state", name="memory_region_ops_*", enable=True)
    try:
        for op in ops:
            session.cmd(classic_command(op), timeout=30)
    finally:
        vm.qmp("trace-event-set-state", name="memory_region_ops_*", enable=False)
        session.close()
    log = (vm.run_dir / "events.log").read_text()
    # 0x200-0x31f belongs to no device: the catch-all region sees absolute ports, and a dd that
    # emulated skip= by reading would show reads of every port below the one it aims at
    seen = [
        Op(m[1][0], int(m[2], 16), int(m[4]), int(m[3], 16) if m[1] == "write" else 0)
        for m in QEMU_ACCESS.finditer(log)
        if 0x200 <= int(m[2], 16) <= 0x31F
    ]
    assert seen == ops


def test_each_method_completes_the_planned_ops(vm: BareQemu, tmp_path: Path):
    args = iofuzz_throughput.parse_args(["--ops", "200000", "--rounds", "1", "--classic-ops", "3"])
    figures = iofuzz_throughput.measure(vm, args, tmp_path)
    assert figures["ops"] == sum(p.op_count for p in iofuzz_throughput.benchmark_plans(200_000, args.seed))
    assert figures["accelerator"] == vm.accel
    for key in ("ops_per_s_classic", "ops_per_s_executor", "ops_per_s_limit", "vs_classic", "vs_limit"):
        assert figures[key] > 0, key
    assert 0 < figures["trace_bytes_per_mops"] < figures["trace_listed_bytes_per_mops"]
