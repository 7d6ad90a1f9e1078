"""The e1000e_net layout: frames slirp answers, descriptors that point at them, receive buffers that stay inside."""

from __future__ import annotations

import struct
from collections import Counter

import pytest

from avocado_iofuzz.guided.recipes import load
from avocado_iofuzz.model.dma import SCRATCH_BASE, SCRATCH_SIZE
from avocado_iofuzz.model.dma_layouts import LAYOUT_E1000, LAYOUT_E1000E_NET, layout_fill
from avocado_iofuzz.model.iomem import DEFAULT_MAX_SIZE
from avocado_iofuzz.model.layout_choice import family_layout
from avocado_iofuzz.model.layouts import e1000e_net as net
from avocado_iofuzz.model.pci import PciFunction

SEEDS = range(0x5EED0000, 0x5EED0040)


def fill(seed: int) -> bytes:
    return layout_fill(LAYOUT_E1000E_NET, SCRATCH_BASE, seed)


def test_checksum_is_rfc1071():
    # RFC 1071's example bytes sum to 0xddf2: the checksum is its complement
    assert net.checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    header = bytearray(bytes.fromhex("450000730000400040110000c0a80001c0a800c7"))
    header[10:12] = net.checksum(header).to_bytes(2, "big")
    assert net.checksum(header) == 0  # a header with its checksum sums to all ones


def frame_kinds(seed: int) -> Counter[str]:
    """What each slot of page 2 holds for ``seed``: a frame of its kind that parses, or 'random'."""
    kinds: Counter[str] = Counter()
    for kind, first, _ in net.FRAME_SLOTS:
        frame = net.slot_frame(kind, first, seed)
        if frame is None:
            kinds["random"] += 1
            continue
        assert fill(seed)[net.FRAMES + first * net.SLOT :][: len(frame)] == frame
        kinds[kind] += 1
        assert frame[6:12] == net.GUEST_MAC
        if kind == net.ARP:
            assert len(frame) == 60 and frame[12:14] == b"\x08\x06" and frame[38:42] in (net.GATEWAY_IP, net.DNS_IP)
            continue
        ip = frame[net.ETH : net.ETH + net.IPV4]
        assert frame[12:14] == b"\x08\x00" and net.checksum(ip) == 0
        assert int.from_bytes(ip[2:4], "big") == len(frame) - net.ETH
        if kind == net.ICMP:
            assert ip[16:20] == net.GATEWAY_IP and net.checksum(frame[net.ETH + net.IPV4 :]) == 0
        elif kind == net.DHCP:
            assert len(frame) == net.ETH + net.BOOTP_MIN and frame[36:38] == b"\x00\x43"  # to port 67
        else:
            assert ip[9] == 6 and len(frame) <= 5 * net.SLOT
    return kinds


def test_most_slots_hold_a_frame_slirp_answers_and_some_stay_random():
    total: Counter[str] = Counter()
    for seed in SEEDS:
        total += frame_kinds(seed)
    slots = len(SEEDS) * len(net.FRAME_SLOTS)
    assert total["random"] > slots // 16  # about one in eight malformed
    assert total[net.ARP] + total[net.ICMP] + total[net.DHCP] > slots // 2


def tx_descriptors(data: bytes) -> list[tuple[int, int, int, int]]:
    return [struct.unpack_from("<IIII", data, net.TX_RING + 16 * d) for d in range(net.TX_DESCRIPTORS)]


@pytest.mark.parametrize("seed", [0, 1, 0x5EED0013, 2**64 - 1])
def test_transmit_ring_mixes_descriptor_kinds_that_point_inside(seed: int):
    data = fill(seed)
    kinds: Counter[str] = Counter()
    for low, high, lower, upper in tx_descriptors(data):
        if (low, high, lower, upper) == (0, 0, 0, 0):  # after the last packet (it ends at 253, 254 or 255)
            continue
        extended = lower >> 24 & net.CMD_DEXT
        if extended and (lower >> 20) & 0xF == 0:  # a context (or a malformed descriptor that reads as one)
            offsets = low & 0xFF == net.ETH and upper >> 8 & 0xFF == net.ETH + net.IPV4 + net.TCP_HEADER
            kinds["context" if offsets else "other"] += 1
            continue
        address = high << 32 | low
        kinds["extended" if extended else "legacy"] += 1
        assert SCRATCH_BASE <= address < SCRATCH_BASE + SCRATCH_SIZE
        kinds["vlan"] += bool(lower >> 24 & net.CMD_VLE)
    assert min(kinds[k] for k in ("legacy", "extended", "context", "vlan")) > 0, kinds


def test_some_fill_segments_tcp():
    assert any(
        lower >> 24 & (net.CMD_DEXT | net.CMD_IC_TSE) == net.CMD_DEXT | net.CMD_IC_TSE and (lower >> 20) & 0xF == 0
        for seed in SEEDS
        for _, _, lower, _ in tx_descriptors(fill(seed))
    )


@pytest.mark.parametrize("seed", [0, 7, 2**64 - 1])
def test_receive_buffers_leave_room_for_a_reply_inside_the_scratch_memory(seed: int):
    data = fill(seed)
    buffers = struct.unpack_from(f"<{4 * net.RX_DESCRIPTORS}Q", data, net.RX_RING)
    nulls = [b for b in buffers if b == 0]
    assert 0 < len(nulls) < len(buffers) // 8  # one in 16 is a null descriptor's
    for buffer in (b for b in buffers if b):
        assert buffer % net.SLOT == 0
        assert SCRATCH_BASE + net.RX_BUFFERS <= buffer <= SCRATCH_BASE + SCRATCH_SIZE - 0x800


def test_only_recipes_name_the_layout():
    e1000e = PciFunction(0, 0, 3, 0, 0x8086, 0x10D3, 0x020000, ())
    assert family_layout(e1000e) == LAYOUT_E1000  # blind's choice is unchanged
    named = {r.name for r in load() if r.layout == LAYOUT_E1000E_NET}
    assert named == {"e1000e-net-legacy", "e1000e-net-extended-rss"}
    assert all(r.ids == ("8086:10d3",) for r in load() if r.layout == LAYOUT_E1000E_NET)


def test_recipes_write_bar0_only_where_a_run_fuzzes_it():
    # a run fuzzes BAR0's first mmio_max_size bytes: a step above would make the recipe not apply
    for recipe in (r for r in load() if r.layout == LAYOUT_E1000E_NET):
        above = [hex(s.offset) for s in recipe.steps if s.bar == 0 and s.offset >= DEFAULT_MAX_SIZE]
        assert not above, f"{recipe.name} writes BAR0 at {above}: past the {DEFAULT_MAX_SIZE:#x} bytes a run fuzzes"


def test_recipes_leave_the_high_ring_addresses_at_their_reset_zero():
    # a flipped bit of a 0 written to RDBAH puts the ring above RAM, where QEMU 7.2's receive path spins
    # for good in packet-split mode (recipes.toml): no step is there for a mutation to change
    high = {0x2804, 0x2904, 0x3804}  # RDBAH0, RDBAH1, TDBAH
    for recipe in (r for r in load() if r.layout == LAYOUT_E1000E_NET):
        assert not [hex(s.offset) for s in recipe.steps if s.bar == 0 and s.offset in high], recipe.name
