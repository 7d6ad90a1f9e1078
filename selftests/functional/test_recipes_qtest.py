"""Each bring-up recipe, outside the fuzzer: a bare QEMU with the device reaches the recipe's deep trace events.

No guest and no executor: QEMU runs under ``-qtest`` with its clock running
(the halting firmware, as triage replays do). The PCI setup is the repro
code's (:func:`pci_setup_commands` from a PCI function whose BARs the test
assigns), the scratch memory gets the family's layout fill (``write`` of
:func:`layout_fill`), and the recipe's writes are the ones :func:`applicable`
maps onto that function's BAR ranges -- the same mapping a guided run uses.

QEMU's own trace is the observer: every event a case lists must be in it,
and the failure names the ones missing; an event by which the device refuses
a register write (``megasas_mmio_invalid_writel``: the recipe had the MFI
doorbell at 0x00, not 0x20) must not be. These are events the device fires
only once its DMA engine walks structures in memory (a virtqueue element
popped, an NVMe admin command parsed, an AHCI command FIS read, an e1000e
transmit descriptor fetched, EHCI queue heads and qTDs, UHCI TDs, MFI frames,
SCRIPTS instructions).
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from avocado_iofuzz.guided.batch import Base
from avocado_iofuzz.guided.recipes import AppliedRecipe, applicable, load
from avocado_iofuzz.model.dma import SCRATCH_BASE, VALUES_DMA, scratch_fill
from avocado_iofuzz.model.dma_layouts import (
    LAYOUT_AHCI,
    LAYOUT_E1000,
    LAYOUT_EHCI,
    LAYOUT_MEGASAS,
    LAYOUT_NVME,
    LAYOUT_UHCI,
    LAYOUT_VIRTIO,
)
from avocado_iofuzz.model.pci import IORESOURCE_IO, IORESOURCE_MEM, PciFunction, PciResource
from avocado_iofuzz.model.program import SPACE_MMIO, SPACE_PIO, Op
from avocado_iofuzz.repro.qtest import parse_script
from avocado_iofuzz.repro.qtest_ops import IORESOURCE_MEM_64, pci_setup_commands
from avocado_iofuzz.repro.qtest_run import QtestTarget, run_qtest, write_halt_firmware

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")

QEMU = "qemu-system-x86_64"
SLOT = 5
IO_BAR = 0xC000
MEM_BAR = 0xFEB00000
IO_SIZE = 0x20
MEM_SIZE = 0x20000
# The executor draws a fill seed per range: any seed gives valid-looking structures. A virtio request
# needs a whole well-formed chain (a readable header, then a writable status; TX: a readable header),
# which the virtio layout shapes for most available-ring heads: its cases take eight seeds in a row and
# need the events in most of them (a random chaining made about one fill in twelve a request).
FILL_SEED = 0x5EED0013
FILL_SEEDS = tuple(range(0x5EED0000, 0x5EED0008))
EVENT = re.compile(r"^(?:\d+@\d+\.\d+:)?([a-z0-9_]+) ", re.M)


@dataclass(frozen=True)
class Case:
    recipe: str
    device_args: tuple[str, ...]
    ids: tuple[int, int, int]  # vendor, device, class code: what picks the family
    layout: str
    bars: tuple[tuple[int, str, bool], ...]  # (index, "io"/"mem", 64-bit)
    trace: tuple[str, ...]  # -trace patterns
    expected: tuple[str, ...]  # events that must be in the trace
    fill_seed: int = FILL_SEED
    refused: tuple[str, ...] = ()  # events of a register write the device refuses: a wrong offset in the recipe
    any_of: tuple[str, ...] = ()  # at least one of these must be in the trace too
    seeds_needed: int = 0  # > 0: run FILL_SEEDS, the events must be there in this many of them
    repeated: tuple[tuple[str, int], ...] = ()  # (event, n): it must fire at least n times


def blk_case(recipe: str, device_args: tuple[str, ...]) -> Case:
    return Case(
        recipe, device_args, (0x1AF4, 0x1001, 0x010000), LAYOUT_VIRTIO, ((0, "io", False),),
        ("virtqueue_*", "virtio_blk_*"), ("virtqueue_pop", "virtio_blk_req_complete"),
        any_of=("virtio_blk_handle_read", "virtio_blk_handle_write"), seeds_needed=6,
    )  # fmt: skip


CASES = (
    blk_case(
        "virtio-legacy-queue0",
        ("-blockdev", "driver=null-co,node-name=n0", "-device", f"virtio-blk-pci,drive=n0,addr={SLOT}"),
    ),
    # QEMU 7.2 has no trace event of virtio-net's transmit path: virtqueue_flush is its push of a sent
    # element (a chain it refuses -- no readable header -- marks the device broken and is never flushed)
    Case(
        "virtio-net-legacy-tx",
        ("-device", f"virtio-net-pci,romfile=,addr={SLOT}"),
        (0x1AF4, 0x1000, 0x020000), LAYOUT_VIRTIO, ((0, "io", False),),
        ("virtqueue_*", "virtio_queue_notify"), ("virtio_queue_notify", "virtqueue_pop", "virtqueue_flush"),
        seeds_needed=6, repeated=(("virtqueue_flush", 2),),  # the device went on past the first chain
    ),
    Case(
        "nvme-admin-queue",
        ("-device", f"nvme,serial=iofuzz,addr={SLOT}"),
        (0x1B36, 0x0010, 0x010802), LAYOUT_NVME, ((0, "mem", True),),
        ("pci_nvme_*",), ("pci_nvme_mmio_start_success", "pci_nvme_admin_cmd"), FILL_SEED,
        ("pci_nvme_ub_mmiowr_invalid",),
    ),
    Case(
        "ahci-port0-slots",
        # a disk on port 0: without one QEMU refuses every command (handle_cmd_badport), as on the
        # storage.ahci row, whose ich9-ahci has none
        ("-device", f"ich9-ahci,id=ahci,addr={SLOT}", "-blockdev", "driver=null-co,node-name=d0",
         "-device", "ide-hd,drive=d0,bus=ahci.0"),
        (0x8086, 0x2922, 0x010601), LAYOUT_AHCI, ((5, "mem", False),),
        ("handle_cmd_*", "ahci_*"), ("handle_cmd_fis_dump", "ahci_cmd_done", "ahci_populate_sglist"), FILL_SEED,
        ("ahci_port_write_unimpl",),
    ),
    Case(
        "e1000-transmit",
        ("-device", f"e1000e,romfile=,addr={SLOT}"),
        (0x8086, 0x10D3, 0x020000), LAYOUT_E1000, ((0, "mem", False),),
        ("e1000e_tx_*", "e1000e_core_ctrl_*"), ("e1000e_tx_descr",),
    ),
    Case(
        "ehci-schedules",
        ("-device", f"ich9-usb-ehci1,addr={SLOT}"),
        (0x8086, 0x293A, 0x0C0320), LAYOUT_EHCI, ((0, "mem", False),),
        ("usb_ehci_q*",), ("usb_ehci_qh_ptrs", "usb_ehci_qtd_ptrs"),
    ),
    Case(
        "uhci-frame-list",
        ("-device", f"piix3-usb-uhci,addr={SLOT}"),
        (0x8086, 0x7020, 0x0C0300), LAYOUT_UHCI, ((4, "io", False),),
        ("usb_uhci_*",), ("usb_uhci_frame_start", "usb_uhci_td_load"),
    ),
    Case(
        "megasas-frames",
        ("-device", f"megasas,addr={SLOT}"),
        (0x1000, 0x0060, 0x010400), LAYOUT_MEGASAS, ((0, "mem", True),),
        ("megasas_*",), ("megasas_qf_new", "megasas_handle_dcmd"), FILL_SEED, ("megasas_mmio_invalid_writel",),
    ),
)  # fmt: skip


def function_of(case: Case) -> PciFunction:
    vendor, device, class_code = case.ids
    resources = []
    for index, kind, wide in case.bars:
        start, size, flags = (IO_BAR, IO_SIZE, IORESOURCE_IO) if kind == "io" else (MEM_BAR, MEM_SIZE, IORESOURCE_MEM)
        resources.append(PciResource(index, start, start + size - 1, flags | (IORESOURCE_MEM_64 if wide else 0)))
    return PciFunction(0, 0, SLOT, 0, vendor, device, class_code, tuple(resources))


def bases_of(function: PciFunction, layout: str) -> list[Base]:
    """The function's BARs as a run would fuzz them, with dma values and the family's layout."""
    return [
        Base(SPACE_PIO if bar.flags & IORESOURCE_IO else SPACE_MMIO, bar.start, bar.end,
             1 if bar.flags & IORESOURCE_IO else 4, f"{function.address} BAR{bar.index}", VALUES_DMA, layout)
        for bar in function.resources
    ]  # fmt: skip


def recipe_ops(case: Case, fill_seed: int) -> list[Op]:
    function = function_of(case)
    chosen: list[AppliedRecipe] = [
        r for r in applicable(load(), [function], bases_of(function, case.layout)) if r.name == case.recipe
    ]
    assert len(chosen) == 1, f"recipe {case.recipe} does not apply to {function.ids} ({chosen})"
    setup = parse_script("\n".join(pci_setup_commands([function])))
    fill = scratch_fill(fill_seed, 0, case.layout)
    memory = [
        Op("w", SCRATCH_BASE + at, 8, int.from_bytes(fill[at : at + 8], "little"), SPACE_MMIO)
        for at in range(0, len(fill), 8)
    ]
    writes = [Op("w", w.address, w.width, w.value, w.base.space) for w in chosen[0].writes]
    return [*setup, *memory, *writes]


def events_of(case: Case, fill_seed: int, tmp_path: Path) -> Counter[str]:
    """The trace events QEMU fires for the recipe on a scratch memory of ``fill_seed``; asserts it ran every op."""
    log = tmp_path / f"trace-{fill_seed:x}.log"
    firmware = write_halt_firmware(tmp_path / "halt.bin")
    trace = [arg for pattern in case.trace for arg in ("-trace", pattern)]
    args = ("-machine", "pc", "-m", "256", "-nodefaults", *case.device_args, *trace, "-D", str(log))
    ops = recipe_ops(case, fill_seed)
    outcome = run_qtest(QtestTarget(QEMU, args).running(firmware), ops, linger=2.0)
    seen = Counter(EVENT.findall(log.read_text(errors="replace")) if log.exists() else [])
    print(f"{case.recipe} seed {fill_seed:#x}: {outcome.signature.describe()}, events {sorted(seen)}")
    assert outcome.answered == outcome.ops, f"QEMU stopped at op {outcome.answered} of {outcome.ops}: {outcome}"
    refused = [event for event in case.refused if event in seen]
    assert not refused, f"{case.recipe}: the device refused a write of the recipe ({refused})"
    return seen


def lacking(case: Case, seen: Counter[str]) -> list[str]:
    missing = [event for event in case.expected if event not in seen]
    if case.any_of and not any(event in seen for event in case.any_of):
        missing.append(" or ".join(case.any_of))
    missing += [f"{event} x{times} (fired {seen[event]})" for event, times in case.repeated if seen[event] < times]
    return missing


@pytest.mark.parametrize("case", [c for c in CASES if not c.seeds_needed], ids=lambda c: c.recipe)
def test_recipe_reaches_its_deep_events(case: Case, tmp_path: Path) -> None:
    seen = events_of(case, case.fill_seed, tmp_path)
    missing = lacking(case, seen)
    assert not missing, f"{case.recipe}: QEMU's trace lacks {missing}; it has {sorted(seen)}"


@pytest.mark.parametrize("case", [c for c in CASES if c.seeds_needed], ids=lambda c: c.recipe)
def test_recipe_reaches_its_deep_events_on_most_fills(case: Case, tmp_path: Path) -> None:
    """No chosen seed: the layout makes most fills' first chains requests the device completes."""
    missing = {seed: lacking(case, events_of(case, seed, tmp_path)) for seed in FILL_SEEDS}
    reached = [seed for seed, lack in missing.items() if not lack]
    print(f"{case.recipe}: {len(reached)} of {len(FILL_SEEDS)} fills reach {case.expected} {case.any_of}")
    assert len(reached) >= case.seeds_needed, (
        f"{case.recipe}: only {len(reached)} of {len(FILL_SEEDS)} fill seeds reach the events; lacking: "
        + "; ".join(f"{seed:#x}: {lack}" for seed, lack in missing.items() if lack)
    )
