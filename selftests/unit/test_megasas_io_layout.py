"""The megasas_io layout: MFI frames whose fields agree, read back from the bytes as the controller reads them."""

from __future__ import annotations

import struct
from collections import Counter

import pytest

from avocado_iofuzz.guided.recipes import load
from avocado_iofuzz.model.dma_layouts import LAYOUT_MEGASAS, LAYOUT_MEGASAS_IO, layout_fill
from avocado_iofuzz.model.layout_choice import LAYOUT_AUTO, choose_layouts, family_layout
from avocado_iofuzz.model.layouts.megasas_io import (
    CONSUMER,
    CONTEXT_BASE,
    DATA,
    DATA_END,
    DCMDS,
    FIRST_FRAME,
    FRAME_BYTES,
    FRAMES,
    HELD_SLOT,
    LIST_AT,
    PRODUCER,
    QINFO,
    REPLY_QUEUE,
    SENSE,
)
from avocado_iofuzz.model.pci import IORESOURCE_MEM, PciFunction, PciResource
from avocado_iofuzz.model.program import RangePlan

BASE = 0x0700_0000
SEEDS = range(0x5EED0000, 0x5EED0010)
MEGASAS = PciFunction(0, 0, 5, 0, 0x1000, 0x0060, 0x010400, (PciResource(0, 0xFEB00000, 0xFEB03FFF, IORESOURCE_MEM),))


def u32(memory: bytes, at: int) -> int:
    return int(struct.unpack_from("<I", memory, at)[0])


def u64(memory: bytes, at: int) -> int:
    return int(struct.unpack_from("<Q", memory, at)[0])


def frames(memory: bytes) -> list[bytes]:
    return [memory[FIRST_FRAME + FRAME_BYTES * s : FIRST_FRAME + FRAME_BYTES * (s + 1)] for s in range(FRAMES)]


def sgl(frame: bytes, at: int) -> list[tuple[int, int]]:
    """(address, length) of the frame's SGL elements, read by the element size its flags give."""
    flags, count = u32(frame, 16) & 0xFFFF, frame[7]
    if flags & 0x20:
        return [(u64(frame, at + 16 * i), u32(frame, at + 16 * i + 8)) for i in range(count)]
    if flags & 0x02:
        return [(u64(frame, at + 12 * i), u32(frame, at + 12 * i + 8)) for i in range(count)]
    return [(u32(frame, at + 8 * i), u32(frame, at + 8 * i + 4)) for i in range(count)]


def is_well_formed(frame: bytes) -> bool:
    """Not one of the one-in-eight broken frames: a known command to target 0 LUN 0, 1-3 elements."""
    return frame[0] <= 6 and frame[4] == frame[5] == 0 and 1 <= frame[7] <= 3 and frame[6] <= 16


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_the_init_frame_names_a_reply_queue_producer_and_consumer_in_the_scratch_memory(seed):
    memory = layout_fill(LAYOUT_MEGASAS_IO, BASE, seed)
    assert memory[0] == 0 and u32(memory, 24) == BASE + QINFO  # MFI_CMD_INIT, the queue info's address
    assert u64(memory, QINFO + 8) == BASE + REPLY_QUEUE
    assert (u64(memory, QINFO + 16), u64(memory, QINFO + 24)) == (BASE + PRODUCER, BASE + CONSUMER)
    assert u32(memory, PRODUCER) == u32(memory, CONSUMER) == 0


def test_the_frames_sgls_cover_their_data_inside_the_data_pages_and_one_in_eight_is_broken():
    broken = kinds = 0
    commands: Counter[int] = Counter()
    for seed in SEEDS:
        for slot, frame in enumerate(frames(layout_fill(LAYOUT_MEGASAS_IO, BASE, seed))):
            assert u64(frame, 8) == CONTEXT_BASE + slot  # an abort names a frame by this context
            kinds += 1
            if frame[0] == 6:  # abort: another frame's address and context (broken: the context one off)
                commands[6] += 1
                other = (u64(frame, 32) - BASE - FIRST_FRAME) // FRAME_BYTES  # as QEMU's mfi_abort_frame has them
                assert (u64(frame, 32) - BASE - FIRST_FRAME) % FRAME_BYTES == 0 and 0 <= other < FRAMES
                broken += u64(frame, 24) != CONTEXT_BASE + other
                continue
            if not is_well_formed(frame):
                broken += 1
                continue
            commands[frame[0]] += 1
            if frame[0] in (3, 4) and frame[32] in (0x15, 0x55):  # MODE SELECT: its list in its own frame
                ((address, length),) = sgl(frame, 48)
                own_tail = BASE + FIRST_FRAME + FRAME_BYTES * slot + LIST_AT
                broken += address != own_tail or length != mode_select_length(frame)
                continue
            elements = sgl(frame, 48 if frame[0] in (3, 4) else 40)
            total = sum(length for _, length in elements)
            if elements[-1][0] == 0:  # a null element (broken in the SGL, not the header)
                broken += 1
                continue
            assert all(a >= BASE + DATA and a + n <= BASE + DATA_END for a, n in elements), elements
            data_len = u32(frame, 20)
            if frame[0] in (1, 2):  # LD read/write: the data length counts 512-byte blocks
                data_len *= 512
            if frame[0] == 5:
                assert u32(frame, 24) in {opcode for opcode, _, _ in DCMDS} and frame[7] == 1
            elif total != max(data_len, 512):
                broken += 1  # an SGL one block short or long of the data
    assert set(commands) == {1, 2, 3, 4, 5, 6}
    assert 0.08 < broken / kinds < 0.2, f"{broken} of {kinds} frames broken"


def mode_select_length(frame: bytes) -> int:
    cdb = frame[32:48]
    return cdb[4] if cdb[0] == 0x15 else int.from_bytes(cdb[7:9], "big")


def mode_select_accepted(frame: bytes) -> bool:
    """What scsi-disk checks of a MODE SELECT (PF=1, SP=0) and its list, read as it reads them."""
    cdb, length = frame[32:48], mode_select_length(frame)
    listed = frame[LIST_AT : LIST_AT + length]
    header = 4 if cdb[0] == 0x15 else 8
    if cdb[1] & 0x11 != 0x10 or length < header:
        return False
    descriptor = listed[3] if cdb[0] == 0x15 else int.from_bytes(listed[6:8], "big")
    if descriptor not in (0, 8):
        return False
    if descriptor and int.from_bytes(listed[header + 5 : header + 8], "big") not in (512, 4096):
        return False
    page = listed[header + descriptor :]
    if page[0] == 0x08:  # caching: 18 bytes, only the write cache bit may differ from what MODE SENSE says
        return page[1] == 0x12 and len(page) == 20 and page[2] & ~4 == 0 and not any(page[3:])
    return page[:3] == b"\x01\x0a\x80" and len(page) == 12 and not any(page[3:])  # read-write error recovery


def test_mode_selects_carry_a_parameter_list_the_disk_accepts():
    seen: Counter[tuple[int, int, int]] = Counter()
    for seed in SEEDS:
        for frame in frames(layout_fill(LAYOUT_MEGASAS_IO, BASE, seed)):
            if frame[0] in (3, 4) and is_well_formed(frame) and frame[32] in (0x15, 0x55):
                assert mode_select_accepted(frame), frame.hex()
                header = 4 if frame[32] == 0x15 else 8
                descriptor = frame[LIST_AT + header - 1]
                seen[frame[32], descriptor, frame[LIST_AT + header + descriptor]] += 1
    assert {kind for kind, _, _ in seen} == {0x15, 0x55} and {d for _, d, _ in seen} == {0, 8}, seen
    assert {page for _, _, page in seen} == {0x01, 0x08}, seen


def test_the_held_frame_waits_for_an_event_and_about_half_the_aborts_name_it():
    held = aborts = 0
    for seed in SEEDS:
        memory = frames(layout_fill(LAYOUT_MEGASAS_IO, BASE, seed))
        frame = memory[HELD_SLOT]
        assert frame[0] == 5 and u32(frame, 24) == 0x01040500 and frame[7] == 1  # CTRL_EVENT_WAIT, one element
        assert sgl(frame, 40)[0][1] >= 512  # room for the event detail QEMU checks for
        for other in memory:
            if other[0] == 6:
                aborts += 1
                held += u64(other, 32) == BASE + FIRST_FRAME + FRAME_BYTES * HELD_SLOT
    assert 0.35 < held / aborts < 0.65, f"{held} of {aborts} aborts name the held frame"


def test_a_dcmd_gets_the_buffer_its_handler_checks_for():
    """CTRL_GET_INFO needs 2 KiB, LD_GET_LIST at most 1032 bytes, CFG_READ at most 4 KiB."""
    sizes = {opcode: size for opcode, size, _ in DCMDS}
    assert sizes[0x01010000] >= 2048 and 16 <= sizes[0x03010000] <= 1032 and sizes[0x04010000] <= 4096
    for seed in SEEDS:
        for frame in frames(layout_fill(LAYOUT_MEGASAS_IO, BASE, seed)):
            if frame[0] == 5 and is_well_formed(frame) and frame[7] == 1:
                ((address, length),) = sgl(frame, 40)
                assert address == 0 or length in (max(sizes[u32(frame, 24)], 512) + d for d in (-512, 0, 512))


def test_blind_never_gets_the_layout_only_recipes_name_it():
    assert family_layout(MEGASAS) == LAYOUT_MEGASAS
    plan = RangePlan(0, 0xFEB00000, 0xFEB03FFF, "BAR0", 1, 8, 4, "mmio", values="dma")
    assert [p.layout for p in choose_layouts([plan], [MEGASAS], LAYOUT_AUTO)] == [LAYOUT_MEGASAS]
    named = {recipe.name for recipe in load() if recipe.layout == LAYOUT_MEGASAS_IO}
    assert named == {"megasas-io", "megasas-io-msix", "megasas-io-msi"}


def test_the_fill_depends_on_the_seed_and_the_base():
    one = layout_fill(LAYOUT_MEGASAS_IO, BASE, 1)
    assert one != layout_fill(LAYOUT_MEGASAS_IO, BASE, 2)
    moved = layout_fill(LAYOUT_MEGASAS_IO, BASE + 0x10000, 1)
    assert u32(moved, 24) == u32(one, 24) + 0x10000 and u32(moved, SENSE) == u32(one, SENSE)


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_one_fill_posts_most_scsi_commands_and_dcmds_once(seed):
    """Guided's round 0 runs one fill of megasas-io: it should hold most of PLAN, not a random third of it."""
    cdbs, opcodes = set(), set()
    for frame in frames(layout_fill(LAYOUT_MEGASAS_IO, BASE, seed))[1:]:
        if frame[0] in (3, 4):  # the opcode and what tells commands with one apart (a VPD or mode page, an action)
            cdbs.add((frame[32], frame[34] if frame[32] in (0x12, 0x1A, 0x5A) else frame[33] & 0x1F))
        elif frame[0] == 5:
            opcodes.add(u32(frame, 24))
    assert len(cdbs) + len(opcodes) >= 40, (len(cdbs), len(opcodes))  # 41-56 over 215 seeds; at random about 30
