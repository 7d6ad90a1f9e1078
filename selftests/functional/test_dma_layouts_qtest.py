"""The e1000 layout, seen from outside: an e1000e receives the frames it transmits only from valid-looking descriptors.

No guest (a guest's kernel does not survive an e1000e DMAing where random
registers point): QEMU runs the ops under ``-qtest`` with its clock running,
as triage replays do, with the scratch memory's fills written where the
executor writes them (``ops_with_memory``). The ops are rounds over the
e1000e's control, receive-control, transmit-control and ring registers; the
same seeds run twice, once with the generic layout and once with the e1000
one. Only the scratch memory differs.

QEMU's trace events are the observer. The register events (control
writes, resets, RCTL, RDT, a disabled transmitter) must come out the same
number of times in both runs: the ops are the same. A transmit descriptor is
read either way (``e1000e_tx_descr``, left out of the trace for its volume);
a frame goes out and, in loopback, comes back into the receive path
(``e1000e_rx_receive_iov``, ``e1000e_rx_has_buffers``) and is written to a
receive descriptor's buffer (``e1000e_rx_written_to_guest``) only when the
transmit descriptor has a sane command and length and the buffers are
memory the device can use. With the generic layout that must not happen;
with the e1000 layout it must. Measured: generic none; e1000 layout 1323
frames into the receive path, 1507 buffer checks, one frame written to the
guest (15 s). The seed was chosen anew when the DMA dictionary gained
page-frame numbers: the ops of the old one no longer loop a frame back with
either layout (a measurement over seeds, not a change of claim).
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from avocado_iofuzz.model.dma import VALUES_DMA
from avocado_iofuzz.model.dma_layouts import LAYOUT_E1000, LAYOUT_GENERIC
from avocado_iofuzz.model.pci import config_address
from avocado_iofuzz.model.program import SPACE_MMIO, SPACE_PCI, Op, RangePlan
from avocado_iofuzz.repro.qtest_run import QtestTarget, run_qtest, write_halt_firmware

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")

QEMU = "qemu-system-x86_64"
SLOT = 5
BAR0 = 0xFEB00000  # the e1000e's 128 KiB register BAR, where the firmware would put it
SEED = 0x5EED0300
ROUNDS = 24
FUZZ_COUNT = 120  # per slot and round: 5 ranges x 16 slots x 122 ops x 24 rounds ~ 234 k ops
# control (CTRL, MDIC's PHY loopback), RCTL, TCTL, receive ring 0, transmit ring 0
REGISTER_BLOCKS = (0x0000, 0x0100, 0x0400, 0x2800, 0x3800)
TRACE_EVENTS = ("e1000e_rx_*", "e1000e_tx_disabled", "e1000e_core_ctrl_*")
EVENT = re.compile(r"^(?:\d+@\d+\.\d+:)?(e1000e_[a-z0-9_]+) ", re.M)
RECEIVED = ("e1000e_rx_receive_iov", "e1000e_rx_has_buffers", "e1000e_rx_written_to_guest")
REGISTERS = ("e1000e_core_ctrl_write", "e1000e_rx_set_rctl", "e1000e_rx_set_rdt", "e1000e_tx_disabled")


def pci_setup() -> list[Op]:
    """The e1000e's BAR0 at BAR0, memory decoding and bus mastering on."""
    return [
        Op("w", config_address(0, SLOT, 0, 0x10), 4, BAR0, SPACE_PCI),
        Op("w", config_address(0, SLOT, 0, 0x04), 2, 0x6, SPACE_PCI),
    ]


def round_ops(layout: str) -> list[Op]:
    ops = []
    for number in range(ROUNDS):
        for index, block in enumerate(REGISTER_BLOCKS):
            plan = RangePlan(
                index, BAR0 + block, BAR0 + block + 0x3F, "e1000e", SEED + number, FUZZ_COUNT, 4, SPACE_MMIO,
                values=VALUES_DMA, layout=layout,
            )  # fmt: skip
            ops += plan.ops_with_memory()
    return ops


def replay(tmp_path: Path, layout: str) -> Counter[str]:
    log = tmp_path / f"{layout}.log"
    firmware = write_halt_firmware(tmp_path / "halt.bin")
    trace = [arg for event in TRACE_EVENTS for arg in ("-trace", event)]
    args = ("-machine", "pc", "-nodefaults", "-device", f"e1000e,addr={SLOT},romfile=", *trace, "-D", str(log))
    ops = round_ops(layout)
    outcome = run_qtest(QtestTarget(QEMU, args).running(firmware), [*pci_setup(), *ops], linger=1.0)
    assert outcome.answered == outcome.ops, outcome  # QEMU took every op (a crash here fails, naming it)
    return Counter(EVENT.findall(log.read_text(errors="replace")))


def test_only_the_e1000_layout_gets_frames_through_the_receive_path(tmp_path):
    generic, e1000 = replay(tmp_path, LAYOUT_GENERIC), replay(tmp_path, LAYOUT_E1000)
    print(f"generic: {dict(generic)}\ne1000 layout: {dict(e1000)}")
    assert all(generic[name] == e1000[name] > 0 for name in REGISTERS)  # the same ops reached the registers
    assert not any(generic[name] for name in RECEIVED)
    assert all(e1000[name] > 0 for name in RECEIVED), dict(e1000)
