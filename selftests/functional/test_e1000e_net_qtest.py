"""The nic.e1000e row's user network, seen from outside: slirp answers inside QEMU, the NIC receives, nothing leaves.

Two observers that are not ours: QEMU's trace (``-trace e1000e_*``) and
QEMU's own packet capture of the NIC's network (``-object filter-dump`` on the
row's netdev, a pcap of every frame the NIC sent and received), plus, for
restrict=on, a host socket on 127.0.0.1 that slirp would reach if it let the
guest out (slirp sends what the guest addresses to the gateway 10.0.2.2 to the
host's loopback).

* The e1000e_net recipes, run on a bare QEMU under ``-qtest`` with the row's
  own arguments (read from cfg/devices.cfg through the test catalog), fill
  the receive ring with slirp's replies (``e1000e_rx_*``: descriptors read and
  written back, null descriptors, RSS) for most of eight fill seeds, and the
  capture shows the transmit offloads: TCP segments with a checksum the
  layout left zero, and TSO segments at sequence numbers no frame of the
  layout carries.
* restrict=on: a TCP SYN and a UDP datagram to 10.0.2.2:PORT reach nothing
  listening on 127.0.0.1:PORT, while ARP and ICMP echo for 10.0.2.2 are
  answered; the same frames with restrict=off do reach the listener, so the
  observer can see a leak when there is one.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_recipes_qtest import EVENT, MEM_BAR, QEMU, SLOT, Case, function_of, recipe_ops

from avocado_iofuzz.model.dma import SCRATCH_BASE
from avocado_iofuzz.model.dma_layouts import LAYOUT_E1000E_NET
from avocado_iofuzz.model.layouts import e1000e_net as net
from avocado_iofuzz.model.layouts.frames import SLIRP_MAC
from avocado_iofuzz.model.program import SPACE_MMIO, Op
from avocado_iofuzz.repro.qtest import parse_script
from avocado_iofuzz.repro.qtest_ops import pci_setup_commands
from avocado_iofuzz.repro.qtest_run import QtestTarget, run_qtest, write_halt_firmware
from avocado_iofuzz.vt.catalog import TestCatalog

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")

ROW = "iofuzz.quick.nic.e1000e"
FILL_SEEDS = tuple(range(0x5EED0000, 0x5EED0008))
SEEDS_NEEDED = 6  # of eight: a fill whose frames are mostly random (one slot in eight is) may answer less
RECEIVED = ("e1000e_rx_descr", "e1000e_rx_desc_buff_write", "e1000e_rx_written_to_guest", "e1000e_rx_receive_iov")


@dataclass(frozen=True)
class NetCase:
    recipe: str
    reached: tuple[str, ...]  # beyond RECEIVED


NET_CASES = (
    NetCase("e1000e-net-legacy", ("e1000e_rx_null_descriptor", "e1000x_vlan_is_vlan_pkt")),
    NetCase("e1000e-net-extended-rss", ("e1000e_rx_rss_type", "e1000e_rx_metadata_rss", "e1000e_rx_set_rfctl")),
)


def row_arguments() -> list[str]:
    (params,) = TestCatalog().variants(ROW)
    return shlex.split(params["extra_params"])


def netdev_id(args: list[str]) -> str:
    (netdev,) = [word for i, word in enumerate(args) if i and args[i - 1] == "-netdev"]
    kind, *options = netdev.split(",")
    assert kind == "user" and "restrict=on" in options, f"the row's netdev is not a restricted user network: {netdev}"
    assert not [o for o in options if o.startswith(("hostfwd", "guestfwd"))], f"the row's netdev forwards: {netdev}"
    return next(o.split("=", 1)[1] for o in options if o.startswith("id="))


def placed(args: list[str], restrict: str = "on") -> list[str]:
    """The row's arguments with the e1000e at the slot the PCI setup gives BARs, restrict= as asked."""
    out = []
    for i, word in enumerate(args):
        if i and args[i - 1] == "-device" and word.split(",")[0] == "e1000e":
            word = f"{word},addr={SLOT}"
        if i and args[i - 1] == "-netdev":
            word = word.replace("restrict=on", f"restrict={restrict}")
        out.append(word)
    assert out != args, f"the row's arguments have no -device e1000e: {args}"
    return out


def frames_of(pcap: Path) -> list[bytes]:
    """The frames of a pcap file (QEMU's filter-dump writes the classic format, microsecond stamps)."""
    data = pcap.read_bytes() if pcap.exists() else b""
    if len(data) < 24:
        return []
    assert struct.unpack_from("<I", data)[0] == 0xA1B2C3D4, f"{pcap} is not a little-endian pcap"
    frames, at = [], 24
    while at + 16 <= len(data):
        length = struct.unpack_from("<I", data, at + 8)[0]
        frames.append(data[at + 16 : at + 16 + length])
        at += 16 + length
    return frames


def run(args: list[str], ops: list[Op], tmp: Path) -> tuple[Counter[str], list[bytes]]:
    tmp.mkdir()
    log, pcap = tmp / "trace.log", tmp / "net.pcap"
    dump = ["-object", f"filter-dump,id=iofuzz-dump,netdev={netdev_id(row_arguments())},file={pcap}"]
    argv = ("-machine", "pc", "-m", "256", "-nodefaults", *args, *dump, "-trace", "e1000*", "-D", str(log))
    outcome = run_qtest(QtestTarget(QEMU, argv).running(write_halt_firmware(tmp / "halt.bin")), ops, linger=2.0)
    assert outcome.answered == outcome.ops, f"QEMU stopped at op {outcome.answered} of {outcome.ops}: {outcome}"
    events = Counter(EVENT.findall(log.read_text(errors="replace")) if log.exists() else [])
    return events, frames_of(pcap)


def net_case(recipe: str) -> Case:
    bars = ((0, "mem", False), (2, "io", False))  # BAR2: IOADDR/IODATA reach the registers above 16 KiB
    return Case(recipe, (), (0x8086, 0x10D3, 0x020000), LAYOUT_E1000E_NET, bars, (), ())


def ipv4(frame: bytes) -> bytes | None:
    """The IPv4 packet of an untagged Ethernet frame (None for anything else)."""
    return frame[net.ETH :] if len(frame) > net.ETH + net.IPV4 and frame[12:14] == b"\x08\x00" else None


def tcp_checksum_right(packet: bytes) -> bool:
    header = (packet[0] & 15) * 4
    total = int.from_bytes(packet[2:4], "big")
    segment = packet[header:total]
    pseudo = packet[12:20] + bytes((0, 6)) + len(segment).to_bytes(2, "big")
    return net.checksum(pseudo + segment) == 0


def offloads(frames: list[bytes], seed: int) -> tuple[int, int]:
    """(TCP segments to 10.0.2.2 with a right checksum, those at a sequence number no layout frame has)."""
    sent = net.slot_frame(net.TCP, 11, seed)
    layout_sequence = sent[38:42] if sent else None
    summed = segmented = 0
    for frame in frames:
        packet = ipv4(frame)
        if packet is None or packet[9] != 6 or packet[16:20] != net.GATEWAY_IP or frame[6:12] != net.GUEST_MAC:
            continue
        summed += tcp_checksum_right(packet)
        segmented += packet[24:28] != layout_sequence
    return summed, segmented


@pytest.mark.parametrize("net_case_", NET_CASES, ids=[c.recipe for c in NET_CASES])
def test_recipe_receives_slirps_replies(net_case_: NetCase, tmp_path: Path) -> None:
    args = placed(row_arguments())
    case = net_case(net_case_.recipe)
    reached, offloaded, answered = [], [], []
    for seed in FILL_SEEDS:
        events, frames = run(args, recipe_ops(case, seed), tmp_path / f"{seed:x}")
        missing = [e for e in (*RECEIVED, *net_case_.reached) if e not in events]
        summed, segmented = offloads(frames, seed)
        replies = sum(frame[6:12] == SLIRP_MAC for frame in frames)
        print(f"{net_case_.recipe} seed {seed:#x}: received {events['e1000e_rx_written_to_guest']}, "
              f"slirp's frames {replies}, TCP summed {summed}, segmented {segmented}, missing {missing}")  # fmt: skip
        reached.append(not missing)
        offloaded.append(summed > 0 and segmented > 0)
        answered.append(replies > 0)
    assert sum(answered) >= SEEDS_NEEDED, f"slirp answered in {sum(answered)} of {len(FILL_SEEDS)} fills"
    assert sum(reached) >= SEEDS_NEEDED, f"receive events in {sum(reached)} of {len(FILL_SEEDS)} fills"
    assert sum(offloaded) >= SEEDS_NEEDED, f"checksum offload and TSO in {sum(offloaded)} of {len(FILL_SEEDS)}"


# --- restrict=on: nothing reaches the host ------------------------------------------------------

TX_FRAMES = SCRATCH_BASE + 0x2000
GATEWAY = net.GATEWAY_IP
GUEST_PORT = 40000


def tcp_syn(port: int) -> bytes:
    tcp = bytearray(GUEST_PORT.to_bytes(2, "big") + port.to_bytes(2, "big") + bytes(8) + bytes((0x50, 0x02, 0x40, 0)))
    tcp += bytes(4)
    pseudo = net.GUEST_IP + net.GATEWAY_IP + bytes((0, 6)) + len(tcp).to_bytes(2, "big")
    tcp[16:18] = net.checksum(pseudo + tcp).to_bytes(2, "big")
    return ip_frame(6, bytes(tcp))


def udp_datagram(port: int, payload: bytes) -> bytes:
    udp = GUEST_PORT.to_bytes(2, "big") + port.to_bytes(2, "big") + (8 + len(payload)).to_bytes(2, "big") + bytes(2)
    return ip_frame(17, udp + payload)


def ip_frame(protocol: int, payload: bytes) -> bytes:
    frame = bytearray(SLIRP_MAC + net.GUEST_MAC + b"\x08\x00" + bytes(net.IPV4) + payload)
    header = bytearray(bytes((0x45, 0)) + (net.IPV4 + len(payload)).to_bytes(2, "big") + bytes((0, 1, 0, 0, 64)))
    header += bytes((protocol, 0, 0)) + net.GUEST_IP + net.GATEWAY_IP
    header[10:12] = net.checksum(header).to_bytes(2, "big")
    frame[net.ETH : net.ETH + net.IPV4] = header
    return bytes(frame)


def transmit_ops(frames: list[bytes]) -> list[Op]:
    """PCI setup, the frames and one legacy descriptor each in guest memory, then the e1000e told to send them."""
    function = function_of(net_case("e1000e-net-legacy"))
    ops = parse_script("\n".join(pci_setup_commands([function])))
    memory = bytearray()
    descriptors = bytearray()
    for frame in frames:
        address = TX_FRAMES + len(memory)
        descriptors += struct.pack("<QII", address, len(frame) | 0x0B << 24, 0)  # EOP | IFCS | RS
        memory += frame + bytes(-len(frame) % 16)
    ops += [Op("w", TX_FRAMES + at, 1, byte, SPACE_MMIO) for at, byte in enumerate(memory)]
    ops += [Op("w", SCRATCH_BASE + at, 1, byte, SPACE_MMIO) for at, byte in enumerate(descriptors)]
    registers = ((0x0000, 0x04000000), (0x0000, 0x40), (0x3800, SCRATCH_BASE), (0x3804, 0), (0x3808, 0x1000),
                 (0x3810, 0), (0x3818, 0), (0x0400, 0x0A), (0x3818, len(frames)))  # fmt: skip
    return ops + [Op("w", MEM_BAR + at, 4, value, SPACE_MMIO) for at, value in registers]


def listen() -> tuple[socket.socket, socket.socket, int]:
    """A TCP listener and a UDP socket on one free port of 127.0.0.1."""
    stream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stream.bind(("127.0.0.1", 0))
    port = stream.getsockname()[1]
    stream.listen(4)
    datagram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    datagram.bind(("127.0.0.1", port))
    return stream, datagram, port


def host_saw(stream: socket.socket, datagram: socket.socket) -> list[str]:
    """What reached the host's sockets (waits at most a second for each)."""
    seen = []
    stream.settimeout(1.0)
    datagram.settimeout(1.0)
    try:
        connection, peer = stream.accept()
        connection.close()
        seen.append(f"a TCP connection from {peer}")
    except TimeoutError:
        pass
    try:
        data, peer = datagram.recvfrom(2048)
        seen.append(f"a datagram {data!r} from {peer}")
    except TimeoutError:
        pass
    return seen


@pytest.mark.parametrize("restrict", ["on", "off"])
def test_restricted_user_network_answers_inside_and_lets_nothing_out(restrict: str, tmp_path: Path) -> None:
    stream, datagram, port = listen()
    try:
        arp, icmp = net.arp_request(1), net.icmp_echo(0x1234_5678_9ABC_DE00)  # both for 10.0.2.2
        frames = [arp, icmp, tcp_syn(port), udp_datagram(port, b"iofuzz"), tcp_syn(port)]
        _, captured = run(placed(row_arguments(), restrict), transmit_ops(frames), tmp_path / "qemu")
        seen = host_saw(stream, datagram)
    finally:
        stream.close()
        datagram.close()
    from_slirp = [ipv4(frame) for frame in captured if frame[6:12] == SLIRP_MAC]
    arp_replies = [f for f in captured if f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02" and f[28:32] == GATEWAY]
    echo_replies = [p for p in from_slirp if p and p[9] == 1 and p[net.IPV4] == 0]
    print(f"restrict={restrict}: captured {len(captured)} frames, ARP replies {len(arp_replies)}, "
          f"echo replies {len(echo_replies)}, the host saw {seen or 'nothing'}")  # fmt: skip
    assert sum(frame[6:12] == net.GUEST_MAC for frame in captured) == len(frames), "the NIC did not send every frame"
    assert arp_replies and echo_replies, "slirp did not answer ARP and ICMP echo for 10.0.2.2"
    if restrict == "on":
        assert not seen, f"restrict=on let the guest reach the host: {seen}"
    else:  # the observer sees a leak when there is one
        assert len(seen) == 2, f"restrict=off: the host saw {seen}, expected a connection and a datagram"


def test_the_row_has_a_restricted_network_and_no_forward() -> None:
    args = row_arguments()
    (device,) = [word for i, word in enumerate(args) if i and args[i - 1] == "-device"]
    assert f"netdev={netdev_id(args)}" in device.split(","), f"the e1000e is not on the row's netdev: {device}"


def test_net_cases_name_the_layouts_recipes() -> None:
    from avocado_iofuzz.guided.recipes import load

    assert {c.recipe for c in NET_CASES} == {r.name for r in load() if r.layout == LAYOUT_E1000E_NET}
