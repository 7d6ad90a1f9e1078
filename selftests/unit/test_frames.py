"""The NIC layouts' shared frames (model/layouts/frames.py): headers and checksums slirp accepts."""

from __future__ import annotations

from avocado_iofuzz.campaign.generator_parts import layout_part, part_fingerprints
from avocado_iofuzz.model.layouts import frames
from avocado_iofuzz.model.layouts.frames import ETH, GATEWAY_IP, GUEST_IP, IPV4

WORDS = [0x0123_4567_89AB_CDEF * k & 0xFFFF_FFFF_FFFF_FFFF for k in range(1, 33)]


def test_ipv4_frames_carry_a_header_checksum_that_sums_to_zero_and_their_own_length() -> None:
    for word in WORDS:
        for frame in (frames.icmp_echo(word), frames.dhcp_discover(word), frames.tcp_segment(word)):
            ip = frame[ETH : ETH + IPV4]
            assert frame[12:14] == b"\x08\x00" and ip[0] == 0x45 and frames.checksum(ip) == 0
            assert int.from_bytes(ip[2:4], "big") == len(frame) - ETH


def test_a_checksummed_tcp_segment_sums_to_zero_over_its_pseudo_header_and_the_offload_one_leaves_it_zero() -> None:
    for word in WORDS:
        segment = frames.tcp_segment(word, frames.TCP_SYN, word % 64, checksummed=True)
        tcp = segment[ETH + IPV4 :]
        assert tcp[13] == frames.TCP_SYN and len(tcp) == 20 + word % 64
        pseudo = GUEST_IP + GATEWAY_IP + bytes((0, frames.PROTOCOL_TCP)) + len(tcp).to_bytes(2, "big")
        assert frames.checksum(pseudo + tcp) == 0
        assert frames.tcp_segment(word)[ETH + IPV4 + 16 : ETH + IPV4 + 18] == bytes(2)


def test_arp_asks_for_its_target_with_the_lengths_and_operation_given() -> None:
    frame = frames.arp(GATEWAY_IP)
    assert len(frame) == frames.ARP_LENGTH and frame[12:14] == b"\x08\x06" and frame[18:22] == b"\x06\x04\x00\x01"
    assert frame[28:32] == GUEST_IP and frame[38:42] == GATEWAY_IP
    assert frames.arp(GATEWAY_IP, 3, (9, 1))[18:22] == b"\x09\x01\x00\x03"


def test_dhcp_is_as_long_as_slirp_requires() -> None:
    assert all(len(frames.dhcp_discover(word)) == frames.DHCP_LENGTH for word in WORDS)


def test_sharing_the_builders_left_the_e1000e_net_fill_as_it_was() -> None:
    # the part fingerprint of e1000e_net before its frames moved to frames.py (5da65a0): its fills, unchanged
    assert part_fingerprints()[layout_part("e1000e_net")] == "175731db1e07a8ab"
