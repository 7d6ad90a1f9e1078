"""The virtio_blk_req layout: requests a virtio-blk device parses, of every type, and only recipes name it."""

from __future__ import annotations

import itertools
import struct
from collections import Counter

from avocado_iofuzz.guided.recipes import load
from avocado_iofuzz.model.dma import SCRATCH_BASE, SCRATCH_SIZE
from avocado_iofuzz.model.dma_layouts import LAYOUT_VIRTIO, LAYOUT_VIRTIO_BLK_REQ, layout_fill
from avocado_iofuzz.model.layout_choice import family_layout
from avocado_iofuzz.model.layouts import virtio_blk_req as vbr
from avocado_iofuzz.model.pci import PciFunction

SEEDS = range(0x5EED0000, 0x5EED0040)


def descriptor(fill: bytes, at: int) -> tuple[int, int, int, int]:
    address, length, flags, following = struct.unpack_from("<QIHH", fill, at)
    return address, length, flags, following


def chain(fill: bytes, head: int) -> list[tuple[int, int, int]]:
    """(address, length, flags) of the request at descriptor ``head``, through its indirect table if it has one."""
    table, index = vbr.QUEUE * 16, head
    address, length, flags, _ = descriptor(fill, 16 * head)
    base = 0
    if flags & vbr.INDIRECT:
        base, index = address - SCRATCH_BASE, 0
        assert length % 16 == 0 and base + length <= vbr.HEADERS, "an indirect table stays in page 2"
        table = length
    parts = []
    while True:
        address, length, flags, following = descriptor(fill, base + 16 * index)
        parts.append((address, length, flags))
        if not flags & vbr.NEXT:
            return parts
        index = following
        assert len(parts) <= 3 and (base or index < table)


def requests(seed: int) -> list[tuple[int, int, list[tuple[int, int, int]]]]:
    """(type, sector, chain) of every head the available ring offers, in its order."""
    fill = layout_fill(LAYOUT_VIRTIO_BLK_REQ, SCRATCH_BASE, seed)
    _, heads = struct.unpack_from("<HH", fill, vbr.AVAIL)
    found = []
    for k in range(heads):
        (head,) = struct.unpack_from("<H", fill, vbr.AVAIL + 4 + 2 * k)
        parts = chain(fill, head)
        kind, _, sector = struct.unpack_from("<IIQ", fill, parts[0][0] - SCRATCH_BASE)
        found.append((kind, sector, parts))
    return found


def test_every_head_is_a_request_inside_the_scratch_memory():
    for seed in SEEDS:
        offered = requests(seed)
        assert 16 <= len(offered) <= vbr.SLOTS
        for _, _, parts in offered:
            assert all(a >= SCRATCH_BASE and a + n <= SCRATCH_BASE + SCRATCH_SIZE for a, n, _ in parts)
            assert not parts[0][2] & vbr.WRITE and parts[-1][1:] == (1, vbr.WRITE)  # read header, written status


def test_the_types_the_device_knows_all_come_with_sectors_inside_and_past_the_disk():
    kinds: Counter[int] = Counter()
    sectors = Counter[str]()
    for seed in SEEDS:
        for kind, sector, parts in requests(seed):
            plain = kind & ~vbr.T_BARRIER
            kinds[plain if plain < 16 else -1] += 1
            if plain in (vbr.T_IN, vbr.T_OUT):
                sectors["past" if sector + parts[1][1] // vbr.SECTOR > vbr.CAPACITY else "inside"] += 1
                assert bool(parts[1][2] & vbr.WRITE) == (plain == vbr.T_IN)  # a read's buffer is written
            if plain == vbr.T_FLUSH:
                assert len(parts) == 2
    for kind in (vbr.T_IN, vbr.T_OUT, vbr.T_FLUSH, vbr.T_GET_ID, vbr.T_DISCARD, vbr.T_WRITE_ZEROES, vbr.T_SCSI, -1):
        assert kinds[kind] > 0, f"type {kind} never drawn in {len(SEEDS)} fills: {kinds}"
    assert kinds[vbr.T_IN] + kinds[vbr.T_OUT] > sum(kinds.values()) / 3
    assert sectors["inside"] > 5 * sectors["past"] > 0  # past the end: 1 in 16, the last sector 1 in 16


def test_runs_of_one_direction_on_adjacent_sectors_are_what_the_device_merges():
    adjacent = 0
    for seed in SEEDS:
        offered = requests(seed)
        for (k0, s0, p0), (k1, s1, _) in itertools.pairwise(offered):
            same = k0 & ~vbr.T_BARRIER == k1 & ~vbr.T_BARRIER and k0 & ~vbr.T_BARRIER in (vbr.T_IN, vbr.T_OUT)
            adjacent += same and s1 == s0 + p0[1][1] // vbr.SECTOR
    assert adjacent > len(SEEDS) * 5


def test_the_fill_seed_draws_it_and_blind_never_picks_it():
    assert layout_fill(LAYOUT_VIRTIO_BLK_REQ, SCRATCH_BASE, 1) != layout_fill(LAYOUT_VIRTIO_BLK_REQ, SCRATCH_BASE, 2)
    blk = PciFunction(0, 0, 2, 0, 0x1AF4, 0x1001, 0x010000, ())
    assert family_layout(blk) == LAYOUT_VIRTIO  # blind's choice for the device: the generic virtio layout
    named = {recipe.name for recipe in load() if recipe.layout == LAYOUT_VIRTIO_BLK_REQ}
    assert named == {"virtio-blk-requests", "virtio-blk-requests-writethrough"}
