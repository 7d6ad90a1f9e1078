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
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from test_recipes_qtest import EVENT, FILL_SEEDS, QEMU, SLOT, Case, recipe_ops
from test_storage_rows_qtest import at_slot, row_arguments

from avocado_iofuzz.model.dma import SCRATCH_BASE
from avocado_iofuzz.model.dma_layouts import LAYOUT_VIRTIO_NET_MODERN
from avocado_iofuzz.model.layouts.virtio_net import GATEWAY_IP, GUEST_IP, GUEST_MAC, NET_HDR
from avocado_iofuzz.repro.qtest_run import QtestTarget, run_qtest, write_halt_firmware

ROW = "iofuzz.quick.nic.virtio_net"
DEVICE = "virtio-net-pci"
TRACE = ("virtio_net_*", "virtqueue_*", "virtio_queue_notify", "net_rx_pkt_*")
# a pop of a receive buffer (writable only) that the device then fills: a frame received
RECEIVED = re.compile(r"virtqueue_pop vq (0x[0-9a-f]+) elem (0x[0-9a-f]+) in_num [1-9]\d* out_num 0\n"
                      r"(?:.*\n)*?.*virtqueue_fill vq \1 elem \2 len [1-9]")  # fmt: skip
CONTROL = ("virtio_net_handle_announce", "virtio_net_rss_enable", "virtio_net_rss_error")
SEEDS_NEEDED = 5
# QEMU's RSS hash of a received IPv4 frame, by kind (hw/net/net_rx_pkt.c): an echo reply (ip4), a reset (ip4_tcp),
# a DHCP offer (ip4_udp); each ends in the hash itself
RSS_KINDS = ("net_rx_pkt_rss_ip4", "net_rx_pkt_rss_ip4_tcp", "net_rx_pkt_rss_ip4_udp")
RSS_HASH = "net_rx_pkt_rss_hash"


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


def test_rss_hashes_the_ipv4_replies_the_modern_recipe_receives(tmp_path: Path) -> None:
    """With RSS negotiated and configured by the last control command, QEMU hashes the replies slirp sends back."""
    seen = {seed: traced("virtio-net-modern-ctrl", seed, tmp_path)[0] for seed in FILL_SEEDS}
    hashed = [seed for seed, events in seen.items() if events[RSS_HASH] and any(events[k] for k in RSS_KINDS)]
    kinds = Counter(kind for events in seen.values() for kind in RSS_KINDS if events[kind])
    print(f"RSS hashes in {len(hashed)} of {len(FILL_SEEDS)} fills; fills per kind {dict(kinds)}; "
          f"hashes per fill {[seen[seed][RSS_HASH] for seed in FILL_SEEDS]}")  # fmt: skip
    assert len(hashed) >= SEEDS_NEEDED, f"RSS hashed received frames in {len(hashed)} fills only: {hashed}"
    assert len(kinds) >= 2, f"RSS hashed one kind of reply only: {dict(kinds)}"


def test_without_rss_negotiated_nothing_is_hashed(tmp_path: Path) -> None:
    """The control: the plain recipe's device receives the same replies and never hashes one."""
    seen = [traced("virtio-net-modern-plain", seed, tmp_path) for seed in FILL_SEEDS[:4]]
    assert any(received for _, received in seen), "no frame received: this control could not fail"
    assert not any(events[RSS_HASH] for events, _ in seen), [events for events, _ in seen]


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


def tcp_syn_frame(destination: bytes, port: int) -> bytes:
    """An Ethernet frame with a TCP SYN from the guest to ``destination``:``port``, its checksum right."""
    tcp = bytearray((40001).to_bytes(2, "big") + port.to_bytes(2, "big") + bytes(8) + b"\x50\x02\x10\x00" + bytes(4))
    pseudo = GUEST_IP + destination + b"\x00\x06" + len(tcp).to_bytes(2, "big")
    tcp[16:18] = _checksum(pseudo + bytes(tcp)).to_bytes(2, "big")
    ip = bytearray(b"\x45\x00" + (20 + len(tcp)).to_bytes(2, "big") + bytes(4) + b"\x40\x06" + bytes(2) + GUEST_IP
                   + destination)  # fmt: skip
    ip[10:12] = _checksum(bytes(ip)).to_bytes(2, "big")
    gateway_mac = bytes((0x52, 0x55, 0x0A, 0x00, 0x02, 0x02))
    return gateway_mac + GUEST_MAC + b"\x08\x00" + bytes(ip) + bytes(tcp)


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


def sockets_opened_by_a_frame(netdev: str, frame: bytes, tmp: Path, listener: socket.socket | None = None
                              ) -> tuple[int, bool]:  # fmt: skip
    """How many sockets QEMU has more after the guest sent ``frame``, and whether ``listener`` got a connection."""
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
        for line in _transmit_lines(frame, bar):
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            answer = proc.stdout.readline()  # qtest answers each line; a dead QEMU answers ""
            assert answer.startswith("OK"), f"qtest line {line!r}: {answer!r}"
        time.sleep(1.0)  # the transmit bottom half and slirp's main-loop work
        opened = _sockets(proc.pid) - before
        if listener is None:
            return opened, False
        listener.settimeout(0.5)
        try:
            listener.accept()[0].close()
        except TimeoutError:
            return opened, False
        return opened, True
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_the_rows_network_sends_nothing_outside(tmp_path: Path) -> None:
    (netdev,) = [arg for arg in row_arguments(ROW) if arg.startswith("user,")]
    assert "restrict=on" in netdev.split(",") and "fwd" not in netdev, f"the row's netdev: {netdev}"
    frame = udp_frame(bytes((192, 0, 2, 1)), 9)
    control, _ = sockets_opened_by_a_frame(netdev.replace("restrict=on", "restrict=off"), frame, tmp_path)
    assert control >= 1, "with restrict=off the frame opened no host socket: this check could not fail"
    assert sockets_opened_by_a_frame(netdev, frame, tmp_path)[0] == 0, "a frame to 192.0.2.1 opened a host socket"


def test_a_tcp_syn_to_the_gateway_connects_to_nothing(tmp_path: Path) -> None:
    """The layout's TCP segments go to 10.0.2.2, which slirp maps to the host's loopback: under restrict=on a SYN
    there reaches no host listener (slirp answers a reset itself), where with restrict=off it connects."""
    (netdev,) = [arg for arg in row_arguments(ROW) if arg.startswith("user,")]
    with socket.create_server(("127.0.0.1", 0)) as listener:
        frame = tcp_syn_frame(GATEWAY_IP, listener.getsockname()[1])
        _, connected = sockets_opened_by_a_frame(netdev.replace("restrict=on", "restrict=off"), frame, tmp_path,
                                                 listener)  # fmt: skip
        assert connected, "with restrict=off the SYN reached no listener: this check could not fail"
        opened, connected = sockets_opened_by_a_frame(netdev, frame, tmp_path, listener)
        assert not connected and opened == 0, f"restrict=on: the SYN connected ({connected}), {opened} sockets"
