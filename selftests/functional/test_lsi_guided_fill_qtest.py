"""Guided's scratch fill for the LSI53C895A bounds the SCRIPTS a DSP write starts there; the generic fill does not.

Guided's sweeps and mutations write dma values into the chip's registers:
scratch addresses (16-byte aligned) into DSP start SCRIPTS in the scratch
memory. A bare QEMU under ``-qtest`` with the ``storage.lsi53c895a`` row's
own arguments gets the PCI setup and one fill, then, for every 16-byte
aligned address of the scratch memory, a chip reset (ISTAT0.SRST) and a DSP
write there, and a read. QEMU's trace (``lsi_memcpy``) is the observer, for
four fill seeds in a row (none chosen):

* guided's fill (``lsi_scripts``, layout_choice.GUIDED_LAYOUTS): no memory
  move copies more than the layout's 16 bytes, from any of the 1024 starts,
  and QEMU answers every op within the bound;
* blind's fill (``generic``), the control: its random words decode as memory
  moves of up to 16 MB, and most seeds' starts reach such a move (what,
  chained, held QEMU's main loop for minutes: the lsi stall).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from test_lsi_scripts_qtest import LSI, ROW, function_of
from test_recipes_qtest import QEMU
from test_storage_rows_qtest import at_slot, row_arguments

from avocado_iofuzz.model.dma import SCRATCH_BASE, SCRATCH_SIZE, scratch_fill
from avocado_iofuzz.model.dma_layouts import LAYOUT_GENERIC
from avocado_iofuzz.model.layouts.lsi_scripts import LAYOUT_LSI_SCRIPTS
from avocado_iofuzz.model.program import SPACE_MMIO, Op
from avocado_iofuzz.repro.qtest import parse_script
from avocado_iofuzz.repro.qtest_ops import pci_setup_commands
from avocado_iofuzz.repro.qtest_run import QtestTarget, run_qtest, write_halt_firmware

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")

SEEDS = tuple(range(0x15100000, 0x15100004))
STRIDE = 16  # dma values' scratch addresses (model/dma.py, kind 6) are 16-byte aligned
ANSWER_BOUND = 20.0  # seconds QEMU may take to answer one qtest line before it counts as hung
LAYOUT_MOVE_BOUND = 16  # the lsi_scripts programs' memory moves copy at most 16 bytes (a CDB)
LONG_MOVE = 0x10000  # a move the generic fill's random words make (their counts reach 16 MB)
ISTAT0, DSP = 0x14, 0x2C
MEMCPY = re.compile(r"lsi_memcpy memcpy dest 0x[0-9a-f]+ src 0x[0-9a-f]+ count (\d+)")


def starts(layout: str, fill_seed: int) -> list[Op]:
    """PCI setup, the fill at the scratch memory, then a reset chip started at every aligned scratch address."""
    function = function_of(LSI)
    (bar1,) = [bar.start for bar in function.resources if bar.index == 1]
    fill = scratch_fill(fill_seed, 0, layout)
    ops = [*parse_script("\n".join(pci_setup_commands([function])))]
    ops += [
        Op("w", SCRATCH_BASE + at, 8, int.from_bytes(fill[at : at + 8], "little"), SPACE_MMIO)
        for at in range(0, len(fill), 8)
    ]
    for offset in range(0, SCRATCH_SIZE, STRIDE):
        ops += [
            Op("w", bar1 + ISTAT0, 1, 0x40, SPACE_MMIO),  # SRST: whatever the last start left stops
            Op("w", bar1 + ISTAT0, 1, 0x00, SPACE_MMIO),
            Op("w", bar1 + DSP, 4, SCRATCH_BASE + offset, SPACE_MMIO),  # SCRIPTS start here
            Op("r", bar1 + ISTAT0, 1, 0, SPACE_MMIO),
        ]
    return ops


def moves(layout: str, fill_seed: int, tmp: Path) -> list[int]:
    """The byte counts of the memory moves QEMU's trace shows; QEMU must have answered every op."""
    log = tmp / f"trace-{layout}-{fill_seed:x}.log"
    args = at_slot(row_arguments(ROW), "lsi53c895a")
    argv = ("-machine", "pc", "-m", "256", "-nodefaults", *args, "-trace", "lsi_memcpy", "-D", str(log))
    ops = starts(layout, fill_seed)
    target = QtestTarget(QEMU, argv).running(write_halt_firmware(tmp / "halt.bin"))
    outcome = run_qtest(target, ops, linger=1.0, stall_timeout=ANSWER_BOUND)
    counts = [int(count) for count in MEMCPY.findall(log.read_text(errors="replace"))] if log.exists() else []
    print(f"{layout} {fill_seed:#x}: {outcome.signature.describe()} in {outcome.elapsed:.1f} s; {len(counts)} moves, "
          f"largest {max(counts, default=0)} bytes")  # fmt: skip
    assert outcome.answered == outcome.ops, f"{layout} seed {fill_seed:#x}: QEMU stopped answering: {outcome}"
    return counts


def test_guided_lsi_fill_bounds_every_move_where_the_generic_fill_moves_megabytes(tmp_path: Path) -> None:
    guided = {seed: moves(LAYOUT_LSI_SCRIPTS, seed, tmp_path) for seed in SEEDS}
    too_long = {seed: max(counts) for seed, counts in guided.items() if counts and max(counts) > LAYOUT_MOVE_BOUND}
    assert not too_long, f"lsi_scripts fills whose SCRIPTS moved more than {LAYOUT_MOVE_BOUND} bytes: {too_long}"
    assert any(guided.values()), "no lsi_scripts start ran its memory move: the starts did not run SCRIPTS"
    blind = {seed: moves(LAYOUT_GENERIC, seed, tmp_path) for seed in SEEDS}
    long_moves = [seed for seed, counts in blind.items() if any(count > LONG_MOVE for count in counts)]
    assert len(long_moves) > len(SEEDS) // 2, f"generic fills with a move over {LONG_MOVE} bytes: {long_moves}"
