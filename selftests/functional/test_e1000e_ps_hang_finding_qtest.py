"""The e1000e packet-split hang's reproducer, run as a QEMU developer runs it: ``sh FILE``, no guest.

QEMU 7.2 (and 10.0.13) stops answering for good when a frame arrives for an
e1000e in packet-split mode whose receive tail is odd and whose descriptors
are all null: ``e1000e_write_packet_to_guest`` steps the head two slots per
32-byte descriptor, past the odd tail, and a null descriptor takes none of
the frame (docs/results/findings.rst). The observers are QEMU's own: whether
it answers the qtest commands after the trigger (the reproducer counts the
answers and exits 124 when the last ones never come), the receive head
register it answers last when it does, and its trace events for the frame
(``e1000e_rx_receive_iov`` when it enters, ``e1000e_rx_written_to_guest``
when it is done). Nothing of this package runs.

* ``e1000e-ps-null-ring-hang.sh`` hangs QEMU every time, at the TDT write
  whose frame slirp answers: the reply enters the device and is never done;
* the same ring of zeros in RAM hangs it too: the missing RAM only supplies
  the null descriptors;
* an even tail (the head meets it), extended or legacy descriptors (one slot
  each) at the same address, or a first descriptor with buffers in RAM keep
  QEMU answering, with the frame received and the head where it stopped.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from reproducer_scripts import REPRODUCERS, run_script, script_variant, whole_line

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")

SCRIPT = REPRODUCERS / "e1000e-ps-null-ring-hang.sh"
HANG_STATUS = 124  # what the reproducer exits with when QEMU left commands unanswered for 10 s
RUNS = 3  # each hang costs the reproducer's 10 s bound of a spinning QEMU
HUNG_AT_TDT = "QEMU answered 15 of 17 commands in 10 s"  # the TDT write (16th) and the RDH read after it
RING_ADDRESS = "writel 0xfeb02800 0x47001000"  # RDBAL: no RAM behind it with -m 256
RAM_RING = "writel 0xfeb02800 0x200000"
ODD_TAIL, EVEN_TAIL = "writel 0xfeb02818 0x7f", "writel 0xfeb02818 0x7e"
PACKET_SPLIT = "writel 0xfeb00100 0x4000402"  # RCTL: EN | DTYP=1 | SECRC
EXTENDED = "writel 0xfeb00100 0x4000002"  # RCTL: EN | SECRC, RFCTL.EXSTEN still set
LEGACY = "writel 0xfeb05008 0x0"  # RFCTL without EXSTEN
EXSTEN = "writel 0xfeb05008 0x8000"
TX_DESCRIPTOR = "write 0x100000 16 0x00101000000000003c00000b00000000"
# a packet-split descriptor at the RAM ring's slot 0: four buffers at 0x300000, 0x310000, 0x320000, 0x330000
RX_DESCRIPTOR = "write 0x200000 32 0x0000300000000000000031000000000000003200000000000000330000000000"
COMMANDS = "commands=17"
TRACED = "-trace e1000e_rx_receive_iov -trace e1000e_rx_written_to_guest -qtest stdio"


def edited(tmp_path: Path, edits: list[tuple[str, str]]) -> Path:
    """The reproducer with each ``old`` whole script line made ``new``, in order."""
    path = SCRIPT
    for step, (old, new) in enumerate(edits):
        path = script_variant(path, tmp_path, f"variant{step}.sh", whole_line(old), whole_line(new))
    return path


def traced(tmp_path: Path, edits: list[tuple[str, str]]) -> Path:
    """``edited`` with QEMU tracing the frame's entry into the device and its end there (on its stderr)."""
    path = edited(tmp_path, edits)
    return script_variant(path, tmp_path, "traced.sh", "-qtest stdio", TRACED)


def frame_events(stderr: str) -> list[str]:
    return [word for line in stderr.splitlines() for word in line.split()[:1]
            if word.endswith(("e1000e_rx_receive_iov", "e1000e_rx_written_to_guest"))]  # fmt: skip


def test_the_reproducer_hangs_qemu_at_the_tdt_write_every_time():
    outcomes = [run_script(SCRIPT) for _ in range(RUNS)]
    hangs = sum(status == HANG_STATUS and HUNG_AT_TDT in stderr for status, stderr in outcomes)
    assert hangs == RUNS, [(status, stderr[-600:]) for status, stderr in outcomes]


def test_qemus_trace_shows_the_reply_entering_the_device_and_never_done(tmp_path):
    status, stderr = run_script(traced(tmp_path, []))
    assert status == HANG_STATUS and HUNG_AT_TDT in stderr, (status, stderr[-600:])
    assert [e.split(":")[-1] for e in frame_events(stderr)] == ["e1000e_rx_receive_iov"], stderr[-600:]


def test_a_ring_of_zeros_in_ram_hangs_qemu_the_same_way(tmp_path):
    status, stderr = run_script(edited(tmp_path, [(RING_ADDRESS, RAM_RING)]))
    assert status == HANG_STATUS and HUNG_AT_TDT in stderr, (status, stderr[-600:])


@pytest.mark.parametrize(
    ("edits", "head"),
    [([(ODD_TAIL, EVEN_TAIL)], 0x7E),
     ([(PACKET_SPLIT, EXTENDED)], 0x7F),
     ([(EXSTEN, LEGACY)], 0x7F),
     ([(RING_ADDRESS, RAM_RING), (TX_DESCRIPTOR, f"{TX_DESCRIPTOR}\n{RX_DESCRIPTOR}"), (COMMANDS, "commands=18")],
      0x2)],
    ids=["even-tail", "extended-descriptors", "legacy-descriptors", "packet-split-ring-with-buffers"],
)  # fmt: skip
def test_controls_receive_the_reply_and_keep_qemu_answering(tmp_path, edits, head):
    status, stderr = run_script(traced(tmp_path, edits))
    assert status == 0 and "QEMU answered all" in stderr, (status, stderr[-600:])
    # the reply entered the device and was done with; RDH says where the head stopped:
    # at the tail after null descriptors, or one packet-split descriptor (two slots) on
    assert [e.split(":")[-1] for e in frame_events(stderr)] == ["e1000e_rx_receive_iov", "e1000e_rx_written_to_guest"]
    assert f"the last (RDH): OK 0x{head:016x}" in stderr, stderr[-600:]
