"""The lsi stall's reproducer, run as a QEMU developer runs it: ``sh FILE``, no guest.

An LSI53C895A whose SCRIPTS start in memory full of 0xcc bytes copies 13.4 MB
per 12 bytes of it (a memory move of 0xcccccc bytes from 0xcccccccc), up to
QEMU 7.2's 100 instructions per call, inside the MMIO write to DSP that starts
them: QEMU's main loop answers nothing for seconds (docs/results/findings.rst,
finding-lsi-stall). The observers are QEMU's own: whether it answers the qtest
command after the DSP write within the script's bound (the reproducer exits
124 when it does not), and its ``lsi_memcpy`` trace events. Nothing of this
package runs.

* ``lsi-memmove-main-loop-stall.sh`` leaves the DSP write unanswered past
  its 5 s bound, and QEMU's trace shows the 13.4 MB moves;
* the same start on zeroed memory (SCRIPTS of zero dwords: no move) is
  answered at once, and QEMU's trace has no move of that size.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from reproducer_scripts import REPRODUCERS, run_script, script_variant, whole_line

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")

SCRIPT = REPRODUCERS / "lsi-memmove-main-loop-stall.sh"
STALLED = 124  # the reproducer's status when QEMU left commands unanswered for its bound
STALLED_AT_DSP = "QEMU answered 5 of 7 commands in 5 s (the DSP write: not yet)"
ANSWERED = "QEMU answered all 7 commands"
POISON = "memset 0x100000 0x10000 0xcc"
ZEROED = "memset 0x100000 0x10000 0x00"
TRACED = "-qtest stdio -trace lsi_memcpy"
LONG_MOVE = re.compile(r"lsi_memcpy .*count 13421772\b")  # 0xcccccc bytes


def traced(tmp_path: Path, source: Path = SCRIPT) -> Path:
    """The script with QEMU writing its ``lsi_memcpy`` events to stderr (which the script passes on)."""
    return script_variant(source, tmp_path, "traced.sh", "-qtest stdio", TRACED)


def test_the_dsp_write_holds_qemus_main_loop_past_the_bound():
    status, stderr = run_script(SCRIPT)
    assert status == STALLED and STALLED_AT_DSP in stderr, (status, stderr[-600:])


def test_qemus_trace_shows_the_long_moves_from_poisoned_memory(tmp_path):
    status, stderr = run_script(traced(tmp_path))
    assert status == STALLED, (status, stderr[-600:])
    assert LONG_MOVE.search(stderr), stderr[-600:]


def test_the_same_start_on_zeroed_memory_is_answered_at_once(tmp_path):
    zeroed = script_variant(SCRIPT, tmp_path, "zeroed.sh", whole_line(POISON), whole_line(ZEROED))
    status, stderr = run_script(traced(tmp_path, zeroed))
    assert status == 0 and ANSWERED in stderr, (status, stderr[-600:])
    assert not LONG_MOVE.search(stderr), stderr[-600:]
