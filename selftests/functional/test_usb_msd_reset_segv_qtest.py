"""The usb-storage Mass Storage Reset SIGSEGV's reproducer, run as a QEMU developer runs it: ``sh FILE``, no guest.

QEMU 7.2 (and 10.0.13) dies by SIGSEGV in ``scsi_req_get_buf`` when a
usb-storage stick takes a Bulk-Only Mass Storage Reset while a SCSI READ is in
flight and then runs a second READ with a CSW packet queued behind its data:
the first read's data arrives when usb-storage holds a packet but no current
request (docs/results/findings.rst, finding-usb-msd-reset-segv). The observers
are QEMU's own: the exit status the reproducer passes on (139, SIGSEGV) and,
for the path, QEMU's trace events. Nothing of this package runs.

* ``usb-msd-reset-segv.sh`` dies by SIGSEGV every time as written;
* QEMU's trace shows the order the findings give: the second read (tag 3)
  completes, then the first read's (tag 2) data is the last thing QEMU does;
* each ingredient is needed: a standard no-data request instead of the
  reset (the second CBW is refused), no 13-byte qTD queued behind the data (nothing is
  left waiting when the second read completes) or a TEST UNIT READY as the
  first command (nothing in flight at the reset): QEMU lives.
"""

from __future__ import annotations

import re
import shutil
import signal
from pathlib import Path

import pytest
from reproducer_scripts import NOT_HAPPENED, REPRODUCERS, run_script, run_with_trace, script_variant, whole_line

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")

SCRIPT = REPRODUCERS / "usb-msd-reset-segv.sh"
SIGSEGV_STATUS = 128 + signal.SIGSEGV  # what sh reports for a child killed by SIGSEGV
RUNS = 5
# the setup packet of QH D: class request to the interface, 0xff = Bulk-Only Mass Storage Reset
RESET = "write 0x7002200 8 0x21ff000000000000"
SET_CONFIGURATION = "write 0x7002200 8 0x0009010000000000"  # a standard no-data request instead: configuration 1
# QH F's first qTD (512 bytes in), linked to the 13-byte qTD at 0x70010e0, or ending the list
DATA_THEN_CSW = "write 0x70010c0 16 0xe010000701000000800d000200300007"
DATA_ALONE = "write 0x70010c0 16 0x0100000001000000800d000200300007"
# QH C's CBW (tag 2): READ(10) of block 0, 512 bytes in, or a TEST UNIT READY with no data
FIRST_READ = "write 0x7002100 31 0x55534243020000000002000080000a28000000000000000100000000000000"
FIRST_TUR = "write 0x7002100 31 0x55534243020000000000000000000600000000000000000000000000000000"


def variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """The reproducer with its script line ``old`` (a whole line, not a comment) made ``new``."""
    return script_variant(SCRIPT, tmp_path, name, whole_line(old), whole_line(new))


def test_the_reproducer_kills_qemu_by_sigsegv_every_time():
    outcomes = [run_script(SCRIPT) for _ in range(RUNS)]
    segvs = sum(status == SIGSEGV_STATUS for status, _ in outcomes)
    assert segvs == RUNS, [(status, stderr[-600:]) for status, stderr in outcomes if status != SIGSEGV_STATUS]


def test_qemu_dies_at_the_first_reads_data_after_the_second_read_completed(tmp_path):
    """QEMU's trace, through a ``QEMU=`` wrapper that adds -trace options: the events before the signal."""
    events = ("usb_msd_cmd_submit", "usb_msd_cmd_complete", "scsi_req_data")
    status, stderr, log = run_with_trace(SCRIPT, tmp_path, events)
    assert status == SIGSEGV_STATUS, (status, stderr[-600:])
    seen = [
        (event, int(tag, 0) & 0xFFFFFFFF)
        for event, tag in re.findall(r"(usb_msd_cmd_submit|usb_msd_cmd_complete|scsi_req_data) .*?tag (-?\w+)",
                                     log)
    ]  # fmt: skip
    submitted = [tag for event, tag in seen if event == "usb_msd_cmd_submit"]
    assert submitted == [1, 2, 3], seen  # the three CBWs, each accepted: the reset let the third in
    assert seen[-2:] == [("usb_msd_cmd_complete", 3), ("scsi_req_data", 2)], seen
    assert ("usb_msd_cmd_complete", 2) not in seen, seen  # the first read never completed


@pytest.mark.parametrize(
    ("old", "new"),
    [(RESET, SET_CONFIGURATION), (DATA_THEN_CSW, DATA_ALONE), (FIRST_READ, FIRST_TUR)],
    ids=["no-reset", "no-queued-csw-packet", "nothing-in-flight"],
)
def test_without_each_ingredient_qemu_lives(tmp_path, old, new):
    status, stderr = run_script(variant(tmp_path, "control.sh", old, new))
    # the reproducer says so when QEMU was still alive after the script: it stopped it itself
    assert status == 0 and NOT_HAPPENED in stderr, (status, stderr[-600:])
