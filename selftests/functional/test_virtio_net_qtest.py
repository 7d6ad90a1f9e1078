"""The nic.virtio_net row past its transmit queue, seen from QEMU's trace; and its network reaches nothing outside.

The ``virtio-net-modern-*`` recipes bring the device up through the virtio
1.0 common configuration (memory BAR4) with three 16-entry queues in the
``virtio_net_modern`` layout. Each case runs a recipe on a bare QEMU under
``-qtest`` with the row's own arguments read from the cfg (user netdev with
restrict=on, rss=on), the layout fill of one seed written to RAM, then the
recipe's writes (the PCI setup and fill of :mod:`test_recipes_qtest`). QEMU's
trace must show the control queue handled (announce acknowledgements, RSS
configurations enabled or refused) and frames received into the guest's
buffers (a pop of a receive buffer: writable only, filled with a length) for
most of eight fill seeds, not one chosen seed.

The second test is the project's network rule: a frame the guest sends to an
address outside the user network (a UDP datagram to 192.0.2.1, TEST-NET-1)
opens no host socket in QEMU while restrict=on, where the same frame with
restrict=off does (the control: the check can fail). The observer is the
QEMU process's own file descriptors (/proc/PID/fd), counted before and after.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from test_recipes_qtest import EVENT, FILL_SEEDS, QEMU, SLOT, Case, recipe_ops
from test_storage_rows_qtest import at_slot, row_arguments

from avocado_iofuzz.model.dma import SCRATCH_BASE
from avocado_iofuzz.model.dma_layouts import LAYOUT_VIRTIO_NET_MODERN
from avocado_iofuzz.model.layouts.virtio_net import GUEST_IP, GUEST_MAC, NET_HDR
from avocado_iofuzz.repro.qtest_run import QtestTarget, run_qtest, write_halt_firmware

ROW = "iofuzz.quick.nic.virtio_net"
DEVICE = "virtio-net-pci"
TRACE = ("virtio_net_*", "virtqueue_*", "virtio_queue_notify")
# a pop of a receive buffer (writable only) that the device then fills: a frame received
RECEIVED = re.compile(r"virtqueue_pop vq (0x[0-9a-f]+) elem (0x[0-9a-f]+) in_num [1-9]\d* out_num 0\n"
                      r"(?:.*\n)*?.*virtqueue_fill vq \1 elem \2 len [1-9]")  # fmt: skip
CONTROL = ("virtio_net_handle_announce", "virtio_net_rss_enable", "virtio_net_rss_error")
SEEDS_NEEDED = 5


def net_case(recipe: str) -> Case:
    return Case(recipe, (), (0x1AF4, 0x1000, 0x020000), LAYOUT_VIRTIO_NET_MODERN, ((0, "io", False), (4, "mem", True)),
                TRACE, ())  # fmt: skip


def traced(recipe: str, seed: int, tmp: Path) -> tuple[Counter[str], bool]:
    log = tmp / f"{recipe}-{seed:x}.log"
    firmware = write_halt_firmware(tmp / "halt.bin")
    args = at_slot(row_arguments(ROW), DEVICE)
    patterns = [arg for pattern in TRACE for arg in ("-trace", pattern)]
    argv = ("-machine", "pc", "-m", "256", "-nodefaults", *args, *patterns, "-D", str(log))
    outcome = run_qtest(QtestTarget(QEMU, argv).running(firmware), recipe_ops(net_case(recipe), seed), linger=2.0)
    assert outcome.answered == outcome.ops, f"QEMU stopped at op {outcome.answered} of {outcome.ops}: {outcome}"
    text = log.read_text(errors="replace") if log.exists() else ""
    return Counter(EVENT.findall(text)), RECEIVED.search(text) is not None


@pytest.mark.parametrize("recipe", ["virtio-net-modern-ctrl", "virtio-net-modern-plain"])
def test_modern_recipes_reach_the_control_queue_and_receive(recipe: str, tmp_path: Path) -> None:
    results = {seed: traced(recipe, seed, tmp_path) for seed in FILL_SEEDS}
    control = [seed for seed, (seen, _) in results.items() if sum(seen[event] for event in CONTROL) >= 2]
    received = [seed for seed, (_, rx) in results.items() if rx]
    reached = set().union(*(seen for seen, _ in results.values()))
    print(f"{recipe}: control commands handled in {len(control)}, frames received in {len(received)} of "
          f"{len(FILL_SEEDS)} fills; events {sorted(reached)}")  # fmt: skip
    assert len(control) >= SEEDS_NEEDED, f"{recipe}: control queue events in {len(control)} fills only: {results}"
    assert "virtio_net_handle_announce" in reached and "virtio_net_rss_error" in reached
    if recipe == "virtio-net-modern-ctrl":  # RSS negotiated: configurations enabled, then replaced
        assert {"virtio_net_rss_enable", "virtio_net_rss_disable"} <= reached
    else:
        assert "virtio_net_rss_enable" not in reached, "RSS enabled without the feature negotiated"
    assert len(received) >= SEEDS_NEEDED // 2, f"{recipe}: frames received in {len(received)} fills only"


# --- nothing leaves ---------------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(destination: bytes, port: int) -> bytes:
    """An Ethernet frame with a UDP datagram from the guest to ``destination``:``port`` (no UDP checksum)."""
    payload = b"iofuzz must not leave"
    udp = (40000).to_bytes(2, "big") + port.to_bytes(2, "big") + (8 + len(payload)).to_bytes(2, "big") + bytes(2)
    ip = bytearray(b"\x45\x00" + (20 + len(udp) + len(payload)).to_bytes(2, "big") + bytes(4) + b"\x40\x11"
                   + bytes(2) + GUEST_IP + destination)  # fmt: skip
    ip[10:12] = _checksum(bytes(ip)).to_bytes(2, "big")
    gateway_mac = bytes((0x52, 0x55, 0x0A, 0x00, 0x02, 0x02))  # slirp's
    return gateway_mac + GUEST_MAC + b"\x08\x00" + bytes(ip) + udp + payload


def _sockets(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            continue
    return count


def _transmit_lines(frame: bytes, bar: int) -> list[str]:
    """qtest lines: a modern bring-up of the transmit queue alone, one chain with ``frame``."""
    queue, buffer = SCRATCH_BASE + 0x400, SCRATCH_BASE + 0x2000
    data = bytes(NET_HDR) + frame
    descriptor = buffer.to_bytes(8, "little") + len(data).to_bytes(4, "little") + bytes(4)
    avail = bytes(2) + (1).to_bytes(2, "little") + bytes(2)
    lines = [f"outl 0xcf8 {0x80000000 | SLOT << 11 | 0x20:#x}", f"outl 0xcfc {bar:#x}",
             f"outl 0xcf8 {0x80000000 | SLOT << 11 | 0x24:#x}", "outl 0xcfc 0x0",
             f"outl 0xcf8 {0x80000000 | SLOT << 11 | 0x04:#x}", "outw 0xcfc 0x6",
             f"write {queue:#x} {len(descriptor)} 0x{descriptor.hex()}",
             f"write {queue + 0x100:#x} {len(avail)} 0x{avail.hex()}",
             f"write {buffer:#x} {len(data)} 0x{data.hex()}"]  # fmt: skip
    for offset, width, value in ((0x14, 1, 0), (0x14, 1, 1), (0x14, 1, 3), (0x08, 4, 1), (0x0C, 4, 1),
                                 (0x14, 1, 0xB), (0x16, 2, 1), (0x18, 2, 16), (0x20, 4, queue), (0x24, 4, 0),
                                 (0x28, 4, queue + 0x100), (0x2C, 4, 0), (0x30, 4, queue + 0x200), (0x34, 4, 0),
                                 (0x1C, 2, 1), (0x14, 1, 0xF), (0x3004, 2, 1)):  # fmt: skip
        lines.append(f"write{'bwl'[width // 2]} {bar + offset:#x} {value:#x}")
    return lines


def sockets_opened_by_a_frame(netdev: str, destination: bytes, tmp: Path) -> int:
    """How many sockets QEMU has more after the guest sent one UDP frame to ``destination`` (port 9)."""
    firmware = write_halt_firmware(tmp / "halt.bin")
    bar = 0xFEB00000
    argv = [QEMU, "-bios", str(firmware), "-display", "none", "-machine", "pc", "-m", "256", "-nodefaults",
            "-netdev", netdev, "-device", f"{DEVICE},romfile=,netdev=iofuzz-vnet,addr={SLOT}",
            "-qtest", "stdio", "-qtest-log", "/dev/null"]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        time.sleep(0.5)
        before = _sockets(proc.pid)
        for line in _transmit_lines(udp_frame(destination, 9), bar):
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            answer = proc.stdout.readline()  # qtest answers each line; a dead QEMU answers ""
            assert answer.startswith("OK"), f"qtest line {line!r}: {answer!r}"
        time.sleep(1.0)  # the transmit bottom half and slirp's main-loop work
        return _sockets(proc.pid) - before
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_the_rows_network_sends_nothing_outside(tmp_path: Path) -> None:
    (netdev,) = [arg for arg in row_arguments(ROW) if arg.startswith("user,")]
    assert "restrict=on" in netdev.split(",") and "fwd" not in netdev, f"the row's netdev: {netdev}"
    outside = bytes((192, 0, 2, 1))
    control = sockets_opened_by_a_frame(netdev.replace("restrict=on", "restrict=off"), outside, tmp_path)
    assert control >= 1, "with restrict=off the frame opened no host socket: this check could not fail"
    assert sockets_opened_by_a_frame(netdev, outside, tmp_path) == 0, "a frame to 192.0.2.1 opened a host socket"
