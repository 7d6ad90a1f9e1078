"""The storage rows' disks, seen from QEMU's trace: a recipe now reaches the code behind the controller.

A storage row (``cfg/devices.cfg``) puts a null-co backed disk behind its
controller. Without one, every command a controller is given ends at "no such
device" (ahci: ``handle_cmd_badport``; nvme: an invalid namespace; megasas:
target not present), whatever the fuzzer or a recipe does. Each case here runs
a bring-up recipe twice on a bare QEMU under ``-qtest`` (the PCI setup, layout
fill and recipe writes of :mod:`test_recipes_qtest`): once with the row's own
QEMU arguments, read from the cfg through the test catalog (not copied here),
and once with the row's controller alone. QEMU's trace is the observer: the
disk-path events must be there with the row's arguments and absent without
them, so a row that lost its disk (or a recipe that stopped reaching it) fails.
"""

from __future__ import annotations

import dataclasses
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_recipes_qtest import CASES, EVENT, QEMU, SLOT, Case, recipe_ops

from avocado_iofuzz.repro.qtest_run import Pacing, QtestTarget, run_qtest, write_halt_firmware
from avocado_iofuzz.vt.catalog import TestCatalog

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")

# NVMe processes a submission queue in a timer 500 ns after its doorbell: the I/O queue doorbells
# find the queues the admin queue created only if that timer ran in between, as it does in a guest,
# where time passes between accesses. A pause after every couple of qtest lines gives it that room.
DOORBELL_PACING = Pacing(64, 0.002)


@dataclass(frozen=True)
class RowCase:
    row: str  # the cfg row whose extra_params are the QEMU arguments
    controller: str  # its controller's -device driver: the function the recipe drives
    like: str  # the recipe case (test_recipes_qtest) whose PCI ids, layout and BARs it shares
    recipe: str
    trace: tuple[str, ...]
    reached: tuple[str, ...]  # events of the disk path: with the row's disk, and never without
    refused: tuple[str, ...] = ()  # events of a command with nothing behind the controller
    walks: tuple[str, ...] = ()  # events on the way that the controller alone reaches too
    fill_seed: int | None = None  # None: the recipe case's
    pacing: Pacing | None = None


ROW_CASES = (
    RowCase(
        "iofuzz.quick.storage.ahci", "ich9-ahci", "ahci-port0-slots", "ahci-port0-slots",
        ("handle_cmd_*", "ahci_*", "ide_*", "dma_blk_*"),
        ("ide_exec_cmd", "ide_sector_read", "ide_sector_write", "ahci_populate_sglist", "ahci_cmd_done"),
        ("handle_cmd_badport",),
    ),
    RowCase(
        # a fill whose admin commands leave I/O queues standing (1 and 2 of 0x5eed0000-0x5eed0003 do)
        "iofuzz.quick.storage.nvme", "nvme", "nvme-admin-queue", "nvme-io-queues",
        ("pci_nvme_*",), ("pci_nvme_read", "pci_nvme_write"),
        walks=("pci_nvme_create_sq", "pci_nvme_io_cmd"), fill_seed=0x5EED0002, pacing=DOORBELL_PACING,
    ),
    RowCase(
        "iofuzz.quick.storage.megasas", "megasas", "megasas-frames", "megasas-scsi-frames",
        ("megasas_*", "scsi_*"),
        ("megasas_scsi_read_start", "scsi_req_parsed", "scsi_disk_new_request", "scsi_inquiry"),
    ),
)  # fmt: skip


def row_arguments(row: str) -> list[str]:
    (params,) = TestCatalog().variants(row)
    return shlex.split(params["extra_params"])


def at_slot(args: list[str], controller: str) -> list[str]:
    """``args`` with the controller's ``-device`` put at the slot the PCI setup assigns BARs for."""
    placed = [f"{word},addr={SLOT}" if i and args[i - 1] == "-device" and word.split(",")[0] == controller else word
              for i, word in enumerate(args)]  # fmt: skip
    assert placed != args, f"the row's arguments have no -device {controller}: {args}"
    return placed


def controller_alone(args: list[str], controller: str) -> list[str]:
    """The row's controller with nothing behind it: its own -device, without a drive= of its own."""
    (device,) = [word for i, word in enumerate(args)
                 if i and args[i - 1] == "-device" and word.split(",")[0] == controller]  # fmt: skip
    return ["-device", ",".join(option for option in device.split(",") if not option.startswith("drive="))]


def traced_events(case: Case, args: list[str], trace: tuple[str, ...], pacing: Pacing | None, tmp: Path) -> set[str]:
    tmp.mkdir()
    log = tmp / "trace.log"
    firmware = write_halt_firmware(tmp / "halt.bin")
    patterns = [arg for pattern in trace for arg in ("-trace", pattern)]
    argv = ("-machine", "pc", "-m", "256", "-nodefaults", *args, *patterns, "-D", str(log))
    ops = recipe_ops(case, case.fill_seed)
    outcome = run_qtest(QtestTarget(QEMU, argv).running(firmware), ops, linger=2.0, pacing=pacing)
    assert outcome.answered == outcome.ops, f"QEMU stopped at op {outcome.answered} of {outcome.ops}: {outcome}"
    return set(EVENT.findall(log.read_text(errors="replace"))) if log.exists() else set()


@pytest.mark.parametrize("row_case", ROW_CASES, ids=[c.row.rsplit(".", 1)[-1] for c in ROW_CASES])
def test_the_rows_disk_is_what_the_recipe_reaches(row_case: RowCase, tmp_path: Path) -> None:
    (like,) = [c for c in CASES if c.recipe == row_case.like]
    seed = like.fill_seed if row_case.fill_seed is None else row_case.fill_seed
    case = dataclasses.replace(like, recipe=row_case.recipe, fill_seed=seed)
    args = row_arguments(row_case.row)
    with_disk = traced_events(case, at_slot(args, row_case.controller), row_case.trace, row_case.pacing,
                              tmp_path / "disk")  # fmt: skip
    bare_args = at_slot(controller_alone(args, row_case.controller), row_case.controller)
    without = traced_events(case, bare_args, row_case.trace, row_case.pacing, tmp_path / "bare")
    print(f"{row_case.row}: only with the disk {sorted(with_disk - without)}; "
          f"only without {sorted(without - with_disk)}")  # fmt: skip
    missing = [event for event in (*row_case.walks, *row_case.reached) if event not in with_disk]
    assert not missing, f"{row_case.row} ({shlex.join(args)}): QEMU's trace lacks {missing}; it has {sorted(with_disk)}"
    refused = [event for event in row_case.refused if event in with_disk]
    assert not refused, f"{row_case.row}: commands still found no device ({refused})"
    anyway = [event for event in row_case.reached if event in without]
    assert not anyway, f"{row_case.row}: the controller alone reaches {anyway} too: they do not show the disk"
