"""The ``e1000e_net`` scratch layout: transmit frames QEMU's user network answers, and a receive ring for the replies.

Only the e1000e recipes name it (``recipes.toml``); blind's layout choice
never does. The e1000 layout's frames are random bytes, which a NIC sends
and nobody answers, so the receive path never runs. Here the frames are the
ones slirp (``-netdev user,restrict=on``) answers by itself, without any
traffic leaving QEMU: an ARP request for the gateway 10.0.2.2 (or the DNS
address 10.0.2.3), an ICMP echo request to 10.0.2.2, a DHCP DISCOVER. A TCP
segment to 10.0.2.2 feeds the segmentation offload (restrict=on: slirp opens no
connection). The frames are :mod:`~avocado_iofuzz.model.layouts.frames`' (shared
with ``virtio_net_modern``).

Page 0: the transmit ring, 256 descriptors cut in packets: legacy data
descriptors (some with the legacy checksum insert), or a context descriptor
(checksum offsets of the frame's headers; TSO for the TCP frame) followed by
extended data descriptors; a frame split over two descriptors one time in two,
a VLAN tag one packet in eight, one packet in eight a random descriptor.
Page 1: the receive ring, 128 packet-split descriptors of four buffer
addresses (a legacy or extended descriptor reads the first two as its buffer
and its second quadword), buffers in page 3, one address in 16 zero (a null
descriptor). Page 2: the frames, one slot of 256 bytes each (DHCP three,
TCP five), one frame in eight left as random bytes. Page 3: receive buffers.

Every receive buffer starts at most 0x800 bytes before the end, so a reply
(slirp's largest, a DHCP offer, is under 600 bytes) stays in the scratch memory
whatever buffer size the device is given. The executor's ``fill_e1000e_net``
computes the same bytes.
"""

from __future__ import annotations

from avocado_iofuzz.model.generator import random_word
from avocado_iofuzz.model.layouts.common import LAYOUT_SIZE, dwords_of, maybe
from avocado_iofuzz.model.layouts.frames import (  # noqa: F401 (the layout's frames and addresses, named here too)
    BOOTP_MIN,
    DNS_IP,
    ETH,
    GATEWAY_IP,
    GUEST_IP,
    GUEST_MAC,
    IPV4,
    TCP_HEADER,
    arp,
    checksum,
    dhcp_discover,
    icmp_echo,
    tcp_segment,
)

PAGE = 0x1000
STRUCT_WORDS = LAYOUT_SIZE // 4  # structures read generator words from here (cell c: STRUCT_WORDS + 2c, + 1)
TX_RING, RX_RING, FRAMES, RX_BUFFERS = 0x0000, 0x1000, 0x2000, 0x3000
TX_DESCRIPTORS = 256
RX_DESCRIPTORS = 128  # 32-byte packet-split descriptors
SLOT = 0x100
RX_BUFFER_SLOTS = 8  # buffers at RX_BUFFERS + k * SLOT, k < 8: the last starts 0x800 before the end

ARP, ICMP, DHCP, TCP = "arp", "icmp", "dhcp", "tcp"
# (kind, first slot, slots): the frames of page 2
FRAME_SLOTS = (
    (ARP, 0, 1), (ARP, 1, 1), (ARP, 2, 1), (ARP, 3, 1),
    (ICMP, 4, 1), (ICMP, 5, 1), (ICMP, 6, 1), (ICMP, 7, 1),
    (DHCP, 8, 3), (TCP, 11, 5),
)  # fmt: skip

# transmit descriptor command bits (legacy CMD and extended DCMD), TUCMD of a context, POPTS
CMD_EOP, CMD_IFCS, CMD_IC_TSE, CMD_RS, CMD_DEXT, CMD_VLE = 0x01, 0x02, 0x04, 0x08, 0x20, 0x40
TUCMD_TCP, TUCMD_IP = 0x01, 0x02
DTYP_DATA = 1 << 20
POPTS_IXSM, POPTS_TXSM = 0x01, 0x02


def _word(seed: int, k: int) -> int:
    return random_word(seed, k)


def arp_request(word: int) -> bytes:
    """Who has 10.0.2.2 (10.0.2.3 one time in four), tell 10.0.2.15; padded to the 60-byte minimum."""
    frame = arp(DNS_IP if maybe(word, 0, 2) else GATEWAY_IP)
    return frame + bytes(60 - len(frame))


_BUILDERS = {ARP: arp_request, ICMP: icmp_echo, DHCP: dhcp_discover, TCP: tcp_segment}


def _frame_word(first_slot: int, seed: int) -> int:
    return _word(seed, STRUCT_WORDS + 2 * ((FRAMES + first_slot * SLOT) // 16))


def slot_frame(kind: str, first_slot: int, seed: int) -> bytes | None:
    """The frame of a slot, or None when it stays random bytes (one in eight)."""
    word = _frame_word(first_slot, seed)
    if maybe(word, 61, 3):
        return None
    return _BUILDERS[kind](word)


def _context(kind: str, payload_length: int, word: int) -> bytes:
    """A context descriptor for a frame of ``kind``: IP and L4 checksum offsets; TCP with TSO at random."""
    l4 = ETH + IPV4
    sum_at = {ICMP: l4 + 2, DHCP: l4 + 6, TCP: l4 + 16, ARP: l4 + 2}[kind]
    tso = kind == TCP and not maybe(word, 40, 1)
    tucmd = CMD_DEXT | CMD_RS | TUCMD_IP | (TUCMD_TCP if kind == TCP else 0) | (CMD_IC_TSE if tso else 0)
    header = l4 + TCP_HEADER
    mss = 64 + ((word >> 41) & 0x1FF)
    paylen = max(payload_length - header, 0) if tso else payload_length
    lower = ETH | (ETH + 10) << 8 | (l4 - 1) << 16
    upper = l4 | sum_at << 8
    return _dwords_le(lower, upper, (paylen & 0xFFFFF) | tucmd << 24, header << 8 | mss << 16)


def _dwords_le(*values: int) -> bytes:
    return b"".join((v & 0xFFFF_FFFF).to_bytes(4, "little") for v in values)


def _tx_packet(base: int, seed: int, first: int, lengths: list[int]) -> list[bytes]:
    """The descriptors of one packet that starts at descriptor ``first`` (1-3 of them)."""
    w0, w1 = _word(seed, STRUCT_WORDS + 2 * first), _word(seed, STRUCT_WORDS + 2 * first + 1)
    style = (w0 >> 4) & 7
    if style == 7:  # malformed: any address in the scratch memory, any length and command
        address = base + (w1 & (LAYOUT_SIZE - 1))
        return [_dwords_le(address, address >> 32, w1 >> 32 & 0xFFFF_0000 | (w1 >> 16) & 0x3FFF, w0 >> 32)]
    pick = (w0 & 0xF) % len(FRAME_SLOTS)
    kind, slot, _ = FRAME_SLOTS[pick]
    length = lengths[pick] or 60 + (w1 & 0xFF)  # a random-bytes slot: some length
    address = base + FRAMES + slot * SLOT
    cut = ETH + (w0 >> 16) % (length - ETH) if (w0 >> 8) & 1 else length  # split in two one time in two
    pieces = [(address, cut), (address + cut, length - cut)] if cut < length else [(address, length)]
    vlan = CMD_VLE if maybe(w0, 9, 3) else 0
    special = (w1 >> 48) & 0xFFFF
    descriptors: list[bytes] = []
    if style < 3:  # legacy: ICMP and TCP insert their checksum one time in two (IC: no pseudo header, UDP's breaks)
        insert = (w0 >> 12) & 1 if kind in (ICMP, TCP) else 0
        sum_at = 36 if kind == ICMP else 50
        for n, (at, size) in enumerate(pieces):
            last = n == len(pieces) - 1
            command = CMD_IFCS | CMD_RS | (CMD_EOP | vlan if last else 0) | (CMD_IC_TSE * insert if last else 0)
            lower = size | sum_at << 16 | command << 24
            descriptors.append(_dwords_le(at, at >> 32, lower, (ETH + IPV4) << 8 | special << 16))
        return descriptors
    descriptors.append(_context(kind, length, w1))
    tso = kind == TCP and not maybe(w1, 40, 1)
    popts = POPTS_IXSM | POPTS_TXSM if style != 6 else (w1 >> 20) & 3
    for n, (at, size) in enumerate(pieces):
        last = n == len(pieces) - 1
        command = CMD_DEXT | CMD_IFCS | CMD_RS | (CMD_IC_TSE if tso else 0) | (CMD_EOP | vlan if last else 0)
        descriptors.append(_dwords_le(at, at >> 32, size | DTYP_DATA | command << 24, popts << 8 | special << 16))
    return descriptors


def build(base: int, seed: int) -> list[int]:
    """The layout's 4096 dwords at guest-physical ``base`` for fill seed ``seed``."""
    memory = bytearray(LAYOUT_SIZE)
    for offset in range(FRAMES, LAYOUT_SIZE, 8):  # frames and receive buffers start as random bytes
        memory[offset : offset + 8] = _word(seed, offset // 8).to_bytes(8, "little")
    lengths = []
    for kind, first, _ in FRAME_SLOTS:
        frame = slot_frame(kind, first, seed)
        lengths.append(len(frame) if frame else 0)
        if frame:
            at = FRAMES + first * SLOT
            memory[at : at + len(frame)] = frame
    d = 0
    while d < TX_DESCRIPTORS - 2:  # a packet takes at most three descriptors: the last one starts before 254
        packet = _tx_packet(base, seed, d, lengths)
        for descriptor in packet:
            memory[TX_RING + 16 * d : TX_RING + 16 * d + 16] = descriptor
            d += 1
    for e in range(RX_DESCRIPTORS):
        word = _word(seed, STRUCT_WORDS + 2 * ((RX_RING + 32 * e) // 16))
        for j in range(4):
            buffer = 0 if maybe(word, 32 + 4 * j, 4) else base + RX_BUFFERS + ((word >> 8 * j) & 7) * SLOT
            at = RX_RING + 32 * e + 8 * j
            memory[at : at + 8] = buffer.to_bytes(8, "little")
    return dwords_of(memory)
