"""Device layouts, seen from outside: QEMU's own trace shows USB controllers going past their first check.

Two busybox guests on ``pc``, booted alike: a ``piix3-usb-uhci`` with a USB
keyboard on its bus and an ``ich9-usb-ehci1`` with a USB stick (``usb-storage``
on a ``null-co`` drive: a high-speed device, the only kind an EHCI port
enables). In both, the same ``dma`` ranges with the same seed and pacing run
over the UHCI's I/O ports and the EHCI's operational registers; only the
scratch layout differs: ``generic`` in one guest, the device's own
(``uhci``, ``ehci``) in the other. The observer is QEMU: its trace events
(``-trace usb_*``) and, when it dies, its exit status and stderr.

First, QEMU's ``pmemsave`` of the scratch memory after a run of each device
layout must be the model's fill, byte for byte.

What must hold, counted from QEMU's trace file:

* UHCI: with the generic layout the controller loads TDs but never starts a
  USB packet (``usb_uhci_packet_add``, ``usb_packet_state_change``): a random
  TD is inactive or has an invalid PID. With the uhci layout it does.
* EHCI: with the ehci layout the controller fetches qTDs from the scratch
  memory (``usb_ehci_qtd_*`` naming a qTD in it) and acts on packets
  (``usb_ehci_packet_action``), many times more than with the generic one.
  The ehci layout can also take QEMU 7.2 down: a SETUP qTD to a non-zero
  endpoint trips ``usb_ep_get``'s assertion (QEMU's own stderr; it dies of SIGABRT).
  When it does, the run is cut short and the test checks the cause instead:
  the last qTD QEMU fetched is an active SETUP from the scratch memory, and
  QEMU's stderr holds the assertion.

Measured once (46 s for the module under load): UHCI generic 5946 TD loads,
no packet; uhci layout 5908 TD loads, 27 packets added, 52 packet state
changes, 2 completed successfully, 9 event names generic never fired. EHCI:
qTDs fetched from the scratch memory 9 (generic) against 133, packet actions
2 against 74, ``usb_packet_state_change`` 0 against 46. An exploratory run
with the EHCI range at 1 ms every 256 ops hit the assertion above, and so did 3 of the
4 runs of this module (the same seed under qtest, no guest, aborts at op 330233).
"""

from __future__ import annotations

import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from avocado_iofuzz.executor.protocol import Done, executor_command, parse_line
from avocado_iofuzz.guest.build import default_guest
from avocado_iofuzz.model.dma import SCRATCH_BASE, SCRATCH_SIZE, VALUES_DMA, scratch_fill
from avocado_iofuzz.model.dma_layouts import LAYOUT_EHCI, LAYOUT_GENERIC, LAYOUT_UHCI, LAYOUTS
from avocado_iofuzz.model.program import SPACE_MMIO, RangePlan
from avocado_iofuzz.vm.bare import BareQemu

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]

SEED = 0x5EED00DA
UHCI_ID, EHCI_ID = "0x7020", "0x293a"
DEVICES = [
    "-device", "piix3-usb-uhci,id=uhci", "-device", "usb-kbd,bus=uhci.0",
    "-drive", "if=none,id=stick,driver=null-co", "-device", "ich9-usb-ehci1,id=ehci",
    "-device", "usb-storage,bus=ehci.0,drive=stick",
]  # fmt: skip
TRACE_EVENTS = ["usb_uhci_*", "usb_ehci_*", "usb_packet_*"]
# Pacing: the frame timers (UHCI 1 ms, EHCI's schedules) run only while the
# executor sleeps; 1 ms every 64 ops gives them ~5 k frames per run.
PAUSE_EVERY, PAUSE_US = 64, 1000
UHCI_FUZZ_COUNT = 40_000  # x 8 four-byte slots of the 32 ports
EHCI_FUZZ_COUNT = 10_000  # x 24 slots: USBCMD..CONFIGFLAG, PORTSC 1-2 of the operational registers
RUN_TIMEOUT = 900
TRACE_CATCH_UP = 1.0  # seconds for QEMU's trace file to take the run's last events
EVENT = re.compile(r"^(?:\d+@\d+\.\d+:)?((?:usb)_[a-z0-9_]+) ", re.M)
QTD_AT = re.compile(r"usb_ehci_qtd_ptrs .*QTD @ 0x([0-9a-f]+)")
# a qTD's address, PID (2: SETUP) and active bit, from its _fields and _bits events
LAST_QTD = re.compile(r"usb_ehci_qtd_fields QTD @ 0x([0-9a-f]+) .*pid (\d+)\n.*usb_ehci_qtd_bits .*active (\d)")


def io_and_memory_bases(session, device_id: str) -> list[int]:
    name = session.cmd_output(f"grep -l {device_id} /sys/bus/pci/devices/*/device").strip().split("/")[-2]
    lines = session.cmd_output(f"cat /sys/bus/pci/devices/{name}/resource").splitlines()
    return [int(line.split()[0], 16) for line in lines[:6]]


def run_layouts(run_dir: Path, uhci_layout: str, ehci_layout: str, dump_layouts: bool) -> dict[str, object]:
    """One guest: the UHCI range, then the EHCI range; each one's slice of QEMU's trace, and how QEMU ended.

    ``dump_layouts``: first, per layout, a ``dma`` range on the POST port 0x80 (which ignores what it is
    sent) and QEMU's ``pmemsave`` of the scratch memory after it.
    """
    vm = BareQemu(default_guest(), run_dir, accel="tcg", extra_args=DEVICES, trace_events=TRACE_EVENTS)
    result: dict[str, object] = {}
    with vm:
        session = vm.login(180)
        for layout in LAYOUTS[1:] if dump_layouts else ():
            post = RangePlan(0, 0x80, 0x80, "post", SEED, 100, 1, values=VALUES_DMA, layout=layout)
            output = session.cmd_output(executor_command([post]), timeout=RUN_TIMEOUT)
            assert any(isinstance(parse_line(line), Done) for line in output.splitlines()), output[-2000:]
            dump = run_dir / f"scratch-{layout}.bin"
            vm.qmp("pmemsave", val=SCRATCH_BASE, size=SCRATCH_SIZE, filename=str(dump))
            result[f"memory_{layout}"] = (dump.read_bytes(), scratch_fill(post.range_seed, 0, layout))
        uhci, ehci = io_and_memory_bases(session, UHCI_ID), io_and_memory_bases(session, EHCI_ID)
        plans = {
            "uhci": RangePlan(
                0, uhci[4], uhci[4] + 0x1F, "uhci", SEED, UHCI_FUZZ_COUNT, 4, values=VALUES_DMA, layout=uhci_layout,
                pause_every=PAUSE_EVERY, pause_us=PAUSE_US,
            ),
            "ehci": RangePlan(
                1, ehci[0] + 0x20, ehci[0] + 0x77, "ehci", SEED, EHCI_FUZZ_COUNT, 4, SPACE_MMIO, values=VALUES_DMA,
                layout=ehci_layout, pause_every=PAUSE_EVERY, pause_us=PAUSE_US,
            ),
        }  # fmt: skip
        log = vm.trace_log_path
        for name, plan in plans.items():
            start = log.stat().st_size if log.exists() else 0
            try:
                output = session.cmd_output(executor_command([plan], report_every=1 << 20), timeout=RUN_TIMEOUT)
                result[f"{name}_done"] = any(isinstance(parse_line(line), Done) for line in output.splitlines())
            except Exception as err:  # QEMU gone (its status below) or the console lost: the trace still tells
                result[f"{name}_done"] = False
                result[f"{name}_error"] = repr(err)
            time.sleep(TRACE_CATCH_UP)
            with log.open("rb") as f:
                f.seek(start)
                result[name] = f.read().decode(errors="replace")
            if not vm.is_alive():
                break
        result["alive"] = vm.is_alive()
    result["stderr"] = (run_dir / "qemu-stderr.log").read_text(errors="replace")
    result["exit"] = vm.exit_info()
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Iterator[dict[str, dict[str, object]]]:
    base = tmp_path_factory.mktemp("dma-layouts")
    yield {
        LAYOUT_GENERIC: run_layouts(base / "generic", LAYOUT_GENERIC, LAYOUT_GENERIC, dump_layouts=False),
        "device": run_layouts(base / "device", LAYOUT_UHCI, LAYOUT_EHCI, dump_layouts=True),
    }


def events(log: object) -> Counter[str]:
    return Counter(EVENT.findall(str(log)))


def qtds_in_scratch(log: object) -> list[int]:
    addresses = (int(address, 16) for address in QTD_AT.findall(str(log)))
    return [a for a in addresses if SCRATCH_BASE <= a < SCRATCH_BASE + SCRATCH_SIZE]


def test_uhci_starts_usb_packets_only_with_its_own_layout(runs):
    generic, device = events(runs[LAYOUT_GENERIC]["uhci"]), events(runs["device"]["uhci"])
    print(f"generic: {dict(generic)}\nuhci layout: {dict(device)}")
    assert runs[LAYOUT_GENERIC]["uhci_done"] and runs["device"]["uhci_done"]
    assert generic["usb_uhci_td_load"] > 0  # the generic fill is walked...
    deep = ("usb_uhci_packet_add", "usb_packet_state_change", "usb_uhci_queue_add")
    assert not any(generic[name] for name in deep)  # ...but no TD in it starts a packet
    assert all(device[name] > 0 for name in deep), dict(device)
    reached = {name for name in device if name.startswith("usb_")} - set(generic)
    assert len(reached) >= 4, reached


def test_ehci_fetches_qtds_from_the_scratch_memory_and_acts_on_packets_with_its_own_layout(runs):
    generic, device = runs[LAYOUT_GENERIC]["ehci"], runs["device"]["ehci"]
    in_scratch, generic_in_scratch = qtds_in_scratch(device), qtds_in_scratch(generic)
    counts_generic, counts_device = events(generic), events(device)
    print(f"generic: {dict(counts_generic)}\nehci layout: {dict(counts_device)}")
    print(f"qTDs fetched from the scratch memory: generic {len(generic_in_scratch)}, ehci layout {len(in_scratch)}")
    print(f"QEMU alive after the ehci layout: {runs['device']['alive']}, exit {runs['device']['exit']}")
    assert runs[LAYOUT_GENERIC]["alive"] and runs[LAYOUT_GENERIC]["ehci_done"]
    if runs["device"]["alive"]:
        assert runs["device"]["ehci_done"]
        assert len(in_scratch) > 10 * max(1, len(generic_in_scratch))
        assert counts_device["usb_ehci_packet_action"] > 10 * max(1, counts_generic["usb_ehci_packet_action"])
    else:
        # Cut short by the finding: the last qTD QEMU fetched is an active SETUP from the scratch memory,
        # then the assertion -- QEMU's own stderr; dead of anything else fails here.
        assert "usb_ep_get: Assertion" in str(runs["device"]["stderr"]), str(runs["device"]["stderr"])[-2000:]
        last_qtd = LAST_QTD.findall(str(device))[-1]
        assert in_scratch and in_scratch[-1] == int(last_qtd[0], 16) and last_qtd[1:] == ("2", "1"), last_qtd


@pytest.mark.parametrize("layout", LAYOUTS[1:])
def test_guest_memory_holds_each_layouts_fill_byte_for_byte(runs, layout):
    in_guest, model = runs["device"][f"memory_{layout}"]  # type: ignore[misc]
    assert len(in_guest) == SCRATCH_SIZE
    assert in_guest == model
