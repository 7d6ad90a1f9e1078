"""The ich9-ahci finding's reproducer, run as a QEMU developer runs it: ``sh FILE``, no guest.

QEMU 7.2 dies by SIGSEGV when an ich9-ahci HBA is reset (GHC.HR) while a PIO
READ SECTORS of its disk is in flight and the port is started again before the
read completes (docs/results/findings.rst, the guided storage.ahci row). The
observers are QEMU's own: the exit status the reproducer passes on (139,
SIGSEGV) and QEMU's trace events (``ide_sector_read``, ``ahci_reset``, then the
second sector's ``ide_sector_read``) on its stderr. Nothing of this package runs.

* ``ahci-pio-read-reset-segv.sh`` (11 qtest lines) crashes QEMU every time;
* without the disk behind the port, without the HBA reset, reading one
  sector instead of two (nothing left to read after the reset), or without
  starting the port again after the reset (which is what clears the port's
  current command), QEMU lives on.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest
from reproducer_scripts import NOT_HAPPENED, REPRODUCERS, run_script, script_variant, whole_line

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")

REPRODUCER = REPRODUCERS / "ahci-pio-read-reset-segv.sh"
SIGSEGV_STATUS = 128 + signal.SIGSEGV  # what sh reports for a child killed by SIGSEGV
RUNS = 5
HBA_RESET = "writel 0xfeb00004 0x1"  # GHC.HR
PORT_START = "writel 0xfeb00118 0x11"  # P0CMD = FRE | ST (written before the reset and once more after it)
DISK = " -device ide-hd,bus=hba.0,drive=disk"
# the command table's FIS: H2D register, C bit, READ SECTORS, LBA mode; byte 12 is the sector count
READ_2_SECTORS = "0x2780200000000040000000000200000000000000"
READ_1_SECTOR = "0x2780200000000040000000000100000000000000"
QEMU_TRACE = "-trace ide_sector_read -trace ahci_reset -qtest stdio"


def variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """The reproducer with its text ``old`` (once in it) made ``new``."""
    return script_variant(REPRODUCER, tmp_path, name, old, new)


def test_the_reproducer_kills_qemu_by_sigsegv_every_time():
    outcomes = [run_script(REPRODUCER) for _ in range(RUNS)]
    crashes = sum(status == SIGSEGV_STATUS for status, _ in outcomes)
    assert crashes == RUNS, [(status, stderr[-600:]) for status, stderr in outcomes]


def test_qemus_trace_shows_the_read_then_the_reset_before_the_crash(tmp_path):
    status, stderr = run_script(variant(tmp_path, "traced.sh", "-qtest stdio", QEMU_TRACE))
    assert status == SIGSEGV_STATUS, (status, stderr[-600:])
    events = [line.split()[0].split(":")[-1] for line in stderr.splitlines()
              if "ide_sector_read " in line or "ahci_reset " in line]  # fmt: skip
    # the machine's own reset, the read of sector 1, the HBA reset; then the read of sector 2
    # starts anyway (the reset did not stop the command) and QEMU dies on it
    assert events == ["ahci_reset", "ide_sector_read", "ahci_reset", "ide_sector_read"], events


@pytest.mark.parametrize(
    ("old", "new"),
    [(DISK, ""), (whole_line(HBA_RESET), "\n"), (READ_2_SECTORS, READ_1_SECTOR),
     (whole_line(HBA_RESET) + PORT_START + "\n", whole_line(HBA_RESET))],
    ids=["no-disk", "no-hba-reset", "one-sector", "no-port-restart"],
)  # fmt: skip
def test_without_the_disk_the_reset_or_a_second_sector_qemu_lives(tmp_path, old, new):
    status, stderr = run_script(variant(tmp_path, "control.sh", old, new))
    # the reproducer says so when QEMU was still alive after the script: it stopped it itself
    assert status == 0 and NOT_HAPPENED in stderr, (status, stderr[-600:])
