"""A replay and the reproducer.sh written from it feed QEMU the ops in the same 1 KiB reads.

Why it matters: QEMU's qtest server takes at most 1 KiB of its input per
main-loop turn, and bottom halves (EHCI's, scheduled by a USBCMD write, runs
the async schedule even with the clock stopped) run between turns. Whether two ops land
in one read decides whether the bottom half sees the second: the EHCI finding's
minimized ops aborted in every replay and in no run of its reproducer.sh,
because the replay sent an 11-byte sync command in front of the ops and the
heredoc does not, which moved every read boundary by 11 bytes.

The QEMU here is a stand-in with exactly that behaviour: it reads 1 KiB at a
time, answers each line, and at the end of each read runs a "scheduled bottom
half", which aborts (SIGABRT, an assertion on stderr) only if the "address" line
was already processed. The observers are its exit status and stderr, for
both the replay runner and ``sh reproducer.sh``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from avocado_iofuzz.model.program import SPACE_MMIO, Op
from avocado_iofuzz.repro.qtest_run import QtestTarget, run_qtest
from avocado_iofuzz.repro.reproducer import run_shell, shell_script, shell_signature

pytestmark = pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")

ARM = Op("w", 0x1020, 4, 0x21, SPACE_MMIO)  # "USBCMD: run, async schedule on": schedules the bottom half
ADDRESS = Op("w", 0x1038, 4, 0x7002000, SPACE_MMIO)  # "ASYNCLISTADDR": what the bottom half needs to crash
PAD = Op("w", 0x70, 1, 0)  # "outb 0x70 0x0\n": 14 bytes that move the pair across read boundaries

FAKE_QEMU = """\
#!{python}
# A qtest server that behaves like QEMU 7.2's for this purpose: reads of at most 1 KiB, one
# answer per complete line, and after each read the scheduled bottom half runs (once).
import os, signal, sys, time
armed = address = False
pending = b""
while True:
    chunk = os.read(0, 1024)
    if not chunk:
        time.sleep(30)  # like QEMU, stay alive after the end of the script until stopped
        sys.exit(0)
    pending += chunk
    *lines, pending = pending.split(b"\\n")
    for line in lines:
        if line == b"{arm}":
            armed = True
        elif line == b"{address}":
            address = True
        os.write(1, b"OK\\n")
    if armed:
        armed = False
        if address:
            sys.stderr.write("fake-qemu: ../hw/usb/core.c:744: usb_ep_get: Assertion `pid' failed.\\n")
            sys.stderr.flush()
            signal.signal(signal.SIGABRT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGABRT)
"""


@pytest.fixture(scope="module")
def fake_qemu(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fake-qemu") / "qemu-system-x86_64"
    text = FAKE_QEMU.format(python=sys.executable, arm="writel 0x1020 0x21", address="writel 0x1038 0x7002000")
    path.write_text(text)
    path.chmod(0o755)
    return path


def aborted_in_replay(target: QtestTarget, ops: list[Op]) -> bool:
    outcome = run_qtest(target, ops, linger=0.3, stall_timeout=5.0)
    return outcome.signature.signal == 6 and "usb_ep_get" in outcome.signature.message


def aborted_in_reproducer(target: QtestTarget, ops: list[Op], tmp_path: Path) -> bool:
    path = tmp_path / "reproducer.sh"
    path.write_text(shell_script(target, ops, ["test"], wait=1.0))
    status, stderr = run_shell(path, timeout=20.0)
    signature = shell_signature(status, stderr)
    return signature is not None and signature.signal == 6 and "usb_ep_get" in signature.message


# The pair sits just before the first read boundary, straddles it, or just after it; with an offset of
# 11 bytes between replay and reproducer the two disagree for some of these.
@pytest.mark.parametrize("pads", [69, 70, 71, 72])
def test_the_replay_and_its_reproducer_see_the_same_reads(fake_qemu, tmp_path, pads):
    ops = [PAD] * pads + [ARM, ADDRESS]
    target = QtestTarget(str(fake_qemu))
    replay, reproducer = aborted_in_replay(target, ops), aborted_in_reproducer(target, ops, tmp_path)
    assert replay == reproducer, f"{pads} pads: replay aborted {replay}, reproducer.sh aborted {reproducer}"


def test_the_stand_in_does_tell_the_two_cases_apart(fake_qemu, tmp_path):
    # Without this, a stand-in that never (or always) aborts would pass the test above.
    target = QtestTarget(str(fake_qemu))
    assert aborted_in_reproducer(target, [ARM, ADDRESS], tmp_path)
    assert not aborted_in_reproducer(target, [ARM, *[PAD] * 80, ADDRESS], tmp_path)  # a read apart
    assert aborted_in_replay(target, [ARM, ADDRESS])
    assert not aborted_in_replay(target, [ARM, *[PAD] * 80, ADDRESS])
