"""A device that warns on every access: QEMU's output kept whole in a file, the debug log bounded.

QEMU 7.2's eepro100 prints "eepro100: feature is missing in this emulation:
unknown longword write" for each 4-byte write to a register its
``eepro100_write4`` has no case for: every offset but SCBPointer (4),
SCBPort (8), SCBflash (0xc) and SCBCtrlMDI (0x10). The observer outside our
code is QEMU's own ``memory_region_ops_write`` trace events: the warnings in
``qemu-output-vm1.log`` (runs of one line collapsed into a count) must number exactly the traced 4-byte writes to
eepro100 at the other offsets, and the debug log must account for every one
of them (logged in full, or counted in a "N more lines like ... suppressed"
line) in a few dozen records, not one per line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from avocado_jobs import run_avocado

from avocado_iofuzz.campaign.trace import read_trace
from avocado_iofuzz.vm.qemu_output import expand_lines

pytestmark = pytest.mark.guest

WARNING = "eepro100: feature is missing in this emulation: unknown longword write"
HANDLED_WRITE4_OFFSETS = {0x4, 0x8, 0xC, 0x10}  # QEMU 7.2 hw/net/eepro100.c, eepro100_write4's cases
WRITE = re.compile(r"memory_region_ops_write .*?addr 0x(?P<addr>[0-9a-f]+) value 0x[0-9a-f]+ size (?P<size>\d+)")
SUPPRESSED = re.compile(r"\[qemu output\] (\d+) more lines? like '(.*)' suppressed")


def test_every_warning_is_in_the_file_and_the_debug_log_stays_small(tmp_path):
    qemu_log = tmp_path / "qemu-trace.log"
    params = {
        "fuzz_seed": "5",
        "fuzz_count": "20",
        "fuzz_strategy": "blind",  # whole BARs, planned up front (a guided run fuzzes stretches of them)
        "fuzz_kinds": "mmio",  # 4 + 16 KiB of BARs at width 4: ~100 000 writes, nearly all warned about
        "iofuzz_coverage": "no",  # its own -trace arguments would share the trace file
        "iofuzz_extra_qemu_args": f"-trace memory_region_ops_write -D {qemu_log}",
    }
    job = run_avocado("iofuzz.quick.nic.i82559er", tmp_path, params, timeout=900)
    test = job.tests[0]
    assert test["status"] == "PASS", job.output
    # BAR0 (registers) and BAR2 (flash): QEMU 7.2 serves both with eepro100's ops, offsets from each BAR
    plans = [p for p in read_trace(job.data_file("trace.iofuzz")).plans.values() if p.space == "mmio"]
    assert plans and any(p.end - p.start + 1 > 0x40 for p in plans)  # whole BARs, not the old 0x40-byte cap

    warned_writes = 0
    for match in WRITE.finditer(qemu_log.read_text(errors="replace")):
        address = int(match["addr"], 16)
        plan = next((p for p in plans if p.start <= address <= p.end), None)
        if plan is not None and int(match["size"]) == 4:
            warned_writes += address - plan.start not in HANDLED_WRITE4_OFFSETS
    assert warned_writes > 50_000

    output_file = Path(test["logdir"]) / "qemu-output-vm1.log"
    written = output_file.read_text(errors="replace").splitlines()
    assert len(written) < warned_writes / 10  # runs of the same line are collapsed into a count
    assert list(expand_lines(written)).count(WARNING) == warned_writes

    debug_log = (Path(test["logdir"]) / "debug.log").read_text(errors="replace")
    records = [line for line in debug_log.splitlines() if "[qemu output]" in line]
    in_full = sum(line.endswith(f"[qemu output] {WARNING}") for line in records)
    counted = sum(int(m[1]) for m in map(SUPPRESSED.search, records) if m and m[2] == WARNING)
    assert in_full + counted == warned_writes
    assert len(records) < 200, len(records)  # against ~100 000 records when every line is logged
    assert str(output_file) in debug_log  # the summaries say where the lines are
