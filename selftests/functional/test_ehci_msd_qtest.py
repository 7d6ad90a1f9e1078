"""The ehci-msd recipe on the usb.ich9_ehci row, seen from QEMU's trace: the stick is enumerated and runs SCSI.

A bare QEMU under ``-qtest`` (clock running: the EHCI frame timer walks the
async list again and again) with the row's own arguments, read from the cfg
through the test catalog: ich9-usb-ehci1 (usb.ich9_ehci) or usb-ehci
(usb.usb_ehci) and a null-co ``usb-storage`` stick on its bus. The scratch memory gets the ``ehci_msd`` fill of a seed,
then the recipe's writes (the mapping a guided run uses, from
:mod:`test_recipes_qtest`). QEMU's trace is the observer: for most of eight
fill seeds in a row (none chosen) it must show the stick's standard requests
(``usb_desc_device``, ``usb_set_addr``, ``usb_set_config``), the bulk-only
protocol (``usb_msd_cmd_submit``, ``usb_msd_send_status``, data in or out)
and the SCSI layer behind it (``scsi_req_parsed``); QEMU must live through
every seed. The same recipe with the controller alone (no stick on the bus)
reaches none of it.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
from test_recipes_qtest import EVENT, FILL_SEEDS, QEMU, Case, recipe_ops
from test_storage_rows_qtest import at_slot, controller_alone, row_arguments

from avocado_iofuzz.model.dma_layouts import LAYOUT_EHCI_MSD
from avocado_iofuzz.repro.qtest_run import QtestTarget, run_qtest, write_halt_firmware

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")

# (row, its controller's -device driver, vendor, device): the recipe's two ids
ROWS = (
    ("iofuzz.quick.usb.ich9_ehci", "ich9-usb-ehci1", 0x8086, 0x293A),
    ("iofuzz.quick.usb.usb_ehci", "usb-ehci", 0x8086, 0x24CD),
)
TRACE = ("usb_desc_*", "usb_set_*", "usb_msd_*", "scsi_*", "usb_ehci_state")
ENUMERATED = ("usb_desc_device", "usb_set_addr", "usb_desc_config", "usb_set_config", "usb_msd_maxlun")
BULK_ONLY = ("usb_msd_cmd_submit", "usb_msd_cmd_complete", "usb_msd_send_status", "scsi_req_parsed")
DATA = ("usb_msd_data_in", "usb_msd_data_out")
SEEDS_NEEDED = 6  # of the eight FILL_SEEDS


def case(args: list[str], ids: tuple[int, int]) -> Case:
    return Case("ehci-msd", tuple(args), (*ids, 0x0C0320), LAYOUT_EHCI_MSD, ((0, "mem", False),), (), ())


def traced(args: list[str], ids: tuple[int, int], seed: int, tmp: Path) -> Counter[str]:
    log = tmp / f"trace-{seed:x}.log"
    firmware = write_halt_firmware(tmp / "halt.bin")
    patterns = [arg for pattern in TRACE for arg in ("-trace", pattern)]
    argv = ("-machine", "pc", "-m", "256", "-nodefaults", *args, *patterns, "-D", str(log))
    outcome = run_qtest(QtestTarget(QEMU, argv).running(firmware), recipe_ops(case(args, ids), seed), linger=2.0)
    assert outcome.answered == outcome.ops, f"seed {seed:#x}: QEMU stopped at op {outcome.answered}: {outcome}"
    assert not outcome.signature.is_failure, f"seed {seed:#x}: {outcome.signature.describe()}"
    return Counter(EVENT.findall(log.read_text(errors="replace")) if log.exists() else [])


def lacking(seen: Counter[str]) -> list[str]:
    missing = [event for event in (*ENUMERATED, *BULK_ONLY) if event not in seen]
    return missing + ([" or ".join(DATA)] if not any(event in seen for event in DATA) else [])


@pytest.mark.parametrize(("row", "controller", "vendor", "device"), ROWS, ids=[r[0].rsplit(".", 1)[-1] for r in ROWS])
def test_most_fills_enumerate_the_stick_and_run_scsi_commands_on_it(
    row: str, controller: str, vendor: int, device: int, tmp_path: Path
) -> None:
    args = at_slot(row_arguments(row), controller)
    seen = {seed: traced(args, (vendor, device), seed, tmp_path) for seed in FILL_SEEDS}
    missing = {seed: lacking(events) for seed, events in seen.items()}
    reached = [seed for seed, lack in missing.items() if not lack]
    commands = {seed: events["usb_msd_cmd_submit"] for seed, events in seen.items()}
    print(f"{len(reached)} of {len(FILL_SEEDS)} fills reach the stick's SCSI; CBWs submitted per seed {commands}")
    assert len(reached) >= SEEDS_NEEDED, "; ".join(f"{seed:#x}: {lack}" for seed, lack in missing.items() if lack)
    assert sum(commands.values()) >= 2 * len(FILL_SEEDS), f"most slots' CBWs should be submitted: {commands}"


def test_without_the_stick_the_recipe_reaches_none_of_it(tmp_path: Path) -> None:
    row, controller, vendor, device = ROWS[0]
    args = at_slot(controller_alone(row_arguments(row), controller), controller)
    seen = traced(args, (vendor, device), FILL_SEEDS[0], tmp_path)
    assert "usb_ehci_state" in seen, f"the async schedule did not run: {sorted(seen)}"
    anyway = [event for event in (*ENUMERATED, *BULK_ONLY, *DATA) if event in seen]
    assert not anyway, f"events without a stick on the bus: {anyway}"
