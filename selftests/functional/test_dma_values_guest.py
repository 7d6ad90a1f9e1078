"""DMA-aware values in a real guest: QEMU shows a device reading the scratch memory, and the memory is the seed's.

One busybox guest on ``pc`` with a ``piix3-usb-uhci``. UHCI is a DMA
controller programmed through 32 I/O ports: once its run bit is set it reads,
every millisecond, a link pointer from the frame list whose guest-physical
address the FLBASEADD register holds, and then the transfer descriptor (TD)
or queue head (QH) that pointer names. QEMU's own trace events
``usb_uhci_td_load`` / ``usb_uhci_qh_load`` print the address of every TD/QH
it loaded from guest memory: the observer outside the guest.

The same seed fuzzes the UHCI ports twice, with uniform values and with
DMA-aware values, in batches with idle pauses (see BATCHES). Only the values
differ. Measured once: uniform 1419 TD/QH loads, none from the scratch memory;
dma 11636, 14 of them at scratch addresses. A TD or QH address inside the
scratch memory can only come from a link pointer the device read from the
scratch memory's ring (the fill puts scratch addresses in it): it must show
up in the dma run, never in the uniform one.

Then the memory itself: the executor fills the scratch memory while it runs
a ``dma`` range on the harmless port 0x80; QEMU's ``pmemsave`` (QMP) dumps the
guest-physical bytes, which must be the model's fill for the range's last
epoch, byte for byte -- and again after a resumed run.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from avocado_iofuzz.campaign.guest_access import check_access
from avocado_iofuzz.executor.protocol import DEFAULT_BINARY, Done, NoScratch, executor_command, parse_line
from avocado_iofuzz.guest.build import default_guest
from avocado_iofuzz.model.dma import (
    SCRATCH_BASE,
    SCRATCH_EPOCH_OPS,
    SCRATCH_KERNEL_PARAM,
    SCRATCH_SIZE,
    VALUES_DMA,
    VALUES_UNIFORM,
    scratch_fill,
)
from avocado_iofuzz.model.program import SPACE_MMIO, Op, RangePlan
from avocado_iofuzz.repro.qtest_ops import qtest_commands
from avocado_iofuzz.vm.bare import BareQemu

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]

SEED = 0x5EED00DA
UHCI_ID = "0x7020"
PCI_COMMAND_MASTER = 0x4  # piix3-usb-uhci's PCI device ID (vendor 0x8086)
# Batches of ~8 k port writes, each followed by an idle pause. While the executor
# hammers the ports, QEMU's main loop hardly gets to run the UHCI's frame timer
# (a few dozen frames in a 2.4 M op run); in the pauses the controller runs
# its schedule from the registers the batch left behind. Each batch's fuzz
# count differs, so each ends in another state; the same in both modes.
FUZZ_COUNT = 1000
BATCHES = 80
IDLE_SECONDS = 0.1
LOAD = re.compile(r"usb_uhci_(td|qh)_load (?:qh 0x[0-9a-f]+, )?(?:td|qh) 0x([0-9a-f]+)")
RUN_TIMEOUT = 600


def in_scratch(address: int) -> bool:
    return SCRATCH_BASE <= address < SCRATCH_BASE + SCRATCH_SIZE


def run_executor(session, command: str) -> str:
    output = session.cmd_output(command, timeout=RUN_TIMEOUT)
    messages = [parse_line(line) for line in output.splitlines()]
    assert any(isinstance(m, Done) for m in messages), output[-2000:]
    return output


def uhci_function(session) -> tuple[str, int]:
    """The UHCI's sysfs name and I/O base (BAR 4)."""
    name = session.cmd_output(f"grep -l {UHCI_ID} /sys/bus/pci/devices/*/device").strip().split("/")[-2]
    bars = session.cmd_output(f"cat /sys/bus/pci/devices/{name}/resource").splitlines()
    return name, int(bars[4].split()[0], 16)


def command_register(session, name: str) -> int:
    """The function's PCI command register, as the guest reads it."""
    return int(session.cmd_output(f"od -An -tx2 -j4 -N2 /sys/bus/pci/devices/{name}/config").strip(), 16)


def pmemsave(vm: BareQemu, path: Path) -> bytes:
    vm.qmp("pmemsave", val=SCRATCH_BASE, size=SCRATCH_SIZE, filename=str(path))
    return path.read_bytes()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Iterator[dict[str, object]]:
    run_dir = tmp_path_factory.mktemp("dma-values")
    vm = BareQemu(
        default_guest(),
        run_dir / "vm",
        accel="tcg",
        extra_args=["-device", "piix3-usb-uhci"],
        trace_events=["usb_uhci_td_load", "usb_uhci_qh_load", "pci_cfg_write"],
    )
    result: dict[str, object] = {}
    with vm:
        session = vm.login(120)
        result["untouched"] = pmemsave(vm, run_dir / "untouched.bin")
        name, io_base = uhci_function(session)
        # no driver in the guest turned bus mastering on; the executor does for a dma range
        result["command_at_boot"] = command_register(session, name)
        trace_log = run_dir / "vm" / "qemu-trace.log"
        setup = RangePlan(0, io_base, io_base + 0x1F, "uhci", SEED, 0, 4, values=VALUES_DMA)
        run_executor(session, executor_command([setup]))
        result["command_after_dma"] = command_register(session, name)
        result["uhci"] = name
        offsets = {}
        for mode in ("uniform", VALUES_DMA):
            offsets[mode] = trace_log.stat().st_size if trace_log.exists() else 0
            for batch in range(BATCHES):
                plan = RangePlan(0, io_base, io_base + 0x1F, "uhci", SEED, FUZZ_COUNT + batch, 4, values=mode)
                run_executor(session, executor_command([plan], report_every=1 << 20) + f" && sleep {IDLE_SECONDS}")
        # the memory, seen by QEMU: a dma range on the POST port, which ignores what it is sent
        post = RangePlan(0, 0x80, 0x80, "post", SEED, SCRATCH_EPOCH_OPS + 100, 1, values=VALUES_DMA)
        run_executor(session, executor_command([post]))
        result["post"] = post
        result["after_run"] = pmemsave(vm, run_dir / "after-run.bin")
        run_executor(session, executor_command([post], resume=(0, 7)))
        result["after_resume"] = pmemsave(vm, run_dir / "after-resume.bin")
        # an in-guest replay writes a fill through the executor's --script, as qtest would
        fill = scratch_fill(post.range_seed, 0)
        words = [Op("w", SCRATCH_BASE + o, 8, int.from_bytes(fill[o : o + 8], "little"), SPACE_MMIO) for o in (0, 8)]
        words += [Op("w", SCRATCH_BASE + o, 8, int.from_bytes(fill[o : o + 8], "little"), SPACE_MMIO) for o in (16, 24)]
        lines = "\\n".join(line for op in words for line in qtest_commands(op))
        run_executor(session, f"printf '{lines}\\n' | {DEFAULT_BINARY} --script -")
        result["after_script"] = pmemsave(vm, run_dir / "after-script.bin")
        # ...but never into the kernel's own RAM
        result["kernel_ram"] = session.cmd_output(f"printf 'writeq 0x2000000 0x0\\n' | {DEFAULT_BINARY} --script -")
        # memory no memmap= entry reserved: the access check refuses it, naming what is missing
        command = executor_command([post], check=True)
        result["check"] = session.cmd_output(re.sub(r"--scratch \S+", "--scratch 0x8000000-0x8003fff", command))
    text = trace_log.read_text(errors="replace")
    result["setup_log"] = text[: offsets["uniform"]]
    result["uniform"] = text[offsets["uniform"] : offsets[VALUES_DMA]]
    result["dma"] = text[offsets[VALUES_DMA] :]
    yield result


def loads(log: str) -> list[int]:
    return [int(match[2], 16) for match in LOAD.finditer(log)]


def test_uhci_reads_descriptors_from_the_scratch_memory_only_with_dma_values(runs):
    uniform, dma_loads = loads(runs["uniform"]), loads(runs["dma"])
    from_scratch = [a for a in dma_loads if in_scratch(a)]
    print(
        f"uniform: {len(uniform)} TD/QH loads, none in scratch expected; dma: {len(dma_loads)}, "
        f"{len(from_scratch)} at scratch addresses"
    )
    assert not [a for a in uniform if in_scratch(a)]
    assert from_scratch, f"no TD/QH load from the scratch memory among {len(dma_loads)} loads"


def test_the_executor_turns_bus_mastering_on_for_a_dma_range(runs):
    assert not runs["command_at_boot"] & PCI_COMMAND_MASTER
    assert runs["command_after_dma"] == runs["command_at_boot"] | PCI_COMMAND_MASTER
    # QEMU saw the write: "pci_cfg_write piix3-usb-uhci 00:02.0 @0x4 <- 0x107"
    where = str(runs["uhci"]).split(":", 1)[1].replace(".", r"\.")
    pattern = rf"pci_cfg_write \S+ {where} @0x4 <- 0x([0-9a-f]+)"
    values = [int(value, 16) for value in re.findall(pattern, str(runs["setup_log"]))]
    assert values and values[-1] & PCI_COMMAND_MASTER, values


def test_scratch_memory_holds_the_seeds_fill_byte_for_byte(runs):
    post: RangePlan = runs["post"]  # type: ignore[assignment]
    last_epoch = (post.op_count - 1) // SCRATCH_EPOCH_OPS
    assert last_epoch == 1
    assert runs["untouched"] != scratch_fill(post.range_seed, last_epoch)
    assert runs["after_run"] == scratch_fill(post.range_seed, last_epoch)
    # a resumed run fills again where it resumes, then at the epoch boundary: the same bytes
    assert runs["after_resume"] == runs["after_run"]


def test_in_guest_replay_writes_the_scratch_memory_but_not_kernel_ram(runs):
    post: RangePlan = runs["post"]  # type: ignore[assignment]
    after = runs["after_script"]
    assert after[:32] == scratch_fill(post.range_seed, 0)[:32]  # the script's 4 words, where qtest writes them
    assert after[:32] != runs["after_resume"][:32]
    assert after[32:] == runs["after_resume"][32:]  # and nothing else
    assert "is the kernel's RAM (System RAM in /proc/iomem)" in str(runs["kernel_ram"])


def test_check_refuses_memory_the_kernel_was_not_told_to_leave_alone(runs):
    messages = [parse_line(line) for line in str(runs["check"]).splitlines()]
    refusals = [m for m in messages if isinstance(m, NoScratch)]
    assert refusals and "reserves no memory at 0x8000000-0x8003fff" in refusals[0].reason, runs["check"]
    assert "memmap=16K$0x8000000" in refusals[0].reason


def test_a_guest_without_the_reservation_falls_back_to_uniform_values(tmp_path, caplog):
    """A kernel booted without memmap=: the access check says why, the ranges run uniform, a forced +dma run stops."""
    guest = default_guest()
    plain = dataclasses.replace(guest, kernel_params=guest.kernel_params.replace(SCRATCH_KERNEL_PARAM, "").strip())
    assert SCRATCH_KERNEL_PARAM in guest.kernel_params and SCRATCH_KERNEL_PARAM not in plain.kernel_params
    post = RangePlan(0, 0x80, 0x80, "post", SEED, 10, 1, values=VALUES_DMA)
    with BareQemu(plain, tmp_path / "vm", accel="tcg") as vm:
        session = vm.login(120)
        with caplog.at_level(logging.WARNING):
            kept = check_access(session, [post], DEFAULT_BINARY)
        forced = session.cmd_output(executor_command([post]) + "; echo status=$?", timeout=RUN_TIMEOUT)
    assert [(p.start, p.values) for p in kept] == [(0x80, VALUES_UNIFORM)]
    assert "no scratch memory in this guest (the kernel command line reserves no memory at 0x7000000" in caplog.text
    assert "@ERR scratch memory of the +dma ranges: the kernel command line reserves no memory" in forced
    assert "status=3" in forced



def test_without_the_reservation_a_uniform_guided_run_gets_no_recipes_said_once(tmp_path, caplog):
    """The probe a uniform run asks the guest with (scratch_reserved) says no; recipes_for_run logs why, once."""
    from avocado_iofuzz.campaign.guest_access import read_listings, scratch_reserved
    from avocado_iofuzz.guided.batch import Base
    from avocado_iofuzz.guided.recipes import recipes_for_run
    from avocado_iofuzz.model.layout_choice import pci_functions
    from avocado_iofuzz.vt.iofuzz_params import read_kinds

    guest = default_guest()
    plain = dataclasses.replace(guest, kernel_params=guest.kernel_params.replace(SCRATCH_KERNEL_PARAM, "").strip())
    post = RangePlan(0, 0x80, 0x80, "post", SEED, 10, 1)  # uniform values: the plain check never asks for scratch
    with BareQemu(guest, tmp_path / "with", accel="tcg") as vm:
        session = vm.login(120)
        assert check_access(session, [post], DEFAULT_BINARY) == [post]
        assert scratch_reserved(session, [post], DEFAULT_BINARY) is True
    with BareQemu(plain, tmp_path / "without", accel="tcg") as vm:
        session = vm.login(120)
        functions = pci_functions(read_listings(session, read_kinds({"fuzz_kinds": "pio pci"})).pci)
        with caplog.at_level(logging.INFO):
            assert check_access(session, [post], DEFAULT_BINARY) == [post]  # the plain check does not notice
            scratch = scratch_reserved(session, [post], DEFAULT_BINARY)
            caplog.clear()
            recipes = recipes_for_run(True, functions, [Base.of(post)], scratch)
    assert scratch is False and recipes == []
    assert caplog.text.count("guided: no bring-up recipes") == 1
    assert "this guest has none" in caplog.text
