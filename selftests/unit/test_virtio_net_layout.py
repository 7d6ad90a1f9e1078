"""The virtio_net_modern layout: its queues point inside the scratch memory, its commands parse as the spec says."""

from __future__ import annotations

from collections import Counter

from avocado_iofuzz.model.layouts import frames
from avocado_iofuzz.model.layouts.common import LAYOUT_SIZE
from avocado_iofuzz.model.layouts.frames import ETH, IPV4
from avocado_iofuzz.model.layouts.virtio_net import (
    ACKS,
    AVAIL,
    COMMAND_COUNT,
    COMMAND_SLOT,
    COMMANDS,
    CTRL_MQ,
    CTRL_QUEUE,
    DESC_INDIRECT,
    DESC_NEXT,
    DESC_WRITE,
    GATEWAY_IP,
    GUEST_IP,
    HASH_IPV4_ALL,
    MQ_RSS_CONFIG,
    NET_HDR,
    QUEUE_SIZE,
    RSS_MAX_KEY,
    RX_QUEUE,
    TX_QUEUE,
    virtio_net_modern,
)

SIZE = LAYOUT_SIZE
BASE = 0x7000000
SEEDS = range(64)


def _u(memory: bytes, at: int, size: int) -> int:
    return int.from_bytes(memory[at : at + size], "little")


def descriptors(memory: bytes, table: int, count: int = QUEUE_SIZE) -> list[tuple[int, int, int, int]]:
    return [(_u(memory, table + 16 * i, 8), _u(memory, table + 16 * i + 8, 4), _u(memory, table + 16 * i + 12, 2),
             _u(memory, table + 16 * i + 14, 2)) for i in range(count)]  # fmt: skip


def test_every_buffer_the_queues_name_is_inside_the_scratch_memory() -> None:
    for seed in SEEDS:
        memory = virtio_net_modern(BASE, seed)
        tables = [RX_QUEUE, TX_QUEUE, CTRL_QUEUE]
        tables += [address - BASE for address, _, flags, _ in descriptors(memory, TX_QUEUE) if flags & DESC_INDIRECT]
        for table in tables:
            count = QUEUE_SIZE if table in (RX_QUEUE, TX_QUEUE, CTRL_QUEUE) else 2
            for address, length, _, _ in descriptors(memory, table, count):
                assert address >= BASE and address + length <= BASE + SIZE, (seed, table, hex(address), length)


def test_the_control_queue_is_eight_commands_each_with_an_ack_byte() -> None:
    writable_acks = 0
    for seed in range(256):
        memory = virtio_net_modern(BASE, seed)
        assert _u(memory, CTRL_QUEUE + AVAIL + 2, 2) == COMMAND_COUNT
        chain = descriptors(memory, CTRL_QUEUE)
        for k in range(COMMAND_COUNT):
            assert _u(memory, CTRL_QUEUE + AVAIL + 4 + 2 * k, 2) == 2 * k
            command, ack = chain[2 * k], chain[2 * k + 1]
            assert command[0] == BASE + COMMANDS + COMMAND_SLOT * k and command[2:] == (DESC_NEXT, 2 * k + 1)
            assert ack[:2] == (BASE + ACKS + k, 1)
            writable_acks += ack[2] == DESC_WRITE
    assert 0.98 < writable_acks / (256 * COMMAND_COUNT) < 1.0  # one in 256 not writable


def rss_fields(body: bytes) -> tuple[int, int, int, int, int]:
    """(hash types, table length, unclassified queue, max_tx_vq, key length) of an RSS configuration.

    A command of random bytes (the layout's last kind) may name a table longer than its slot: key length 0.
    """
    entries = _u(body, 4, 2) + 1
    after = 8 + 2 * entries
    key = body[after + 2] if after + 2 < len(body) else 0
    return _u(body, 0, 4), entries, _u(body, 6, 2), _u(body, after, 2), key


def test_commands_cover_every_class_and_rss_configurations_are_mostly_valid() -> None:
    classes: Counter[int] = Counter()
    valid = invalid = 0
    for seed in SEEDS:
        memory = virtio_net_modern(BASE, seed)
        for k in range(COMMAND_COUNT):
            slot = memory[COMMANDS + COMMAND_SLOT * k : COMMANDS + COMMAND_SLOT * (k + 1)]
            classes[slot[0]] += 1
            if slot[:2] == bytes((CTRL_MQ, MQ_RSS_CONFIG)):
                hash_types, entries, unclassified, max_tx_vq, key = rss_fields(slot[2:])
                good = (entries & (entries - 1) == 0 and hash_types and unclassified == 0 and max_tx_vq == 1
                        and 1 <= key <= RSS_MAX_KEY)  # fmt: skip
                valid, invalid = valid + bool(good), invalid + (not good)
    assert set(range(6)) <= set(classes), classes
    assert valid > 4 * invalid > 0, (valid, invalid)


def transmitted(memory: bytes) -> list[bytes]:
    """Every transmit chain's frame, by its descriptors."""
    result = []
    for address, length, flags, _ in descriptors(memory, TX_QUEUE):
        if flags & DESC_INDIRECT:
            table = address - BASE
            address, length = _u(memory, table + 16, 8) - NET_HDR, NET_HDR + _u(memory, table + 24, 4)
        result.append(memory[address - BASE + NET_HDR : address - BASE + length])
    return result


def kind_of(frame: bytes) -> str:
    """What slirp makes of a frame: an ARP, an ICMP echo, DHCP or TCP to the gateway (checksums right), else other."""
    if frame[12:14] == b"\x08\x06":
        return "arp" if frame[20:22] == b"\x00\x01" and frame[18:20] == b"\x06\x04" else "other"
    if frame[12:14] != b"\x08\x00" or frames.checksum(frame[ETH : ETH + IPV4]):
        return "other"
    ip, payload = frame[ETH : ETH + IPV4], frame[ETH + IPV4 :]
    if ip[9] == frames.PROTOCOL_ICMP and ip[16:20] == GATEWAY_IP and payload[0] == 8 and not frames.checksum(payload):
        return "icmp"
    if ip[9] == frames.PROTOCOL_UDP and payload[2:4] == b"\x00\x43" and len(frame) == frames.DHCP_LENGTH:
        return "dhcp"
    if ip[9] == frames.PROTOCOL_TCP and ip[16:20] == GATEWAY_IP:
        pseudo = GUEST_IP + GATEWAY_IP + bytes((0, 6)) + len(payload).to_bytes(2, "big")
        return "tcp" if not frames.checksum(pseudo + payload) else "tcp unchecked"
    return "other"


def test_frames_mix_arp_icmp_dhcp_and_tcp_to_the_gateway_and_every_receive_buffer_is_offered() -> None:
    kinds: Counter[str] = Counter()
    for seed in SEEDS:
        memory = virtio_net_modern(BASE, seed)
        assert _u(memory, RX_QUEUE + AVAIL + 2, 2) == QUEUE_SIZE
        assert 1 <= _u(memory, TX_QUEUE + AVAIL + 2, 2) <= QUEUE_SIZE
        kinds.update(kind_of(frame) for frame in transmitted(memory))
    total = sum(kinds.values())
    assert {"arp", "icmp", "dhcp", "tcp", "tcp unchecked", "other"} <= set(kinds), kinds
    assert 0.6 < (kinds["arp"] + kinds["icmp"] + kinds["dhcp"] + kinds["tcp"]) / total < 0.95, kinds  # some malformed
    assert min(kinds["icmp"], 2 * kinds["dhcp"], 2 * kinds["tcp"]) / total > 0.15, kinds


def test_the_last_command_configures_rss_for_ipv4_tcp_and_udp_validly() -> None:
    ipv4_all = 0
    for seed in SEEDS:
        memory = virtio_net_modern(BASE, seed)
        last = memory[COMMANDS + COMMAND_SLOT * (COMMAND_COUNT - 1) :][:COMMAND_SLOT]
        assert last[:2] == bytes((CTRL_MQ, MQ_RSS_CONFIG))
        hash_types, entries, unclassified, max_tx_vq, key = rss_fields(last[2:])
        assert hash_types & HASH_IPV4_ALL == HASH_IPV4_ALL
        ipv4_all += entries & (entries - 1) == 0 and unclassified == 0 and max_tx_vq == 1 and 1 <= key <= RSS_MAX_KEY
    assert ipv4_all == len(SEEDS)  # the malformed RSS configurations are among the seven commands before
