"""The virtio_blk_req layout, outside the fuzzer: what its recipes make virtio-blk do, from QEMU's own trace.

A bare QEMU under ``-qtest`` with the storage.virtio_blk row's own arguments
(read from the cfg through the test catalog), the PCI setup, the layout's fill
for one seed written to RAM and a recipe's writes (:func:`recipe_ops` of
:mod:`test_recipes_qtest`, the mapping a guided run uses). QEMU's trace says
what the device did with the queue; no counter of ours is read:

* ``virtio_blk_req_complete``'s status: requests completed OK, refused as an
  I/O error (sectors past the 64 MiB disk) and as unsupported (unknown types,
  two-segment discards, unknown flags) in one notify;
* ``virtio_blk_submit_multireq``'s ``num_reqs`` > 1: adjacent requests merged;
* ``bdrv_co_pwritev_part`` with the zero-write flag: a WRITE_ZEROES request
  reached the block layer; with FUA only in the writethrough recipe (the
  feature bits and the config-space cache byte took effect);
* ``virtqueue_pop`` at least 16 times: many heads per notify.

Each fill seed of eight must show them in most (not one chosen seed); the
generic virtio layout under the plain bring-up recipe, what blind's fills
carry, is the control: it shows the whole set in fewer seeds.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_recipes_qtest import CASES, EVENT, FILL_SEEDS, IO_BAR, QEMU, Case, bases_of, function_of
from test_storage_rows_qtest import at_slot, row_arguments

from avocado_iofuzz.guided.recipes import applicable, load
from avocado_iofuzz.model.dma import SCRATCH_BASE, scratch_fill
from avocado_iofuzz.model.dma_layouts import LAYOUT_VIRTIO_BLK_REQ
from avocado_iofuzz.model.pci import PciFunction
from avocado_iofuzz.model.program import SPACE_MMIO, Op
from avocado_iofuzz.repro.qtest import parse_script
from avocado_iofuzz.repro.qtest_ops import pci_setup_commands
from avocado_iofuzz.repro.qtest_run import QtestTarget, run_qtest, write_halt_firmware

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")

ROW = "iofuzz.quick.storage.virtio_blk"
CONTROLLER = "virtio-blk-pci"
TRACE = ("virtio_blk_*", "virtqueue_pop", "bdrv_co_pwritev_part")
STATUS_OK, STATUS_IOERR, STATUS_UNSUPP = 0, 1, 2
# QEMU 7.2's BdrvRequestFlags (include/block/block-common.h)
BDRV_REQ_ZERO_WRITE, BDRV_REQ_FUA = 0x2, 0x10
# virtio-blk's legacy I/O BAR: 0x14 bytes of registers and its 60-byte config, to a power of two; the
# recipes write the config's cache byte at 0x34 (test_recipes_qtest's functions have 0x20)
IO_BAR_SIZE = 0x80
HEADS_PER_NOTIFY = 16
SEEDS_NEEDED = 6
_STATUS = re.compile(r"virtio_blk_req_complete .*status (\d+)")
_MERGED = re.compile(r"virtio_blk_submit_multireq .*num_reqs (\d+)")
_WRITE_FLAGS = re.compile(r"bdrv_co_pwritev_part .*flags 0x([0-9a-f]+)")


@dataclass(frozen=True)
class Seen:
    statuses: frozenset[int]
    most_merged: int
    write_flags: frozenset[int]
    pops: int

    @classmethod
    def of(cls, log: str) -> Seen:
        events = Counter(EVENT.findall(log))
        return cls(
            frozenset(int(s) for s in _STATUS.findall(log)),
            max((int(n) for n in _MERGED.findall(log)), default=0),
            frozenset(int(f, 16) for f in _WRITE_FLAGS.findall(log)),
            events["virtqueue_pop"],
        )

    def zero_writes(self) -> bool:
        return any(flags & BDRV_REQ_ZERO_WRITE for flags in self.write_flags)

    def lacking(self) -> list[str]:
        """What of the deep set this queue did not reach."""
        lack = [f"status {s}" for s in (STATUS_OK, STATUS_IOERR, STATUS_UNSUPP) if s not in self.statuses]
        if self.most_merged < 2:
            lack.append("a merged multireq")
        if not self.zero_writes():
            lack.append("a zero write")
        if self.pops < HEADS_PER_NOTIFY:
            lack.append(f"{HEADS_PER_NOTIFY} pops (got {self.pops})")
        return lack


def blk_case(recipe: str, layout: str) -> Case:
    (like,) = [c for c in CASES if c.recipe == "virtio-legacy-queue0"]
    return dataclasses.replace(like, recipe=recipe, layout=layout)


def blk_function(case: Case) -> PciFunction:
    function = function_of(case)
    (bar,) = function.resources
    return dataclasses.replace(function, resources=(dataclasses.replace(bar, end=IO_BAR + IO_BAR_SIZE - 1),))


def recipe_ops(case: Case, fill_seed: int) -> list[Op]:
    """PCI setup, the layout's fill for ``fill_seed`` in RAM, then the recipe's writes as a guided run maps them."""
    function = blk_function(case)
    (chosen,) = [r for r in applicable(load(), [function], bases_of(function, case.layout)) if r.name == case.recipe]
    fill = scratch_fill(fill_seed, 0, case.layout)
    memory = [
        Op("w", SCRATCH_BASE + at, 8, int.from_bytes(fill[at : at + 8], "little"), SPACE_MMIO)
        for at in range(0, len(fill), 8)
    ]
    writes = [Op("w", w.address, w.width, w.value, w.base.space) for w in chosen.writes]
    return [*parse_script("\n".join(pci_setup_commands([function]))), *memory, *writes]


def traced(case: Case, seed: int, tmp: Path) -> Seen:
    tmp.mkdir(parents=True)
    log = tmp / "trace.log"
    firmware = write_halt_firmware(tmp / "halt.bin")
    patterns = [arg for pattern in TRACE for arg in ("-trace", pattern)]
    args = at_slot(row_arguments(ROW), CONTROLLER)
    argv = ("-machine", "pc", "-m", "256", "-nodefaults", *args, *patterns, "-D", str(log))
    ops = recipe_ops(case, seed)
    outcome = run_qtest(QtestTarget(QEMU, argv).running(firmware), ops, linger=2.0)
    assert outcome.answered == outcome.ops, f"QEMU stopped at op {outcome.answered} of {outcome.ops}: {outcome}"
    seen = Seen.of(log.read_text(errors="replace") if log.exists() else "")
    print(f"{case.recipe} seed {seed:#x}: {seen}")
    return seen


def test_the_request_layout_reaches_every_outcome_merges_and_zero_writes_on_most_fills(tmp_path: Path) -> None:
    case = blk_case("virtio-blk-requests", LAYOUT_VIRTIO_BLK_REQ)
    control = blk_case("virtio-legacy-queue0", CASES[0].layout)
    seen = {seed: traced(case, seed, tmp_path / f"req-{seed:x}") for seed in FILL_SEEDS}
    reached = [seed for seed, s in seen.items() if not s.lacking()]
    baseline = [seed for seed in FILL_SEEDS if not traced(control, seed, tmp_path / f"ctl-{seed:x}").lacking()]
    print(f"deep set in {len(reached)} of {len(FILL_SEEDS)} fills; the virtio layout's control in {len(baseline)}")
    assert len(reached) >= SEEDS_NEEDED, f"only {len(reached)} of {len(FILL_SEEDS)} fills reach the deep set: " + (
        "; ".join(f"{seed:#x} lacks {s.lacking()}" for seed, s in seen.items() if s.lacking())
    )
    assert len(baseline) < len(reached), f"the generic virtio layout reaches as much ({len(baseline)} fills)"


def test_the_writethrough_recipe_turns_the_cache_off_and_the_other_on(tmp_path: Path) -> None:
    """FUA on the writes only where the recipe left FLUSH out and wrote 0 to the config's cache byte."""
    seeds = FILL_SEEDS[:4]
    back = [traced(blk_case("virtio-blk-requests", LAYOUT_VIRTIO_BLK_REQ), s, tmp_path / f"wb-{s:x}") for s in seeds]
    through = [
        traced(blk_case("virtio-blk-requests-writethrough", LAYOUT_VIRTIO_BLK_REQ), s, tmp_path / f"wt-{s:x}")
        for s in seeds
    ]
    assert all(s.write_flags for s in back + through), "a fill wrote nothing: the comparison says nothing"
    fua_back = [s for s in back if any(f & BDRV_REQ_FUA for f in s.write_flags)]
    fua_through = [s for s in through if all(f & BDRV_REQ_FUA for f in s.write_flags)]
    assert not fua_back, f"writeback recipe: FUA writes in {len(fua_back)} of {len(seeds)} fills"
    assert len(fua_through) == len(seeds), f"writethrough recipe: FUA on every write in {len(fua_through)} fills"
