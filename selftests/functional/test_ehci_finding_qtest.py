"""The EHCI finding's reproducers, run as a QEMU developer runs them: ``sh FILE``, no guest.

QEMU 7.2 aborts in ``usb_ep_get`` when an EHCI executes a qTD whose PID is
SETUP on a queue head whose endpoint is not 0 (docs/results/findings.rst).
The observers are QEMU's own: the exit status the reproducer passes on (134,
SIGABRT) and the assertion on QEMU's stderr. Nothing of this package runs.

* ``ehci-usb-ep-get.sh`` (11 ops: one queue head, one qTD, the port reset,
  ASYNCLISTADDR, then USBCMD) aborts every time, and keeps aborting when
  padding moves its lines across QEMU's 1 KiB reads of the script;
* the same ops with the qTD's PID OUT, or with the queue head on endpoint 0,
  do not abort: the SETUP to a non-zero endpoint is the cause;
* ``ehci-usb-ep-get-triage.sh``, what ``avocado iofuzz replay --minimize``
  made of the fuzzing run's ops (47), aborts every time as written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from reproducer_scripts import NOT_HAPPENED, REPRODUCERS, SIGABRT_STATUS, run_script, script_variant, whole_line

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")

ROBUST, TRIAGED = REPRODUCERS / "ehci-usb-ep-get.sh", REPRODUCERS / "ehci-usb-ep-get-triage.sh"
ASSERTION = "usb_ep_get: Assertion `pid == USB_TOKEN_IN || pid == USB_TOKEN_OUT' failed."
RUNS = 5
QTD_TOKEN_SETUP, QTD_TOKEN_OUT = "writew 0x7003008 0x280", "writew 0x7003008 0x80"  # active, PID 2 / PID 0
QH_ENDPOINT_2, QH_ENDPOINT_0 = "writew 0x7002004 0x8200", "writew 0x7002004 0x8000"  # H bit, endpoint 2 / 0
PCI_SETUP_END = "outb 0xcfc 0x2"  # memory decoding on: the last line before the scratch structures


def variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """The robust reproducer with its script line ``old`` (a whole line, not a comment) made ``new``."""
    return script_variant(ROBUST, tmp_path, name, whole_line(old), whole_line(new))


@pytest.mark.parametrize("path", [ROBUST, TRIAGED], ids=["robust", "triaged"])
def test_the_reproducer_aborts_qemu_on_the_assertion_every_time(path):
    outcomes = [run_script(path) for _ in range(RUNS)]
    aborts = sum(status == SIGABRT_STATUS and ASSERTION in stderr for status, stderr in outcomes)
    assert aborts == RUNS, [(status, stderr[-600:]) for status, stderr in outcomes if status != SIGABRT_STATUS]


@pytest.mark.parametrize("pads", [0, 70, 71, 72, 73, 150])
def test_no_read_boundary_of_qemus_decides_the_robust_one(tmp_path, pads):
    # 17-byte lines (a USBSTS read) ahead of the structures shift every later line through QEMU's 1 KiB reads
    padded = "\n".join([PCI_SETUP_END] + ["readl 0xfeb00024"] * pads)
    path = variant(tmp_path, f"padded-{pads}.sh", PCI_SETUP_END, padded)
    status, stderr = run_script(path)
    assert status == SIGABRT_STATUS and ASSERTION in stderr, (status, stderr[-600:])


@pytest.mark.parametrize(
    ("old", "new"), [(QTD_TOKEN_SETUP, QTD_TOKEN_OUT), (QH_ENDPOINT_2, QH_ENDPOINT_0)], ids=["pid-out", "endpoint-0"]
)
def test_without_a_setup_to_a_non_zero_endpoint_qemu_lives(tmp_path, old, new):
    status, stderr = run_script(variant(tmp_path, "control.sh", old, new))
    # the reproducer says so when QEMU was still alive after the script: it stopped it itself
    assert status == 0 and NOT_HAPPENED in stderr and ASSERTION not in stderr, (status, stderr[-600:])
