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

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")

REPRODUCERS = Path(__file__).resolve().parents[2] / "docs" / "results" / "reproducers"
ROBUST, TRIAGED = REPRODUCERS / "ehci-usb-ep-get.sh", REPRODUCERS / "ehci-usb-ep-get-triage.sh"
ASSERTION = "usb_ep_get: Assertion `pid == USB_TOKEN_IN || pid == USB_TOKEN_OUT' failed."
SIGABRT_STATUS = 128 + signal.SIGABRT  # what sh reports for a child killed by SIGABRT
RUNS = 5
SHELL_TIMEOUT = 40.0  # the reproducer stops QEMU itself after 10 s; this bounds the shell too
NOT_HAPPENED = "the crash did NOT happen"
QTD_TOKEN_SETUP, QTD_TOKEN_OUT = "writew 0x7003008 0x280", "writew 0x7003008 0x80"  # active, PID 2 / PID 0
QH_ENDPOINT_2, QH_ENDPOINT_0 = "writew 0x7002004 0x8200", "writew 0x7002004 0x8000"  # H bit, endpoint 2 / 0
PCI_SETUP_END = "outb 0xcfc 0x2"  # memory decoding on: the last line before the scratch structures


def run(path: Path) -> tuple[int, str]:
    """``sh path`` in its own session; its exit status and stderr. Killed by PID if it outlives the bound."""
    proc = subprocess.Popen(
        ["sh", str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=SHELL_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the shell and the QEMU it started
        proc.communicate()
        pytest.fail(f"{path.name} still running after {SHELL_TIMEOUT:.0f} s")
    return proc.returncode, stderr.decode(errors="replace")


def variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """The robust reproducer with its script line ``old`` (a whole line, not a comment) made ``new``."""
    text = ROBUST.read_text()
    old, new = f"\n{old.rstrip()}\n", f"\n{new.rstrip()}\n"
    assert text.count(old) == 1, f"{old!r} is not one line of {ROBUST.name}"
    path = tmp_path / name
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize("path", [ROBUST, TRIAGED], ids=["robust", "triaged"])
def test_the_reproducer_aborts_qemu_on_the_assertion_every_time(path):
    outcomes = [run(path) for _ in range(RUNS)]
    aborts = sum(status == SIGABRT_STATUS and ASSERTION in stderr for status, stderr in outcomes)
    assert aborts == RUNS, [(status, stderr[-600:]) for status, stderr in outcomes if status != SIGABRT_STATUS]


@pytest.mark.parametrize("pads", [0, 70, 71, 72, 73, 150])
def test_no_read_boundary_of_qemus_decides_the_robust_one(tmp_path, pads):
    # 17-byte lines (a USBSTS read) ahead of the structures shift every later line through QEMU's 1 KiB reads
    padded = "\n".join([PCI_SETUP_END] + ["readl 0xfeb00024"] * pads)
    path = variant(tmp_path, f"padded-{pads}.sh", PCI_SETUP_END, padded)
    status, stderr = run(path)
    assert status == SIGABRT_STATUS and ASSERTION in stderr, (status, stderr[-600:])


@pytest.mark.parametrize(
    ("old", "new"), [(QTD_TOKEN_SETUP, QTD_TOKEN_OUT), (QH_ENDPOINT_2, QH_ENDPOINT_0)], ids=["pid-out", "endpoint-0"]
)
def test_without_a_setup_to_a_non_zero_endpoint_qemu_lives(tmp_path, old, new):
    status, stderr = run(variant(tmp_path, "control.sh", old, new))
    # the reproducer says so when QEMU was still alive after the script: it stopped it itself
    assert status == 0 and NOT_HAPPENED in stderr and ASSERTION not in stderr, (status, stderr[-600:])
