"""Port I/O at its native widths, seen from outside the guest: QEMU's own ``memory_region_ops_*`` trace.

``-device pc-testdev`` decodes ports 0xe0-0xe3 as one register that takes
1-, 2- and 4-byte accesses whole, and no guest driver touches it: every
access QEMU logs there is one of the executor's, at the size QEMU received.
PCI conf1 is the kernel's own range: its address register 0xcf8 must get the
traced 4-byte writes (the only ones QEMU latches) and nothing narrower, and
its data window 0xcfc-0xcff the traced writes at every width. The kernel also
writes there (at boot it probes conf1 with a byte at 0xcfb, and makes config
accesses of its own), so there the traced ops must appear, in order, among
what QEMU logged after the executor's first access.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import pytest
from avocado_jobs import run_avocado

from avocado_iofuzz.campaign.trace import read_trace

pytestmark = pytest.mark.guest

ACCESS = re.compile(
    r"memory_region_ops_(?P<kind>read|write) .*?addr 0x(?P<addr>[0-9a-f]+) "
    r"value 0x(?P<value>[0-9a-f]+) size (?P<size>\d+)"
)
Access = tuple[str, int, int, int | None]  # kind, port, size, value written (None for reads)


def accesses(lines: Iterable[str], first: int, last: int, kinds: str = "rw") -> list[Access]:
    """What QEMU logged for ports ``first..last``, in order."""
    seen = []
    for line in lines:
        match = ACCESS.search(line)
        if match and first <= int(match["addr"], 16) <= last and match["kind"][0] in kinds:
            kind, port = match["kind"][0], int(match["addr"], 16)
            seen.append((kind, port, int(match["size"]), int(match["value"], 16) if kind == "w" else None))
    return seen


def is_subsequence(wanted: Sequence[Access], seen: Sequence[Access]) -> bool:
    rest = iter(seen)
    return all(any(access == item for item in rest) for access in wanted)


def test_qemu_sees_port_writes_of_every_width_and_4_byte_writes_to_pci_conf1_address(tmp_path):
    qemu_log = tmp_path / "qemu-trace.log"
    params = {
        "extra_ioports": "0xe0-0xe3:testdev",
        "only_devices": "testdev, PCI conf1",
        # pio_widths left at its default: every natural width
        "fuzz_count": "10",
        "fuzz_seed": "13",
        "extra_params": (
            f"-device pc-testdev -trace memory_region_ops_read -trace memory_region_ops_write -D {qemu_log}"
        ),
    }
    job = run_avocado("iofuzz.quick", tmp_path, params)
    assert job.tests[0]["status"] == "PASS", job.output
    trace = read_trace(job.data_file("trace.iofuzz"))
    plans = {(p.name, p.start): p for p in trace.plans.values()}
    assert sorted((p.start, p.end, p.width) for p in plans.values()) == [
        (0xE0, 0xE3, 1),
        (0xE0, 0xE3, 2),
        (0xE0, 0xE3, 4),
        (0xCF8, 0xCFB, 4),  # CONFIG_ADDRESS, though skip_ports cuts 0xcf9 out of the kernel's range
        (0xCFC, 0xCFF, 1),
        (0xCFC, 0xCFF, 2),
        (0xCFC, 0xCFF, 4),
    ]

    def traced(start: int, kinds: str = "rw") -> list[Access]:
        ranges = sorted((p for p in plans.values() if p.start == start), key=lambda p: p.index)
        return [
            (op.kind, op.port, op.width, op.value if op.kind == "w" else None)
            for p in ranges
            for _, op in trace.ops[p.index]
            if op.kind in kinds
        ]

    log = qemu_log.read_text(encoding="utf-8", errors="replace").splitlines()
    # pc-testdev: exactly the traced ops, each at its width; all three widths written
    testdev = accesses(log, 0xE0, 0xE3)
    # the executor's time: from its first access (the testdev's range comes first, by address)
    log = log[next(i for i, line in enumerate(log) if ACCESS.search(line) and " addr 0xe0 " in line) :]
    assert testdev == traced(0xE0)
    assert {size for kind, _, size, _ in testdev if kind == "w"} == {1, 2, 4}
    # CONFIG_ADDRESS: every traced write reached QEMU as a 4-byte write, and no narrower write came
    address_writes = accesses(log, 0xCF8, 0xCFB, "w")
    assert is_subsequence(traced(0xCF8, "w"), address_writes)
    assert len(traced(0xCF8, "w")) == 11 and {(port, size) for _, port, size, _ in address_writes} == {(0xCF8, 4)}
    # the data window: the traced ops at 1, 2 and 4 bytes
    window = traced(0xCFC, "w")
    assert {size for _, _, size, _ in window} == {1, 2, 4}
    assert is_subsequence(window, accesses(log, 0xCFC, 0xCFF, "w"))
