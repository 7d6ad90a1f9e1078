"""A qtest replay of a dma window carries the memory the device reads: with it QEMU's UHCI loads TDs from it.

No guest: QEMU runs the replay under ``-qtest`` with its clock running (the
halting firmware of ``repro/qtest_run.py``), as triage does. The window is
one of a ``dma`` plan over a ``piix3-usb-uhci``'s ports, chosen from the
model so that it ends with the controller running and its frame list base in
the scratch memory's ring page. QEMU's ``usb_uhci_td_load`` events are the
observer: the window replayed with its scratch fills (``ops_with_memory``,
what extract hands to triage) makes the controller load TDs at scratch
addresses; the same ops without the fills do not (the memory reads as zeros).
Measured: 4 TD loads at scratch addresses with the fills, 0 of ~200 k without. The
fills also go through QEMU as the reproducer file writes them
(``write ADDR LEN DATA``), and read back the same.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from avocado_iofuzz.model.dma import SCRATCH_BASE, SCRATCH_SIZE, VALUES_DMA, scratch_fill
from avocado_iofuzz.model.pci import config_address
from avocado_iofuzz.model.program import SPACE_MMIO, SPACE_PCI, Op, RangePlan
from avocado_iofuzz.repro.qtest_ops import format_script
from avocado_iofuzz.repro.qtest_run import QtestTarget, run_qtest, write_halt_firmware

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")

QEMU = "qemu-system-x86_64"
UHCI_SLOT = 5
IO_BASE = 0xC000
SEED = 0x5EED00DA
LOAD = re.compile(r"usb_uhci_td_load qh 0x[0-9a-f]+, td 0x([0-9a-f]+)")
RS, RESETS = 0x1, 0x6  # USBCMD: run/stop; host controller and global reset


def pci_setup() -> list[Op]:
    """What the firmware would do: the UHCI's I/O BAR (BAR 4) at IO_BASE, I/O decoding and bus mastering on."""
    return [
        Op("w", config_address(0, UHCI_SLOT, 0, 0x20), 4, IO_BASE | 1, SPACE_PCI),
        Op("w", config_address(0, UHCI_SLOT, 0, 0x04), 2, 0x7, SPACE_PCI),
    ]


def armed_op(plan: RangePlan) -> int:
    """The first fuzz op after which the UHCI runs with its frame list in the scratch memory's ring page."""
    command, base = 0, 0
    for i in range(2 * plan.slots, plan.op_count):
        op = plan.op(i)
        register = op.port - IO_BASE
        if register == 0:
            command = op.value & 0xFFFF
            if command & RESETS:
                base = 0  # a reset clears the frame list base
        elif register == 8:
            base = op.value & ~0xFFF
        if command & (RS | RESETS) == RS and base == SCRATCH_BASE:
            return i
    raise AssertionError("no op of the plan arms the controller on the ring page")


def td_loads(log: Path) -> list[int]:
    return [int(address, 16) for address in LOAD.findall(log.read_text(errors="replace"))] if log.exists() else []


@pytest.fixture(scope="module")
def window(tmp_path_factory):
    plan = RangePlan(0, IO_BASE, IO_BASE + 0x1F, "uhci", SEED, 20_000, 4, values=VALUES_DMA)
    last = armed_op(plan)
    return plan, max(0, last - 200), last + 1


def replay(tmp_path: Path, name: str, ops: list[Op]) -> list[int]:
    log = tmp_path / f"{name}.log"
    firmware = write_halt_firmware(tmp_path / "halt.bin")
    args = ("-machine", "pc", "-nodefaults", "-device", f"piix3-usb-uhci,addr={UHCI_SLOT}")
    target = QtestTarget(QEMU, (*args, "-trace", "usb_uhci_td_load", "-D", str(log))).running(firmware)
    outcome = run_qtest(target, [*pci_setup(), *ops], linger=1.0)
    assert outcome.answered == outcome.ops, outcome
    return td_loads(log)


def test_the_replayed_memory_is_what_the_device_reads(tmp_path, window):
    plan, first, stop = window
    with_memory = list(plan.ops_with_memory(first, stop))
    without = list(plan.ops(first, stop))
    assert len(with_memory) == len(without) + SCRATCH_SIZE // 8
    loads = replay(tmp_path, "with-memory", with_memory)
    in_scratch = [a for a in loads if SCRATCH_BASE <= a < SCRATCH_BASE + SCRATCH_SIZE]
    assert in_scratch, f"{len(loads)} TD loads, none from the scratch memory"
    loads_without = replay(tmp_path, "without-memory", without)
    assert not [a for a in loads_without if SCRATCH_BASE <= a < SCRATCH_BASE + SCRATCH_SIZE]
    print(f"TD loads at scratch addresses: {len(in_scratch)} with the fill, 0 of {len(loads_without)} without")


def qtest_answers(script: str, timeout: float = 60) -> list[str]:
    """QEMU's answers to every line of ``script`` (a qtest QEMU does not quit at the end of its input)."""
    commands = len(script.splitlines())
    proc = subprocess.Popen(
        [QEMU, "-machine", "pc", "-nodefaults", "-display", "none", "-S", "-qtest", "stdio"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    timer = threading.Timer(timeout, proc.kill)  # the bound on every read below
    timer.start()
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(script)
        proc.stdin.flush()
        answers = []
        while len(answers) < commands and (line := proc.stdout.readline()):
            answers.append(line.rstrip("\n"))
        return answers
    finally:
        timer.cancel()
        proc.kill()
        proc.wait(timeout=30)


def test_the_reproducers_write_lines_put_the_fill_in_guest_ram(window):
    plan, first, _ = window
    words = [op for op in plan.ops_with_memory(first, first + 1) if op.space == SPACE_MMIO]
    script = format_script(words) + f"read {SCRATCH_BASE:#x} 64\nread {SCRATCH_BASE + SCRATCH_SIZE - 64:#x} 64\n"
    assert script.count("write ") == SCRATCH_SIZE // 4096
    answers = qtest_answers(script)
    expected = scratch_fill(plan.range_seed, first // 4096)
    assert answers[: SCRATCH_SIZE // 4096] == ["OK"] * (SCRATCH_SIZE // 4096)
    assert answers[-2:] == [f"OK 0x{expected[:64].hex()}", f"OK 0x{expected[-64:].hex()}"]
