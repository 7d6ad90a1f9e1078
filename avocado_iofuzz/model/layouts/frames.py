"""Ethernet frames QEMU's user network (slirp, ``restrict=on``) answers by itself: what the NIC layouts transmit.

One place for the frame builders of the ``e1000e_net`` and
``virtio_net_modern`` layouts, so both send the same bytes for the same word
(``executor/iofuzz_exec.c``'s ``frame_*`` functions are their C twins). Every
frame comes from the guest (10.0.2.15, QEMU's default MAC) and goes to an
address slirp serves inside QEMU: an ARP request for the gateway 10.0.2.2 or
the DNS address 10.0.2.3 (an ARP reply), an ICMP echo request to the
gateway (an echo reply), a DHCP DISCOVER or REQUEST (a DHCP OFFER or ACK, UDP),
a TCP segment to the gateway (with restrict=on slirp opens no connection and
answers a checksummed segment that is not itself a reset with a reset). None
of them makes slirp open a host socket.
"""

from __future__ import annotations

from avocado_iofuzz.model.layouts.common import maybe

GUEST_MAC = bytes.fromhex("525400123456")  # QEMU's default address for the first NIC
SLIRP_MAC = bytes.fromhex("52550a000202")
BROADCAST_MAC = b"\xff" * 6
GUEST_IP = bytes((10, 0, 2, 15))
GATEWAY_IP = bytes((10, 0, 2, 2))
DNS_IP = bytes((10, 0, 2, 3))
ETH, IPV4, TCP_HEADER = 14, 20, 20
ARP_LENGTH = ETH + 28
BOOTP_MIN = 576  # slirp answers a BOOTP request of at least its struct bootp_t (IP + UDP + BOOTP + 312 vendor bytes)
DHCP_LENGTH = ETH + BOOTP_MIN
ETHERTYPE_IPV4, ETHERTYPE_ARP = 0x0800, 0x0806
PROTOCOL_ICMP, PROTOCOL_TCP, PROTOCOL_UDP = 1, 6, 17
TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x02, 0x04, 0x08, 0x10


def checksum(data: bytes | bytearray) -> int:
    """The Internet checksum (RFC 1071) of ``data``: one's complement of the one's complement sum of 16-bit words."""
    total = 0
    for i in range(0, len(data) - 1, 2):
        total += data[i] << 8 | data[i + 1]
    if len(data) % 2:
        total += data[-1] << 8
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet(destination: bytes, ethertype: int) -> bytearray:
    """An Ethernet header from the guest's address."""
    return bytearray(destination + GUEST_MAC + ethertype.to_bytes(2, "big"))


def put_ipv4(frame: bytearray, total: int, ident: int, protocol: int, source: bytes, destination: bytes) -> None:
    """An IPv4 header at ETH with its checksum: no options, TTL 64, not fragmented."""
    frame[ETH : ETH + IPV4] = (
        bytes((0x45, 0, total >> 8, total & 0xFF, ident >> 8, ident & 0xFF, 0, 0, 64, protocol, 0, 0))
        + source
        + destination
    )
    frame[ETH + 10 : ETH + 12] = checksum(frame[ETH : ETH + IPV4]).to_bytes(2, "big")


def arp(target: bytes, operation: int = 1, lengths: tuple[int, int] = (6, 4)) -> bytes:
    """An ARP packet from the guest asking for ``target`` (42 bytes; odd operation or address lengths on request)."""
    frame = ethernet(BROADCAST_MAC, ETHERTYPE_ARP)
    frame += bytes((0, 1, 8, 0, *lengths)) + operation.to_bytes(2, "big") + GUEST_MAC + GUEST_IP + bytes(6) + target
    return bytes(frame)


def icmp_echo(word: int) -> bytes:
    """An echo request to 10.0.2.2 with 8-135 payload bytes, both checksums right."""
    payload = bytes((word >> 32) + i & 0xFF for i in range(8 + ((word >> 8) & 0x7F)))
    frame = ethernet(SLIRP_MAC, ETHERTYPE_IPV4) + bytes(IPV4)
    ident, sequence = (word >> 16) & 0xFFFF, word & 0xFF
    icmp = bytearray(bytes((8, 0, 0, 0, ident >> 8, ident & 0xFF, 0, sequence)) + payload)
    icmp[2:4] = checksum(icmp).to_bytes(2, "big")
    frame += icmp
    put_ipv4(frame, IPV4 + len(icmp), ident ^ 0x5A5A, PROTOCOL_ICMP, GUEST_IP, GATEWAY_IP)
    return bytes(frame)


def dhcp_discover(word: int) -> bytes:
    """A DHCP DISCOVER (REQUEST for 10.0.2.15 one time in four) from 0.0.0.0 to the broadcast address, UDP sum 0."""
    request = maybe(word, 0, 2)
    xid = (word >> 32).to_bytes(4, "big")
    bootp = bytearray(bytes((1, 1, 6, 0)) + xid + bytes(20) + GUEST_MAC + bytes(10 + 64 + 128))
    bootp += bytes((99, 130, 83, 99, 53, 1, 3 if request else 1))
    if request:
        bootp += bytes((50, 4)) + GUEST_IP
    bootp += bytes((255,))
    bootp += bytes(BOOTP_MIN - IPV4 - 8 - len(bootp))
    udp = bytes((0, 68, 0, 67)) + (8 + len(bootp)).to_bytes(2, "big") + bytes(2)
    frame = ethernet(BROADCAST_MAC, ETHERTYPE_IPV4) + bytes(IPV4) + udp + bootp
    put_ipv4(frame, IPV4 + len(udp) + len(bootp), (word >> 8) & 0xFFFF, PROTOCOL_UDP, bytes(4), b"\xff" * 4)
    return bytes(frame)


def tcp_segment(word: int, flags: int = TCP_ACK | TCP_PSH, payload_length: int | None = None,
                checksummed: bool = False) -> bytes:  # fmt: skip
    """A TCP segment from port 49153 to a port of ``word`` on 10.0.2.2.

    By default an ACK|PSH with 64-1151 payload bytes and its checksum left to
    the NIC's offload (e1000e's TSO cuts it); ``checksummed`` computes it here
    (over the pseudo header), for a NIC that does not.
    """
    if payload_length is None:
        payload_length = 64 + ((word >> 8) & 0x3FF) % 1088
    payload = bytes((word >> 40) + 3 * i & 0xFF for i in range(payload_length))
    sequence = ((word >> 16) & 0xFFFF_FFFF).to_bytes(4, "big")
    port = 1024 + ((word >> 24) & 0x7FFF)
    tcp = bytearray(bytes((0xC0, 0x01)) + port.to_bytes(2, "big") + sequence + bytes(4)
                    + bytes((0x50, flags, 0x10, 0, 0, 0, 0, 0)) + payload)  # fmt: skip
    if checksummed:
        pseudo = GUEST_IP + GATEWAY_IP + bytes((0, PROTOCOL_TCP)) + len(tcp).to_bytes(2, "big")
        tcp[16:18] = checksum(pseudo + tcp).to_bytes(2, "big")
    frame = ethernet(SLIRP_MAC, ETHERTYPE_IPV4) + bytes(IPV4) + tcp
    put_ipv4(frame, IPV4 + len(tcp), word & 0xFFFF, PROTOCOL_TCP, GUEST_IP, GATEWAY_IP)
    return bytes(frame)
