"""The two lsi53c895a ``s->current == NULL`` aborts' reproducers, run as a QEMU developer runs them: ``sh FILE``.

The chip keeps one *current* SCSI request; two of its paths assert that there
is none before they make a new one current (docs/results/findings.rst,
finding-lsi-current):

* ``lsi-second-command-while-current-abort.sh``: SCRIPTS send a second
  command while the first (an INQUIRY whose data was never read) is still
  current: ``lsi_do_command``'s assertion;
* ``lsi-reselect-while-current-abort.sh``: with reselection interrupts on
  and the bus let go (DISCONNECT), the data of the command being sent is
  taken for a disconnected request's, and the chip "reselects" its own
  current request: ``lsi_reselect``'s assertion.

The observers are QEMU's own: its exit status (134, SIGABRT) and the
assertion text on its stderr, which the scripts pass on; for the path, QEMU's
trace events (through a ``QEMU=`` wrapper that adds ``-trace`` options). Each
control is a one-line change of the script that keeps QEMU alive. Nothing of
this package runs.
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

SECOND_COMMAND = REPRODUCERS / "lsi-second-command-while-current-abort.sh"
RESELECT = REPRODUCERS / "lsi-reselect-while-current-abort.sh"
RUNS = 5
DO_COMMAND_ABORT = re.compile(r"lsi53c895a\.c:\d+: lsi_do_command: Assertion `s->current == NULL' failed")
RESELECT_ABORT = re.compile(r"lsi53c895a\.c:\d+: lsi_reselect: Assertion `s->current == NULL' failed")
# the first CDB: INQUIRY (36 bytes of data, left unread), or TEST UNIT READY (no data: completes at once)
FIRST_INQUIRY = "write 0x2010 6 0x120000002400"
FIRST_TEST_UNIT_READY = "write 0x2010 6 0x000000000000"
# SIEN0: RSL (interrupt on reselection) on, or left as reset made it
RSL_ON = "writeb 0xfeb00040 0x10"
RSL_OFF = "writeb 0xfeb00040 0x0"
# the SCRIPTS instruction at 0x1010: DISCONNECT, or two empty dwords (which the chip skips)
DISCONNECT = "write 0x1010 8 0x0000004800000000"
NO_DISCONNECT = "write 0x1010 8 0x0000000000000000"
TRACED_EVENTS = ("lsi_do_command", "lsi_execute_script_io_disconnect", "lsi_reselect", "scsi_req_parsed")


def variant(tmp_path: Path, source: Path, old: str, new: str) -> Path:
    """``source`` with its script line ``old`` (a whole line, not a comment) made ``new``."""
    return script_variant(source, tmp_path, f"control-{source.name}", whole_line(old), whole_line(new))


def run_traced(tmp_path: Path, script: Path) -> tuple[int, str, list[str]]:
    """``script`` run with QEMU logging ``TRACED_EVENTS`` to a file: its status, stderr, and the events in order
    (``scsi_req_parsed`` as ``command N``: the CDB's opcode)."""
    status, stderr, log = run_with_trace(script, tmp_path, TRACED_EVENTS)
    events = []
    for line in log.splitlines():
        if match := re.search(r"\bscsi_req_parsed .*command (\d+)", line):
            events.append(f"command {match.group(1)}")
        elif match := re.search(r"\b(lsi_do_command|lsi_execute_script_io_disconnect|lsi_reselect)\b", line):
            events.append(match.group(1))
    return status, stderr, events


@pytest.mark.parametrize(
    ("script", "signature"), [(SECOND_COMMAND, DO_COMMAND_ABORT), (RESELECT, RESELECT_ABORT)],
    ids=["lsi_do_command", "lsi_reselect"],
)  # fmt: skip
def test_the_reproducer_aborts_qemu_with_the_assertion_every_time(script, signature):
    outcomes = [run_script(script) for _ in range(RUNS)]
    aborts = sum(status == SIGABRT_STATUS and bool(signature.search(stderr)) for status, stderr in outcomes)
    assert aborts == RUNS, [(status, stderr[-600:]) for status, stderr in outcomes]


def test_qemu_aborts_at_the_second_command_after_the_first_inquiry(tmp_path):
    status, stderr, events = run_traced(tmp_path, SECOND_COMMAND)
    assert status == SIGABRT_STATUS and DO_COMMAND_ABORT.search(stderr), (status, stderr[-600:])
    # INQUIRY is opcode 0x12 (18); the second lsi_do_command is QEMU's last event: it never parsed that CDB
    assert events == ["lsi_do_command", "command 18", "lsi_do_command"], events


def test_a_first_command_without_data_keeps_qemu_alive_through_the_second(tmp_path):
    control = variant(tmp_path, SECOND_COMMAND, FIRST_INQUIRY, FIRST_TEST_UNIT_READY)
    status, stderr, events = run_traced(tmp_path, control)
    # the reproducer says so when QEMU was still alive after the script: it stopped it itself
    assert status == 0 and NOT_HAPPENED in stderr, (status, stderr[-600:])
    assert events == ["lsi_do_command", "command 0", "lsi_do_command", "command 18"], events


def test_qemu_aborts_at_the_command_sent_after_the_disconnect(tmp_path):
    status, stderr, events = run_traced(tmp_path, RESELECT)
    assert status == SIGABRT_STATUS and RESELECT_ABORT.search(stderr), (status, stderr[-600:])
    # lsi_reselect's own trace event comes after the assertion: it never shows
    assert events == ["lsi_execute_script_io_disconnect", "lsi_do_command", "command 18"], events


@pytest.mark.parametrize(
    ("old", "new"), [(RSL_ON, RSL_OFF), (DISCONNECT, NO_DISCONNECT)],
    ids=["no-reselection-interrupt", "no-disconnect"],
)  # fmt: skip
def test_without_each_ingredient_the_command_runs_and_qemu_lives(tmp_path, old, new):
    status, stderr, events = run_traced(tmp_path, variant(tmp_path, RESELECT, old, new))
    assert status == 0 and NOT_HAPPENED in stderr, (status, stderr[-600:])
    assert "lsi_do_command" in events and "command 18" in events, events
    assert "lsi_reselect" not in events, events
