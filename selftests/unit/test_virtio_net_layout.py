"""The virtio_net_modern layout: its queues point inside the scratch memory, its commands parse as the spec says."""

from __future__ import annotations

from collections import Counter

from avocado_iofuzz.model.layouts.common import LAYOUT_SIZE
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
    MQ_RSS_CONFIG,
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
    for seed in SEEDS:
        memory = virtio_net_modern(BASE, seed)
        assert _u(memory, CTRL_QUEUE + AVAIL + 2, 2) == COMMAND_COUNT
        chain = descriptors(memory, CTRL_QUEUE)
        for k in range(COMMAND_COUNT):
            assert _u(memory, CTRL_QUEUE + AVAIL + 4 + 2 * k, 2) == 2 * k
            command, ack = chain[2 * k], chain[2 * k + 1]
            assert command[0] == BASE + COMMANDS + COMMAND_SLOT * k and command[2:] == (DESC_NEXT, 2 * k + 1)
            assert ack[:2] == (BASE + ACKS + k, 1)
            writable_acks += ack[2] == DESC_WRITE
    assert 0.9 < writable_acks / (len(SEEDS) * COMMAND_COUNT) < 1.0  # one in 32 malformed


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


def test_most_frames_are_arp_requests_for_the_gateway_and_every_receive_buffer_is_offered() -> None:
    arp_gateway = frames = 0
    for seed in SEEDS:
        memory = virtio_net_modern(BASE, seed)
        assert _u(memory, RX_QUEUE + AVAIL + 2, 2) == QUEUE_SIZE
        sent = _u(memory, TX_QUEUE + AVAIL + 2, 2)
        assert 1 <= sent <= QUEUE_SIZE
        for address, _, flags, _ in descriptors(memory, TX_QUEUE):
            if flags & DESC_INDIRECT:
                address = _u(memory, address - BASE, 8)
            frame = memory[address - BASE + 12 : address - BASE + 12 + 42]
            frames += 1
            arp_gateway += frame[12:14] == b"\x08\x06" and frame[20:22] == b"\x00\x01" and frame[38:42] == GATEWAY_IP
    assert 0.3 < arp_gateway / frames < 0.6, arp_gateway / frames  # 3 in 8 kinds, plus malformed ones
