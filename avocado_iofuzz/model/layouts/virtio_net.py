"""The ``virtio_net_modern`` scratch layout: virtio-net's three queues as a virtio 1.0 driver sets them up.

Only the ``virtio-net-modern-*`` recipes name this layout (blind's layout
choice never picks it). Their register writes go to the modern interface
(the common configuration in the memory BAR), where a driver chooses each
queue's size and puts its descriptor table and rings at any address: three
16-entry queues fit the first page, and the rest of the 16 KiB holds what the
queues point at. So the device gets past its transmit queue: control commands
(receive mode, MAC table, VLAN filter, announce acknowledgement, RSS and hash
configuration, queue pairs, guest offloads), frames the row's user network
backend answers inside QEMU (:mod:`~avocado_iofuzz.model.layouts.frames`: ARP
requests, ICMP echo requests to the gateway, DHCP DISCOVER/REQUEST, TCP
segments to the gateway, which restrict=on answers with a reset), and receive
buffers for the replies. The last control command is always a valid RSS
configuration (the others are malformed one in eight) enabling the IPv4, TCPv4 and UDPv4 hash types (the IPv6 ones at
random), so where RSS is negotiated QEMU hashes the echo replies, resets and
DHCP offers it receives (``net_rx_pkt_rss_*``): every MQ command resets RSS,
the last one decides.

Offsets (16 KiB):

* 0x000 receive queue (descriptors, available ring at +0x100, used ring at +0x200),
  0x400 transmit queue, 0x800 control queue, the same way;
  0xc00 indirect tables of the transmit chains that use one (32 bytes each);
* 0x1000 eight control commands of 256 bytes (class, command, data), 0x1800 their ack bytes;
* 0x1900 and 0x1c00 two DHCP frames with their header (602 bytes: more than a transmit buffer);
* 0x2000 sixteen transmit buffers of 256 bytes: a 12-byte virtio-net header, then a frame;
* 0x3000 sixteen receive buffers of 256 bytes.

Every field is drawn from the fill seed (:func:`random_word`), so guided's seed
mutations vary command choice, RSS table sizes, keys, frame kinds and target
addresses; a fraction is malformed on purpose (an ack byte the device may not
write, one command in 256, which breaks the device until reset; a short receive
buffer, a command of a random class, an RSS configuration out of range, an ARP
of odd lengths, random bytes, TCP without its checksum). Every address stays
inside the scratch memory. ``executor/iofuzz_exec.c``
(``fill_virtio_net_modern``) writes the same bytes.
"""

from __future__ import annotations

from avocado_iofuzz.model.generator import random_word
from avocado_iofuzz.model.layouts import frames
from avocado_iofuzz.model.layouts.common import LAYOUT_SIZE, dwords_of, maybe
from avocado_iofuzz.model.layouts.frames import DNS_IP, GATEWAY_IP, GUEST_IP, GUEST_MAC  # noqa: F401 (named here too)

LAYOUT_VIRTIO_NET_MODERN = "virtio_net_modern"
QUEUE_SIZE = 16  # what the recipes write to queue_size: 16-entry queues
RX_QUEUE, TX_QUEUE, CTRL_QUEUE = 0x000, 0x400, 0x800  # descriptor tables; available ring +0x100, used +0x200
AVAIL, USED = 0x100, 0x200
INDIRECT = 0xC00
COMMANDS, ACKS = 0x1000, 0x1800
COMMAND_SLOT, COMMAND_COUNT = 0x100, 8
FRAMES, RX_BUFFERS, BUFFER = 0x2000, 0x3000, 0x100
NET_HDR = 12  # virtio_net_hdr_v1 (VERSION_1 is negotiated: num_buffers is always there)
DESC_NEXT, DESC_WRITE, DESC_INDIRECT = 1, 2, 4

# Generator words of each part (disjoint, below the 0x800 words a random tail could use).
_W_COMMANDS, _W_FRAMES, _W_RX, _W_AVAIL = 0x1000, 0x1100, 0x1200, 0x1300

# Control classes and commands (virtio 1.1, 5.1.6.5).
CTRL_RX, CTRL_MAC, CTRL_VLAN, CTRL_ANNOUNCE, CTRL_MQ, CTRL_GUEST_OFFLOADS = 0, 1, 2, 3, 4, 5
MQ_VQ_PAIRS_SET, MQ_RSS_CONFIG, MQ_HASH_CONFIG = 0, 1, 2
RSS_MAX_TABLE_SHIFT = 6  # up to 64 indirection entries: a command stays in its 256-byte slot
RSS_MAX_KEY = 40

# slirp's gateway and DNS addresses answer ARP inside QEMU; 192.0.2.0/24 (TEST-NET-1) is outside,
# and restrict=on keeps it there
OUTSIDE_NET = bytes((192, 0, 2))
# Two DHCP frames (590 bytes: more than a transmit buffer) in the free space after the ack bytes;
# a transmit chain of the DHCP kind points at the one of its parity.
DHCP_FRAMES, DHCP_SLOT, _W_DHCP = 0x1900, 0x300, 0x1310
# Hash types every valid RSS configuration enables (virtio 1.1, 5.1.6.5.7.1): IPv4, TCPv4, UDPv4,
# the kinds of the replies slirp sends back (ICMP echo, TCP reset, DHCP), so each received one is hashed.
HASH_IPV4, HASH_TCPV4, HASH_UDPV4 = 1, 2, 4
HASH_IPV4_ALL = HASH_IPV4 | HASH_TCPV4 | HASH_UDPV4
RSS_KIND = 8  # the control command kind that is an RSS configuration: the last command is always a valid one


def _le(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little")


def _descriptor(address: int, length: int, flags: int, following: int = 0) -> bytes:
    return _le(address, 8) + _le(length, 4) + _le(flags, 2) + _le(following, 2)


def _key(words: list[int], length: int) -> bytes:
    return b"".join(_le(w, 8) for w in words)[:length]


def _rss_config(word: int, words: list[int]) -> bytes:
    """An RSS / hash configuration: valid (7 in 8) or with one field out of range."""
    entries = 1 << ((word >> 8) % (RSS_MAX_TABLE_SHIFT + 1))
    hash_types = ((word >> 16) & 0x1FF) | HASH_IPV4_ALL  # the IPv6 types at random
    key_length = 1 + (word >> 32) % RSS_MAX_KEY
    unclassified, max_tx_vq = 0, 1
    if maybe(word, 40, 3):  # one of: a table size not a power of two, no such queue, no pairs, a long key
        fault = (word >> 44) & 3
        entries = 3 if fault == 0 else entries
        unclassified = 1 if fault == 1 else 0
        max_tx_vq = 0 if fault == 2 else 1
        key_length = RSS_MAX_KEY + 1 if fault == 3 else key_length
    table = bytes(2 * entries)  # every entry queue 0: the row's device has one queue pair
    return (_le(hash_types, 4) + _le(entries - 1, 2) + _le(unclassified, 2) + table + _le(max_tx_vq, 2)
            + _le(key_length, 1) + _key(words, min(key_length, RSS_MAX_KEY)))  # fmt: skip


def control_command(words: list[int]) -> bytes:
    """One control command (class, command, data) from 8 generator words."""
    word = words[0]
    kind = word & 15
    arg = word >> 16
    if kind < 2:  # receive mode: promiscuous, all-multicast, all-unicast, no-multi, no-uni, no-broadcast
        return bytes((CTRL_RX, (word >> 8) % 6, arg & 1))
    if kind == 2:  # MAC filter table: unicast then multicast entries, 0-3 each
        unicast, multicast = arg & 3, (arg >> 2) & 3
        macs = [GUEST_MAC[:5] + bytes(((arg >> (4 + 3 * i)) & 0xFF,)) for i in range(unicast + multicast)]
        body = _le(unicast, 4) + b"".join(macs[:unicast]) + _le(multicast, 4) + b"".join(macs[unicast:])
        return bytes((CTRL_MAC, 0)) + body
    if kind == 3:  # MAC address
        return bytes((CTRL_MAC, 1)) + GUEST_MAC[:3] + _le(arg & 0xFFFFFF, 3)
    if kind < 6:  # VLAN filter: add or delete an id
        return bytes((CTRL_VLAN, (word >> 8) & 1)) + _le(arg & 0xFFF, 2)
    if kind < 8:  # announce acknowledgement (one in 4 another command)
        return bytes((CTRL_ANNOUNCE, 0 if not maybe(word, 8, 2) else (word >> 12) & 3))
    if kind < 11 or kind == 14:  # RSS configuration
        return bytes((CTRL_MQ, MQ_RSS_CONFIG)) + _rss_config(word, words[2:8])
    if kind == 11:  # hash report configuration (the same layout; the row does not offer hash reports)
        return bytes((CTRL_MQ, MQ_HASH_CONFIG)) + _rss_config(word, words[2:8])
    if kind == 12:  # queue pairs: 1, or (one in 4) any
        return bytes((CTRL_MQ, MQ_VQ_PAIRS_SET)) + _le(1 if not maybe(word, 8, 2) else arg & 0xFFFF, 2)
    if kind == 13:  # guest offloads: checksum, TSO4/6, ECN, UFO bits
        return bytes((CTRL_GUEST_OFFLOADS, 0)) + _le(arg & 0x1F, 8)
    # a command of any class, with random data
    return bytes(((word >> 8) & 7, (word >> 12) & 7)) + _key(words[1:8], 2 + (arg & 0x1F))


# transmit kinds ((word >> 16) & 15)
KIND_ARP_GATEWAY, KIND_ARP_DNS, KIND_ARP_OUTSIDE, KIND_ARP_OPERATION, KIND_RANDOM, KIND_ARP_LENGTHS = 0, 2, 3, 4, 5, 6
KIND_ICMP, KIND_DHCP, KIND_TCP, KIND_TCP_FLAGS, KIND_TCP_NO_SUM = 7, 10, 12, 13, 14


def transmit_kind(word: int) -> int:
    """What a transmit chain sends: ARP (0-6: 7 in 16, of them 3 in 16 malformed or unanswered), ICMP echo (7-9),
    DHCP (10-11), TCP to the gateway (12-14, one in three without its checksum), ARP for the gateway (15)."""
    return (word >> 16) & 15


def transmit_frame(words: list[int]) -> bytes:
    """The frame of a transmit chain from 4 generator words (a DHCP kind's frame is :func:`dhcp_frame`'s)."""
    word = words[0]
    kind = transmit_kind(word)
    if kind in (KIND_ARP_GATEWAY, 1, 15):
        return frames.arp(GATEWAY_IP)
    if kind == KIND_ARP_DNS:
        return frames.arp(DNS_IP)
    if kind == KIND_ARP_OUTSIDE:  # an address outside the user network: no reply, and nothing leaves (restrict=on)
        return frames.arp(OUTSIDE_NET + bytes(((word >> 24) & 0xFF,)))
    if kind == KIND_ARP_OPERATION:  # another ARP operation
        return frames.arp(GATEWAY_IP, (word >> 24) & 3)
    if kind == KIND_RANDOM:  # random bytes from the guest's MAC
        return b"\xff" * 6 + GUEST_MAC + _key(words[1:4], 2 + (word >> 24) % 23)
    if kind == KIND_ARP_LENGTHS:  # an ARP with odd address lengths
        return frames.arp(GATEWAY_IP, 1, ((word >> 24) & 0xFF, (word >> 32) & 0xFF))
    if kind < KIND_DHCP:  # an echo request to the gateway: an echo reply comes back (IPv4)
        return frames.icmp_echo(words[1])
    if kind < KIND_TCP:
        raise ValueError(f"transmit kind {kind} is DHCP: its frame is dhcp_frame's")
    # a TCP segment to the gateway: slirp (restrict=on) opens no connection and answers a reset (TCP over IPv4);
    # a SYN, or (13) any flags, or (14) a SYN without its checksum, which slirp drops unanswered
    flags = (words[2] >> 8) & 0x3F if kind == KIND_TCP_FLAGS else frames.TCP_SYN
    return frames.tcp_segment(words[1], flags, (words[2] >> 16) & 0x3F, checksummed=kind != KIND_TCP_NO_SUM)


def net_header(word: int) -> bytes:
    """A virtio-net header: NEEDS_CSUM with an offset in the frame one time in 16 (checksum offload is not
    negotiated), else zero."""
    header = bytearray(NET_HDR)
    if maybe(word, 0, 4):
        header[0] = 1
        header[6:8] = _le(14, 2)
        header[8:10] = _le((word >> 8) & 0x3F, 2)
    return bytes(header)


def dhcp_frame(seed: int, parity: int) -> bytes:
    """A virtio-net header and the DHCP frame of the region ``parity``: a DISCOVER, or a REQUEST one time in four."""
    word = random_word(seed, _W_DHCP + parity)
    return net_header(word) + frames.dhcp_discover(word)


def virtio_net_modern(base: int, seed: int) -> bytes:
    """The layout's 16 KiB at guest-physical ``base`` for the fill seed ``seed``."""
    memory = bytearray(LAYOUT_SIZE)

    def put(at: int, data: bytes) -> None:
        memory[at : at + len(data)] = data

    def avail(queue: int, count: int, heads: list[int]) -> None:
        put(queue + AVAIL, _le(0, 2) + _le(count, 2) + b"".join(_le(h, 2) for h in heads))

    for i in range(QUEUE_SIZE):  # receive: one writable buffer each; a short or readable one now and then
        word = random_word(seed, _W_RX + i)
        length = BUFFER if not maybe(word, 0, 4) else (word >> 8) & 0xFF
        flags = DESC_WRITE if not maybe(word, 16, 5) else 0
        put(RX_QUEUE + 16 * i, _descriptor(base + RX_BUFFERS + BUFFER * i, length, flags))
    avail(RX_QUEUE, QUEUE_SIZE, list(range(QUEUE_SIZE)))

    for parity in (0, 1):
        put(DHCP_FRAMES + DHCP_SLOT * parity, dhcp_frame(seed, parity))
    for i in range(QUEUE_SIZE):  # transmit: header and frame in one buffer, or (1 in 4) an indirect table of two
        words = [random_word(seed, _W_FRAMES + 4 * i + j) for j in range(4)]
        if transmit_kind(words[0]) in (KIND_DHCP, KIND_DHCP + 1):
            at, length = DHCP_FRAMES + DHCP_SLOT * (i & 1), NET_HDR + frames.DHCP_LENGTH
        else:
            data = net_header(words[0]) + transmit_frame(words)
            at, length = FRAMES + BUFFER * i, len(data)
            put(at, data)
        buffer = base + at
        if maybe(words[0], 40, 2):
            table = INDIRECT + 32 * i
            put(table, _descriptor(buffer, NET_HDR, DESC_NEXT, 1) + _descriptor(buffer + NET_HDR, length - NET_HDR, 0))
            put(TX_QUEUE + 16 * i, _descriptor(base + table, 32, DESC_INDIRECT))
        else:
            flags = 0 if not maybe(words[0], 42, 5) else DESC_WRITE  # one in 32: a header the device may not read
            put(TX_QUEUE + 16 * i, _descriptor(buffer, length, flags))
    sent = 1 + random_word(seed, _W_AVAIL) % QUEUE_SIZE
    avail(TX_QUEUE, sent, list(range(QUEUE_SIZE)))

    # control: command (readable) -> ack byte, writable but one time in 256: an ack the device cannot write
    # breaks it (virtio_error) until the next reset, so everything after it in the recipe does nothing
    for k in range(COMMAND_COUNT):
        words = [random_word(seed, _W_COMMANDS + 8 * k + j) for j in range(8)]
        if k == COMMAND_COUNT - 1:  # every MQ command resets RSS: the last one configures it for the replies,
            words[0] = words[0] & ~15 | RSS_KIND | 1 << 40  # validly (bit 40 set: none of _rss_config's faults)
        command = control_command(words)
        put(COMMANDS + COMMAND_SLOT * k, command)
        ack_flags = DESC_WRITE if not maybe(words[1], 0, 8) else 0
        put(CTRL_QUEUE + 32 * k, _descriptor(base + COMMANDS + COMMAND_SLOT * k, len(command), DESC_NEXT, 2 * k + 1)
            + _descriptor(base + ACKS + k, 1, ack_flags))  # fmt: skip
    avail(CTRL_QUEUE, COMMAND_COUNT, [2 * k for k in range(COMMAND_COUNT)])
    return bytes(memory)


def virtio_net_modern_dwords(base: int, seed: int) -> list[int]:
    """:func:`virtio_net_modern` as the 32-bit words the layout table holds."""
    memory = virtio_net_modern(base, seed)
    return dwords_of(memory)
