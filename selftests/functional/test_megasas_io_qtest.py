"""The megasas_io recipes on the storage.megasas row, seen from QEMU's trace: MFI frames that do I/O.

The ``megasas`` layout (blind's) draws frames whose fields disagree (a data
length the SGL does not cover, a CDB without its allocation length, a DCMD
buffer too small for its handler), so the controller refuses most of them
early. The ``megasas_io`` layout, which only the ``megasas-io*`` recipes name,
carries frames a driver would post. This test runs each recipe on a bare QEMU
under ``-qtest`` with the row's own arguments (read from ``cfg/devices.cfg``
through the test catalog: the HBA and a null-co disk at target 0), the PCI
setup, the layout's fill for a fill seed and the recipe's writes, as
:mod:`test_recipes_qtest` does. QEMU's trace is the observer: for most of
eight fill seeds in a row (no chosen seed), completions through the reply
queue, interrupts, LD and SCSI frames the disk serves by DMA and DCMD
handlers must be there, and an abort that finds the frame it names still in
flight (the CTRL_EVENT_WAIT QEMU holds); over the eight fills, the starts of
LD and SCSI reads and writes, emulated commands (MODE SELECT with lists the
disk takes, VPD page 0x80 of the row's serial), more DCMD handlers and the
error paths of frames whose lengths disagree with their CDBs.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_recipes_qtest import FILL_SEEDS, QEMU, SLOT, Case, bases_of, function_of
from test_storage_rows_qtest import at_slot, row_arguments

from avocado_iofuzz.guided.batch import Base
from avocado_iofuzz.guided.recipes import applicable, load
from avocado_iofuzz.model.dma import SCRATCH_BASE, scratch_fill
from avocado_iofuzz.model.dma_layouts import LAYOUT_MEGASAS, LAYOUT_MEGASAS_IO
from avocado_iofuzz.model.pci import config_address
from avocado_iofuzz.model.program import SPACE_MMIO, SPACE_PCI, Op
from avocado_iofuzz.repro.qtest import parse_script
from avocado_iofuzz.repro.qtest_ops import pci_setup_commands
from avocado_iofuzz.repro.qtest_run import QtestTarget, run_qtest, write_halt_firmware

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")

ROW = "iofuzz.quick.storage.megasas"
MEGASAS = Case("megasas-io", (), (0x1000, 0x0060, 0x010400), LAYOUT_MEGASAS, ((0, "mem", True),), (), ())
SEEDS_NEEDED = 6  # of the eight FILL_SEEDS
# an event name, upper case too (scsi_disk_dma_command_READ; test_recipes_qtest's EVENT misses those)
EVENT = re.compile(r"^(?:\d+@\d+\.\d+:)?([A-Za-z0-9_]+) ", re.M)


@dataclass(frozen=True)
class IoCase:
    recipe: str
    expected: tuple[str, ...]  # in the trace for SEEDS_NEEDED of the fill seeds (``prefix*``: any such event)
    over_the_fills: tuple[str, ...] = ()  # each in the trace of at least one of the fill seeds (rarer commands)


IO_CASES = (
    IoCase("megasas-io", (
        # the queue set up by the init frame, completions through it, interrupts on
        "megasas_init_queue", "megasas_intr_enabled", "megasas_qf_complete",
        # an LD read or write, SCSI commands and DCMDs handled, and the disk reading or writing by DMA
        "megasas_handle_io", "megasas_handle_scsi", "megasas_dcmd_enter", "scsi_disk_dma_command_*",
        # the CTRL_EVENT_WAIT at 0x100 held, the abort at 0x180 finds it in flight
        "megasas_abort_frame",
    ), (
        # these need a few fills (each was in 2 or more of the 8 with 16 frames a fill)
        "megasas_io_read_start", "megasas_io_write_start", "megasas_scsi_write_start", "scsi_disk_emulate_write_data",
        "megasas_scsi_nodata", "scsi_disk_emulate_command_SEEK_10", "scsi_disk_emulate_command_FORMAT_UNIT",
        "megasas_dcmd_pd_list_query", "megasas_dcmd_unsupported",
        # session 9: MODE SELECT(10) with a list the disk takes (a new block size in some: later READs then ask
        # for more than their frames give), a serial number (VPD page 0x80; the row's disk has serial=), an
        # abort of the held frame with another context, DCMDs and commands every fill now posts once
        "scsi_disk_emulate_command_MODE_SELECT_10", "scsi_disk_mode_select_set_blocksize",
        "megasas_iov_read_overflow", "megasas_iov_write_overflow", "scsi_disk_emulate_vpd_page_80",
        "megasas_abort_invalid_context", "megasas_dcmd_ld_list_query", "megasas_dcmd_reset_ld",
        "megasas_dcmd_set_fw_time", "scsi_device_set_ua", "scsi_disk_emulate_command_UNMAP",
        "scsi_disk_emulate_read_toc", "scsi_disk_emulate_command_SAI_unsupported",
        "scsi_disk_emulate_command_UNKNOWN", "megasas_scsi_invalid_cdb_len",
    )),
    IoCase("megasas-io-msix", ("megasas_msix_enabled", "megasas_msix_raise", "megasas_qf_complete")),
    IoCase("megasas-io-msi", ("megasas_msi_enabled", "megasas_msi_raise", "megasas_qf_complete")),
)  # fmt: skip


def config_base() -> Base:
    """The function's config space as a run's pci range (the MSI and MSI-X steps write there)."""
    start = config_address(0, SLOT, 0, 0)
    return Base(SPACE_PCI, start, start + 0xFF, 1, f"0000:00:{SLOT:02x}.0 config")


def recipe_ops(recipe: str, fill_seed: int) -> list[Op]:
    function = function_of(MEGASAS)
    bases = [*bases_of(function, LAYOUT_MEGASAS), config_base()]
    (applied,) = [r for r in applicable(load(), [function], bases) if r.name == recipe]
    setup = parse_script("\n".join(pci_setup_commands([function])))
    fill = scratch_fill(fill_seed, 0, LAYOUT_MEGASAS_IO)  # the recipe's own layout, whatever the range's
    memory = [Op("w", SCRATCH_BASE + at, 8, int.from_bytes(fill[at : at + 8], "little"), SPACE_MMIO)
              for at in range(0, len(fill), 8)]  # fmt: skip
    writes = [Op("w", w.address, w.width, w.value, w.base.space) for w in applied.writes]
    assert all(w.layout == LAYOUT_MEGASAS_IO for w in applied.writes if w.points)
    return [*setup, *memory, *writes]


def events_of(recipe: str, fill_seed: int, tmp: Path) -> Counter[str]:
    log = tmp / f"trace-{recipe}-{fill_seed:x}.log"
    firmware = write_halt_firmware(tmp / "halt.bin")
    args = at_slot(row_arguments(ROW), "megasas")
    traces = [arg for pattern in ("megasas_*", "scsi_*") for arg in ("-trace", pattern)]
    argv = ("-machine", "pc", "-m", "256", "-nodefaults", *args, *traces, "-D", str(log))
    ops = recipe_ops(recipe, fill_seed)
    outcome = run_qtest(QtestTarget(QEMU, argv).running(firmware), ops, linger=2.0)
    assert outcome.answered == outcome.ops, f"{recipe}: QEMU stopped at op {outcome.answered} of {outcome.ops}"
    return Counter(EVENT.findall(log.read_text(errors="replace")) if log.exists() else [])


def reached_in(pattern: str, events: Counter[str]) -> bool:
    """``pattern`` (an event, or a prefix ending in ``*``) fired."""
    if pattern.endswith("*"):
        return any(event.startswith(pattern[:-1]) for event in events)
    return pattern in events


@pytest.mark.parametrize("case", IO_CASES, ids=lambda c: c.recipe)
def test_megasas_io_frames_reach_io_and_dcmd_handlers_on_most_fills(case: IoCase, tmp_path: Path) -> None:
    seen = {seed: events_of(case.recipe, seed, tmp_path) for seed in FILL_SEEDS}
    missing = {seed: [e for e in case.expected if not reached_in(e, events)] for seed, events in seen.items()}
    reached = [seed for seed, lack in missing.items() if not lack]
    union = set().union(*seen.values())
    print(f"{case.recipe}: {len(reached)} of {len(FILL_SEEDS)} fills reach all of {case.expected}; "
          f"{len(union)} distinct events over the fills: {sorted(union)}")  # fmt: skip
    assert len(reached) >= SEEDS_NEEDED, (
        f"{case.recipe}: only {len(reached)} of {len(FILL_SEEDS)} fill seeds reach the events; lacking: "
        + "; ".join(f"{seed:#x}: {lack}" for seed, lack in missing.items() if lack)
    )
    never = [event for event in case.over_the_fills if event not in union]
    assert not never, f"{case.recipe}: no fill of {len(FILL_SEEDS)} reaches {never}"
