"""The EHCI usb_cancel_packet finding's reproducer, run as a QEMU developer runs it: ``sh FILE``, no guest.

QEMU 7.2 (and 10.0.13) aborts in ``usb_cancel_packet`` when the EHCI frees
a queue whose packet usb-storage holds for a SCSI read still in flight: the
cancel polls the main loop, a pending EHCI bottom half runs inside it, and
its doorbell step frees the same packet again (docs/results/findings.rst).
The observers are QEMU's own: the exit status the reproducer passes on (134,
SIGABRT) and the assertion on QEMU's stderr. Nothing of this package runs.

* ``ehci-usb-cancel-packet.sh`` aborts every time as written;
* each of the three trigger writes is needed: without the doorbell (nothing
  schedules the bottom half), without the list move (the nested walk still
  sees the queue) or without the end of the port reset (nothing cancels
  from outside the bottom half) QEMU lives;
* the same trigger writes one 1 KiB read of QEMU's later, when the block
  layer's completion has run and the read is no longer in flight, do not
  abort either: the read in flight is needed too;
* QEMU's 1 KiB reads of the script decide it: with 40 more lines of padding
  (the triggers still in the third kilobyte) it aborts, with 8 fewer (the
  list move read with the walk's kilobyte, before the walk) it does not.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from reproducer_scripts import NOT_HAPPENED, REPRODUCERS, SIGABRT_STATUS, run_script, script_variant, whole_line

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")

SCRIPT = REPRODUCERS / "ehci-usb-cancel-packet.sh"
ASSERTION = "usb_cancel_packet: Assertion `usb_packet_is_inflight(p)' failed."
RUNS = 5
LIST_MOVE = "writel 0xfeb00038 0x7000100"  # ASYNCLISTADDR: the empty queue head E
DOORBELL, NO_DOORBELL = "writel 0xfeb00020 0x61", "writel 0xfeb00020 0x21"  # USBCMD with / without IAAD
END = "IOFUZZ_QTEST_END"  # the script's last line; the end of reset is the trigger line right before it
RESET_END = f"writel 0xfeb00064 0x1000\n{END}"  # PORTSC1: end of reset, the device is detached and attached
KIB = 61  # lines of padding (17 bytes each, a USBCMD read): the triggers move one 1 KiB read later


def padding(lines: int) -> str:
    return "\n".join(["readl 0xfeb00020"] * lines)


def variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """The reproducer with its script line ``old`` (a whole line, not a comment) made ``new`` ("" drops it)."""
    return script_variant(SCRIPT, tmp_path, name, whole_line(old), whole_line(new) if new else "\n")


def test_the_reproducer_aborts_qemu_on_the_assertion_every_time():
    outcomes = [run_script(SCRIPT) for _ in range(RUNS)]
    aborts = sum(status == SIGABRT_STATUS and ASSERTION in stderr for status, stderr in outcomes)
    assert aborts == RUNS, [(status, stderr[-600:]) for status, stderr in outcomes if status != SIGABRT_STATUS]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (DOORBELL, NO_DOORBELL),
        (LIST_MOVE, ""),
        (RESET_END, END),
        (LIST_MOVE, f"{padding(KIB)}\n{LIST_MOVE}"),
    ],
    ids=["no-doorbell", "list-not-moved", "no-reset-end", "read-completed"],
)
def test_without_each_ingredient_qemu_lives(tmp_path, old, new):
    status, stderr = run_script(variant(tmp_path, "control.sh", old, new))
    # the reproducer says so when QEMU was still alive after the script: it stopped it itself
    assert status == 0 and NOT_HAPPENED in stderr and ASSERTION not in stderr, (status, stderr[-600:])


def test_the_reads_of_the_script_decide_it(tmp_path):
    later = variant(tmp_path, "later.sh", LIST_MOVE, f"{padding(40)}\n{LIST_MOVE}")
    status, stderr = run_script(later)
    assert status == SIGABRT_STATUS and ASSERTION in stderr, (status, stderr[-600:])
    earlier = variant(tmp_path, "earlier.sh", f"{padding(8)}\n{LIST_MOVE}", LIST_MOVE)
    status, stderr = run_script(earlier)
    assert status == 0 and NOT_HAPPENED in stderr and ASSERTION not in stderr, (status, stderr[-600:])
