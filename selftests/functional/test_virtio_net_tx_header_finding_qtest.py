"""The virtio-net short-header abort's reproducer, run as a QEMU developer runs it: ``sh FILE``.

``virtio-net-short-tx-header-abort.sh`` (docs/results/findings.rst,
finding-virtio-net-tx-header): a transmit buffer of 4 bytes, shorter than the
10-byte virtio-net header, on a device whose peer takes no vnet header.
QEMU 7.2's ``virtio_net_flush_tx`` copies the frame from offset 10 of it and
``iov_copy`` asserts.

The observers are QEMU's own: its exit status (134, SIGABRT) and the
assertion text on its stderr, which the script passes on; for the path,
QEMU's trace events (through a ``QEMU=`` wrapper that adds ``-trace``
options): the transmit queue popped one element with one out buffer, and
nothing after. The control is a one-line change of the script, a 10-byte
buffer, which QEMU sends. Nothing of this package runs.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from reproducer_scripts import (
    NOT_HAPPENED,
    REPRODUCERS,
    SIGABRT_STATUS,
    run_script,
    run_with_trace,
    script_variant,
    whole_line,
)

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")

SCRIPT = REPRODUCERS / "virtio-net-short-tx-header-abort.sh"
RUNS = 5
ABORT = re.compile(r"util/iov\.c:\d+: iov_copy: Assertion `offset == 0' failed")
# descriptor 0's length byte: 4 (shorter than the 10-byte header), or 10 (a header and no frame)
SHORT_BUFFER = "writeb 0x7000808 0x4"
WHOLE_HEADER = "writeb 0x7000808 0xa"
POP = re.compile(r"\bvirtqueue_pop vq \S+ elem \S+ in_num (\d+) out_num (\d+)")


def run_traced(tmp_path: Path, script: Path) -> tuple[int, str, list[tuple[int, int]]]:
    """``script`` with QEMU logging its virtqueue pops: its status, stderr, and (in_num, out_num) per pop."""
    status, stderr, log = run_with_trace(script, tmp_path, ["virtqueue_pop"])
    pops = [(int(m[1]), int(m[2])) for m in map(POP.search, log.splitlines()) if m]
    return status, stderr, pops


def test_the_reproducer_aborts_qemu_with_the_assertion_every_time():
    outcomes = [run_script(SCRIPT) for _ in range(RUNS)]
    aborts = sum(status == SIGABRT_STATUS and bool(ABORT.search(stderr)) for status, stderr in outcomes)
    assert aborts == RUNS, [(status, stderr[-600:]) for status, stderr in outcomes]


def test_qemu_aborts_on_the_first_transmit_buffer_it_pops(tmp_path):
    status, stderr, pops = run_traced(tmp_path, SCRIPT)
    assert status == SIGABRT_STATUS and ABORT.search(stderr), (status, stderr[-600:])
    assert pops == [(0, 1)], pops  # one element, one out buffer: the 4 bytes, and QEMU died on it


def test_a_buffer_that_holds_the_header_is_sent_and_qemu_lives(tmp_path):
    control = script_variant(SCRIPT, tmp_path, "control.sh", whole_line(SHORT_BUFFER), whole_line(WHOLE_HEADER))
    status, stderr, pops = run_traced(tmp_path, control)
    assert status == 0 and NOT_HAPPENED in stderr, (status, stderr[-600:])
    assert pops[:1] == [(0, 1)], pops  # the same buffer was popped, 10 bytes now, and QEMU went on
