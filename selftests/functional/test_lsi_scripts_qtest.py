"""The lsi-scripts recipe, seen from QEMU's trace: its SCRIPTS do real SCSI I/O to the storage row's disk.

A bare QEMU under ``-qtest`` with the ``storage.lsi53c895a`` row's own
arguments (read from the cfg through the test catalog) gets the PCI setup,
the recipe's own scratch layout (``lsi_scripts``, the fill its pointer step
names) and the recipe's writes, then reads of the chip's registers. QEMU's
trace is the observer, for each of eight fill seeds in a row (none chosen):
the disk's read or write path must run (``scsi_disk_dma_command_READ`` /
``WRITE`` and the data events after it) and the chip must disconnect and
reselect the target (``lsi_wait_reselect``, ``lsi_reselect``), which random
SCRIPTS never did, in most of them. After every fill QEMU must still answer
a register read within a bound (the layout's programs end, and move at most
16 KiB each), and must not have died.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from test_recipes_qtest import QEMU, Case, bases_of, function_of
from test_storage_rows_qtest import at_slot, row_arguments

from avocado_iofuzz.guided.recipes import applicable, load
from avocado_iofuzz.model.dma import SCRATCH_BASE, scratch_fill
from avocado_iofuzz.model.dma_layouts import LAYOUT_GENERIC
from avocado_iofuzz.model.layouts.lsi_scripts import LAYOUT_LSI_SCRIPTS
from avocado_iofuzz.model.program import SPACE_MMIO, Op
from avocado_iofuzz.repro.qtest import parse_script
from avocado_iofuzz.repro.qtest_ops import pci_setup_commands
from avocado_iofuzz.repro.qtest_run import QtestTarget, run_qtest, write_halt_firmware

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")

ROW = "iofuzz.quick.storage.lsi53c895a"
LSI = Case("lsi-scripts", (), (0x1000, 0x0012, 0x010000), LAYOUT_GENERIC, ((1, "mem", False),), (), ())
SEEDS = tuple(range(0x5EED0000, 0x5EED0008))
NEEDED = 6  # of the eight seeds
ANSWER_BOUND = 15.0  # seconds QEMU may take to answer one qtest line before it counts as hung
DATA_PATH = ("scsi_disk_dma_command_READ", "scsi_disk_dma_command_WRITE")
DATA_MOVED = ("scsi_disk_read_complete", "scsi_disk_write_complete_noio")
# lsi events of a driver's flow that random SCRIPTS (blind, and the session 7 recipe) did not reach: a
# disconnect and reselection, the phase-mismatch jump that ends a transfer shorter than its move, the call
# of a data subroutine (its return comes only where a transfer fills the moves exactly)
DRIVER_FLOW = ("lsi_reselect", "lsi_bad_phase_jump", "lsi_execute_script_tc_call")
ISTAT0, SCRATCHA = 0x14, 0x34
EVENT = re.compile(r"^(?:\d+@\d+\.\d+:)?([A-Za-z0-9_]+) ", re.M)  # scsi-disk's names have capitals (_READ)


def lsi_ops(recipe: str, fill_seed: int) -> list[Op]:
    """PCI setup, the recipe's own layout at the scratch memory, its writes, then reads of the chip."""
    function = function_of(LSI)
    (chosen,) = [r for r in applicable(load(), [function], bases_of(function, LSI.layout)) if r.name == recipe]
    pointer_layouts = {w.layout for w in chosen.writes if w.points}
    assert pointer_layouts == {LAYOUT_LSI_SCRIPTS}, f"{recipe}: its pointer steps fill {pointer_layouts}"
    fill = scratch_fill(fill_seed, 0, LAYOUT_LSI_SCRIPTS)
    memory = [
        Op("w", SCRATCH_BASE + at, 8, int.from_bytes(fill[at : at + 8], "little"), SPACE_MMIO)
        for at in range(0, len(fill), 8)
    ]
    writes = [Op("w", w.address, w.width, w.value, w.base.space) for w in chosen.writes]
    bar = chosen.writes[0].base.start
    reads = [Op("r", bar + register, 1, 0, SPACE_MMIO) for register in (ISTAT0, SCRATCHA)]
    return [*parse_script("\n".join(pci_setup_commands([function]))), *memory, *writes, *reads]


def traced(recipe: str, fill_seed: int, tmp: Path) -> set[str]:
    log = tmp / f"trace-{recipe}-{fill_seed:x}.log"
    args = at_slot(row_arguments(ROW), "lsi53c895a")
    argv = ("-machine", "pc", "-m", "256", "-nodefaults", *args, "-trace", "lsi_*", "-trace", "scsi_*", "-D", str(log))
    ops = lsi_ops(recipe, fill_seed)
    target = QtestTarget(QEMU, argv).running(write_halt_firmware(tmp / "halt.bin"))
    outcome = run_qtest(target, ops, linger=2.0, stall_timeout=ANSWER_BOUND)
    events = EVENT.findall(log.read_text(errors="replace")) if log.exists() else []
    commands = events.count("scsi_disk_new_request")
    print(f"{recipe} {fill_seed:#x}: {outcome.signature.describe()}; {commands} commands reached the disk")
    assert outcome.answered == outcome.ops, f"{recipe} seed {fill_seed:#x}: QEMU stopped answering: {outcome}"
    return set(events)


@pytest.mark.parametrize("recipe", ["lsi-scripts", "lsi-scripts-second-half"])
def test_lsi_scripts_read_and_write_the_rows_disk_on_most_fills(recipe: str, tmp_path: Path) -> None:
    lacking, reselected = {}, {}
    for seed in SEEDS:
        seen = traced(recipe, seed, tmp_path)
        missing = [" or ".join(group) for group in (DATA_PATH, DATA_MOVED) if not set(group) & seen]
        missing += [event for event in DRIVER_FLOW[1:] if event not in seen]
        reselected[seed] = "lsi_reselect" in seen
        lacking[seed] = missing
    reached = [seed for seed, missing in lacking.items() if not missing]
    print(f"{recipe}: {len(reached)} of {len(SEEDS)} fills reach the disk's data path, {sum(reselected.values())} "
          "a reselection")
    assert len(reached) >= NEEDED, f"{recipe}: " + "; ".join(
        f"{seed:#x} lacks {missing}" for seed, missing in lacking.items() if missing
    )
    # reads disconnect until their data is there, then the target reselects: some fills' reads do
    assert sum(reselected.values()) >= NEEDED // 2, f"{recipe}: a reselection in {reselected}"
