"""The qxl-vga finding's reproducer, run as a QEMU developer runs it: ``sh FILE``, no guest.

QEMU 7.2 with libspice-server 0.15 aborts when a guest that switched a
qxl-vga to native mode (``QXL_IO_CREATE_PRIMARY_ASYNC``, even with nothing set
up) asks it to destroy a surface other than 0 with
``QXL_IO_DESTROY_SURFACE_WAIT`` (docs/results/findings.rst, the q35 findings
run). The observers are QEMU's own: the exit status the reproducer passes on
(134, SIGABRT), the SPICE condition on its stderr, and QEMU's
``qxl_io_write`` trace event naming the two port writes. Nothing of this
package runs.

* ``qxl-destroy-surface-wait.sh`` (6 ops, the findings run's triage) aborts
  every time as written, and on ``-machine pc`` too;
* without the create-primary write, or destroying surface 0, QEMU lives on.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from reproducer_scripts import NOT_HAPPENED, REPRODUCERS, SIGABRT_STATUS, run_script, script_variant, whole_line

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")

REPRODUCER = REPRODUCERS / "qxl-destroy-surface-wait.sh"
CONDITION = "red-worker.cpp:367:handle_dev_destroy_surface_wait: condition `msg->surface_id == 0' failed"
RUNS = 5
CREATE_PRIMARY_ASYNC = "outb 0xd052 0x0"  # port 18 of the I/O BAR at 0xd040
DESTROY_SURFACE_64, DESTROY_SURFACE_0 = "outb 0xd04e 0x40", "outb 0xd04e 0x0"  # port 14
Q35_ARGS, PC_ARGS = "-machine q35 -device pcie-root-port -nodefaults", "-machine pc -nodefaults"
QEMU_TRACE = "-trace qxl_io_write -qtest stdio"


def variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """The reproducer with its text ``old`` (once in it) made ``new``."""
    return script_variant(REPRODUCER, tmp_path, name, old, new)


def test_the_reproducer_aborts_qemu_on_the_spice_condition_every_time():
    outcomes = [run_script(REPRODUCER) for _ in range(RUNS)]
    aborts = sum(status == SIGABRT_STATUS and CONDITION in stderr for status, stderr in outcomes)
    assert aborts == RUNS, [(status, stderr[-600:]) for status, stderr in outcomes]


def test_qemus_trace_names_the_two_port_writes_before_the_abort(tmp_path):
    status, stderr = run_script(variant(tmp_path, "traced.sh", "-qtest stdio", QEMU_TRACE))
    assert status == SIGABRT_STATUS and CONDITION in stderr, (status, stderr[-600:])
    writes = [entry for entry in stderr.splitlines() if entry.startswith("qxl_io_write")]
    assert len(writes) == 2, writes
    assert "(QXL_IO_CREATE_PRIMARY_ASYNC) val=0" in writes[0] and " vga " in writes[0], writes
    # the create-primary request left VGA mode: the destroy reaches SPICE
    assert "(QXL_IO_DESTROY_SURFACE_WAIT) val=64" in writes[1] and " native " in writes[1], writes
    assert stderr.index(writes[1]) < stderr.index(CONDITION)


def test_the_same_ops_abort_qemu_on_pc(tmp_path):
    status, stderr = run_script(variant(tmp_path, "pc.sh", Q35_ARGS, PC_ARGS))
    assert status == SIGABRT_STATUS and CONDITION in stderr, (status, stderr[-600:])


@pytest.mark.parametrize(
    ("old", "new"),
    [(whole_line(CREATE_PRIMARY_ASYNC), "\n"), (whole_line(DESTROY_SURFACE_64), whole_line(DESTROY_SURFACE_0))],
    ids=["no-create-primary", "surface-0"],
)
def test_without_native_mode_or_with_surface_0_qemu_lives(tmp_path, old, new):
    status, stderr = run_script(variant(tmp_path, "control.sh", old, new))
    # the reproducer says so when QEMU was still alive after the script: it stopped it itself
    assert status == 0 and NOT_HAPPENED in stderr and CONDITION not in stderr, (status, stderr[-600:])
