"""The usb-storage csw.residue assertion's reproducer, run as a QEMU developer runs it: ``sh FILE``, no guest.

QEMU 7.2 (and 10.0.13) aborts in ``usb_msd_handle_data`` on ``csw.residue ==
0`` when a usb-storage stick takes a Bulk-Only Mass Storage Reset after a
command ended with a residue whose CSW was never read, and then gets the next
CBW: the class reset puts the device back to "CBW next" but keeps the unsent
CSW (docs/results/findings.rst, finding-usb-msd-reset-residue). The observers
are QEMU's own: the exit status the reproducer passes on (134, SIGABRT) and the
assertion on QEMU's stderr. Nothing of this package runs.

* ``usb-msd-reset-residue.sh`` aborts every time as written;
* each ingredient is needed: a standard no-data request instead of the reset
  (the second CBW is refused) or a first CBW that announces no data (residue
  0): QEMU lives.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from reproducer_scripts import NOT_HAPPENED, REPRODUCERS, SIGABRT_STATUS, run_script, script_variant, whole_line

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")

SCRIPT = REPRODUCERS / "usb-msd-reset-residue.sh"
ASSERTION = "usb_msd_handle_data: Assertion `le32_to_cpu(s->csw.residue) == 0' failed."
RUNS = 5
# the setup packet of QH B: class request to the interface, 0xff = Bulk-Only Mass Storage Reset
RESET = "write 0x7002100 8 0x21ff000000000000"
SET_CONFIGURATION = "write 0x7002100 8 0x0009010000000000"  # a standard no-data request instead: configuration 1
# QH A's CBW (tag 1): TEST UNIT READY announcing 512 bytes in, or announcing none
DATA_ANNOUNCED = "write 0x7002000 31 0x55534243010000000002000080000600000000000000000000000000000000"
NO_DATA = "write 0x7002000 31 0x55534243010000000000000000000600000000000000000000000000000000"


def variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """The reproducer with its script line ``old`` (a whole line, not a comment) made ``new``."""
    return script_variant(SCRIPT, tmp_path, name, whole_line(old), whole_line(new))


def test_the_reproducer_aborts_qemu_on_the_assertion_every_time():
    outcomes = [run_script(SCRIPT) for _ in range(RUNS)]
    aborts = sum(status == SIGABRT_STATUS and ASSERTION in stderr for status, stderr in outcomes)
    assert aborts == RUNS, [(status, stderr[-600:]) for status, stderr in outcomes if status != SIGABRT_STATUS]


@pytest.mark.parametrize(
    ("old", "new"), [(RESET, SET_CONFIGURATION), (DATA_ANNOUNCED, NO_DATA)], ids=["no-reset", "no-residue"]
)
def test_without_each_ingredient_qemu_lives(tmp_path, old, new):
    status, stderr = run_script(variant(tmp_path, "control.sh", old, new))
    # the reproducer says so when QEMU was still alive after the script: it stopped it itself
    assert status == 0 and NOT_HAPPENED in stderr and ASSERTION not in stderr, (status, stderr[-600:])
