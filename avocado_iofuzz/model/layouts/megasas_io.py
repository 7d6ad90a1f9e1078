"""The ``megasas_io`` scratch layout: MFI frames a MegaRAID SAS controller executes past its bring-up.

Only recipes name this layout (``recipes.toml``, ``layout = "megasas_io"``);
blind's layout choice never gives it, so what it reaches is what knowledge of
the MFI protocol adds to coverage feedback. The ``megasas`` layout draws a
command byte and a few fields per frame; this one builds what a driver posts:
an init frame whose queue info names a reply queue, producer and consumer in
the scratch memory, then frames whose every field agrees with the others --
a SCSI CDB with its allocation length, a data length, an SGL of 1-3 elements
that covers exactly that length in the data pages, a sense buffer; a DCMD
opcode with the buffer size its handler checks and its mailbox; a MODE
SELECT(6)/(10) whose parameter list (in the frame's own tail, from
``LIST_AT``) scsi-disk accepts: the caching page (write cache on or off) or
the read-write error recovery page, in half of them after a block descriptor
of 512 or 4096 bytes; an abort naming another frame's address and context
(where QEMU's ``mfi_abort_frame`` has them: 24 and 32). The frame in
``HELD_SLOT`` is always a CTRL_EVENT_WAIT, which QEMU keeps until an abort
names it: the frame in ``ABORTING_SLOT`` always does, half the other aborts
too (one in four of those with another context). The other frames follow
``PLAN`` (every SCSI command and DCMD once, LD reads and writes, aborts) from
a place the fill seed picks, one in eight any kind: one fill, all that
guided's round 0 runs of it, posts most of the commands. One frame in
eight is broken in one field (a command byte, target, CDB length, SGE count,
a null SGE, a data length the SGL does not cover; a MODE SELECT's data length
four bytes short of or eight past its CDB's): the error paths are code too.

Memory (16 KiB at ``base``)::

    0x0000  init frame (64 bytes)     0x0040  queue info    0x0060  producer, 0x0064 consumer
    0x0080  four 32-byte sense buffers
    0x0100  62 frames, one per 128 bytes (an SGL of up to 3 elements stays in its frame)
    0x2000  reply queue (QEMU writes a context per completion), and the data buffers: pages 2-3

Generator words: the init frame reads ``STRUCT_WORDS``, the frame in slot
``s`` (cell ``c = 16 + 8s``) ``STRUCT_WORDS + 2c + j`` for j = 0..2, the data
pages ``word d // 2`` per dword ``d`` (random bytes), as every layout does.
The executor (``fill_megasas_io`` in ``executor/iofuzz_exec.c``) computes the
same bytes.
"""

from __future__ import annotations

from avocado_iofuzz.model.generator import random_word
from avocado_iofuzz.model.layouts.common import LAYOUT_SIZE, dwords_of, maybe

STRUCT_WORDS = LAYOUT_SIZE // 4
QINFO, PRODUCER, CONSUMER, SENSE = 0x40, 0x60, 0x64, 0x80
SENSE_BYTES = 32
FIRST_FRAME, FRAME_BYTES, FRAMES = 0x100, 128, 62
DATA, DATA_END = 0x2000, 0x4000
REPLY_QUEUE = 0x2000  # overlaps the data: a read's data or a completion context, both from the device
REPLY_ENTRIES = 64
CONTEXT_BASE = 0x1000  # a frame's context is CONTEXT_BASE + its slot: an abort names it
BLOCK = 512

# MFI frame commands and header flags (MegaRAID MFI firmware interface)
MFI_INIT, MFI_LD_READ, MFI_LD_WRITE, MFI_LD_SCSI, MFI_PD_SCSI, MFI_DCMD, MFI_ABORT = range(7)
FLAG_SGL64, FLAG_SENSE64, FLAG_WRITE, FLAG_READ, FLAG_IEEE = 0x02, 0x04, 0x08, 0x10, 0x20
QUEUE_CONTEXT64 = 0x02
# The frame kinds, drawn from four bits: SCSI (LD, PD) 6, LD read/write 4, DCMD 5, abort 1.
FRAME_KINDS = (3, 3, 3, 4, 4, 4, 1, 1, 2, 2, 5, 5, 5, 5, 5, 6)

# A MODE SELECT's parameter list is built from the fill (see _mode_select) and lies in its frame's tail.
MODE_SELECT_LIST = -2
LIST_AT = 64  # in the frame: after an SGL of one element (at most 16 bytes from 48)
CACHING_PAGE = bytes((0x08, 0x12)) + bytes(18)  # write cache enable (byte 2, bit 2) is the one bit it may change
RW_ERROR_PAGE = bytes((0x01, 0x0A, 0x80)) + bytes(9)  # as MODE SENSE reports it: nothing to change
# SCSI commands to target 0 LUN 0: (CDB bytes before the fields filled in, CDB length, data bytes, data out).
# A length of -1: a READ/WRITE whose block count (1-8) gives the length; the LBA and count are put in
# the CDB by its length (6: 21-bit LBA, one-byte count; 10; 12; 16).
SCSI_COMMANDS: tuple[tuple[bytes, int, int, bool], ...] = (
    (b"\x00", 6, 0, False),  # TEST UNIT READY
    (b"\x12\x00\x00\x00\x60", 6, 96, False),  # INQUIRY, standard data
    (b"\x12\x01\x00\x00\xfc", 6, 252, False),  # INQUIRY VPD 0x00: supported pages
    (b"\x12\x01\x80\x00\xfc", 6, 252, False),  # VPD 0x80: serial number
    (b"\x12\x01\x83\x00\xfc", 6, 252, False),  # VPD 0x83: device identification
    (b"\x12\x01\xb0\x00\xfc", 6, 252, False),  # VPD 0xb0: block limits
    (b"\x12\x01\xb1\x00\xfc", 6, 252, False),  # VPD 0xb1: block device characteristics
    (b"\x12\x01\xb2\x00\xfc", 6, 252, False),  # VPD 0xb2: logical block provisioning
    (b"\x03\x00\x00\x00\x12", 6, 18, False),  # REQUEST SENSE
    (b"\x1a\x00\x3f\x00\xff", 6, 255, False),  # MODE SENSE(6), every page
    (b"\x1a\x08\x08\x00\xff", 6, 255, False),  # MODE SENSE(6), caching page, no block descriptors
    (b"\x5a\x00\x3f\x00\x00\x00\x00\x02\x00", 10, 512, False),  # MODE SENSE(10), every page
    (b"\x25", 10, 8, False),  # READ CAPACITY(10)
    (b"\x9e\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x20", 16, 32, False),  # READ CAPACITY(16)
    (b"\x08", 6, -1, False),  # READ(6)
    (b"\x0a", 6, -1, True),  # WRITE(6)
    (b"\x28", 10, -1, False),  # READ(10)
    (b"\x2a", 10, -1, True),  # WRITE(10)
    (b"\xa8", 12, -1, False),  # READ(12)
    (b"\xaa", 12, -1, True),  # WRITE(12)
    (b"\x88", 16, -1, False),  # READ(16)
    (b"\x8a", 16, -1, True),  # WRITE(16)
    (b"\x35", 10, 0, False),  # SYNCHRONIZE CACHE(10)
    (b"\x2f", 10, 0, False),  # VERIFY(10), no data compare
    (b"\xa0\x00\x00\x00\x00\x00\x00\x00\x01\x00", 12, 256, False),  # REPORT LUNS
    (b"\x1b\x00\x00\x00\x01", 6, 0, False),  # START STOP UNIT: start
    (b"\x2b\x00\x00\x00\x00\x10", 10, 0, False),  # SEEK(10)
    (b"\x41\x00\x00\x00\x00\x10\x00\x00\x01", 10, 512, True),  # WRITE SAME(10): one block
    (b"\x42\x00\x00\x00\x00\x00\x00\x00\x18", 10, 24, True),  # UNMAP: a 24-byte parameter list
    (b"\x15\x10", 6, MODE_SELECT_LIST, True),  # MODE SELECT(6), page format: a list in the frame's tail
    (b"\x55\x10", 10, MODE_SELECT_LIST, True),  # MODE SELECT(10)
    (b"\x04", 6, 0, False),  # FORMAT UNIT
    (b"\x43\x00\x00\x00\x00\x00\x00\x00\x0c", 10, 12, False),  # READ TOC: scsi-disk answers it on a disk too
    (b"\x9e\x12\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x20", 16, 32, False),  # GET LBA STATUS: not emulated
    (b"\x01", 6, 0, False),  # REZERO UNIT: an opcode scsi-disk does not know
)

# DCMD opcodes with the data size their handler accepts and mailbox byte 0 (a PD/LD id, a query type).
DCMDS: tuple[tuple[int, int, int], ...] = (
    (0x01010000, 2048, 0),  # CTRL_GET_INFO: struct mfi_ctrl_info is 2 KiB
    (0x01020100, 256, 0),  # CTRL_GET_PROPERTIES
    (0x01020200, 256, 0),  # CTRL_SET_PROPERTIES
    (0x01040100, 64, 0),  # CTRL_EVENT_GETINFO
    (0x01040500, 512, 0),  # CTRL_EVENT_WAIT: held until an event or an abort
    (0x01050000, 0, 0),  # CTRL_SHUTDOWN
    (0x01080101, 8, 0),  # CTRL_GET_TIME
    (0x01080102, 0, 0x12),  # CTRL_SET_TIME (the mailbox holds the time)
    (0x010C0100, 64, 0),  # CTRL_BIOS_DATA_GET
    (0x010E0201, 128, 0),  # CTRL_MFC_DEFAULTS_GET
    (0x01101000, 0, 3),  # CTRL_CACHE_FLUSH: controller and disks
    (0x02010000, 512, 0),  # PD_GET_LIST
    (0x02010100, 512, 0),  # PD_LIST_QUERY: all
    (0x02020000, 512, 0),  # PD_GET_INFO: target 0 LUN 0 (two internal INQUIRYs)
    (0x03010000, 512, 0),  # LD_GET_LIST (at most sizeof(struct mfi_ld_list))
    (0x03010100, 64, 1),  # LD_LIST_QUERY: exposed to host
    (0x03020000, 1024, 0),  # LD_GET_INFO: LD 0 (an internal VPD 0x83 INQUIRY)
    (0x04010000, 4096, 0),  # CFG_READ
    (0x08010200, 0, 0),  # CLUSTER_RESET_LD: LD 0
    (0x0100E100, 0, 0),  # CTRL_HOST_MEM_ALLOC
    (0x01030100, 8, 0),  # CTRL_ALARM_GET
    (0x01040300, 512, 0),  # CTRL_EVENT_GET
    (0x01060000, 0, 0),  # HIBERNATE_STANDBY
    (0x02030100, 0, 0),  # PD_STATE_SET
    (0x03030000, 64, 0),  # LD_GET_PROP
    (0x04020000, 0, 0),  # CFG_ADD
    (0x05010000, 64, 0),  # BBU_STATUS
    (0x08000000, 0, 0),  # CLUSTER
    (0x08010100, 0, 0),  # CLUSTER_RESET_ALL
    (0x010C0200, 64, 0),  # CTRL_BIOS_DATA_SET: not handled
    (0x01030000, 0, 0),  # CTRL_ALARM: not handled
    (0x0DEAD000, 512, 0),  # no such opcode
)

EVENT_WAIT = (0x01040500, 512, 0)
HELD_SLOT = 0  # always a CTRL_EVENT_WAIT: QEMU holds it until an abort names it, which half the aborts do
ABORTING_SLOT = 1  # always a well-formed abort of it

# A fill posts what a driver would, one of each: every SCSI command and DCMD once, LD reads and writes, aborts,
# in this order from a place the fill seed picks (the init word: ``rotation``), slot 1 on. Drawn at random
# instead, 61 frames of 74 kinds repeat some and leave a third out, and guided's round 0 runs one fill.
PLAN: tuple[tuple[int, int], ...] = (
    *((MFI_LD_SCSI, pick) for pick in range(len(SCSI_COMMANDS))),
    *((MFI_DCMD, pick) for pick in range(len(DCMDS))),
    *((kind, 0) for kind in (MFI_LD_READ, MFI_LD_READ, MFI_LD_WRITE, MFI_LD_WRITE, *(MFI_ABORT,) * 4)),
)

# Ways one frame in eight is broken (its own field, the rest stays valid).
BROKEN_COMMAND, BROKEN_TARGET, BROKEN_CDB_LEN, NO_SGE, MANY_SGES, NULL_SGE, SHORT_SGL, LONG_SGL = range(8)



def _put(buffer: bytearray, at: int, value: int, size: int = 4) -> None:
    buffer[at : at + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def _scsi_cdb(pick: int, word: int) -> tuple[bytes, int, int, bool]:
    """(16 CDB bytes, CDB length, data bytes, data out) of SCSI_COMMANDS[pick]; LBA and count from ``word``."""
    head, cdb_len, data_len, out = SCSI_COMMANDS[pick]
    cdb = bytearray(16)
    cdb[: len(head)] = head
    if data_len < 0:
        blocks = 1 + (word & 7)
        lba = (word >> 8) & 0xFFFF  # the row's disk is 64 MiB: 131072 blocks
        data_len = blocks * BLOCK
        if cdb_len == 6:
            cdb[1:4] = lba.to_bytes(3, "big")
            cdb[4] = blocks
        elif cdb_len == 10:
            cdb[2:6] = lba.to_bytes(4, "big")
            cdb[7:9] = blocks.to_bytes(2, "big")
        elif cdb_len == 12:
            cdb[2:6] = lba.to_bytes(4, "big")
            cdb[6:10] = blocks.to_bytes(4, "big")
        else:
            cdb[2:10] = lba.to_bytes(8, "big")
            cdb[10:14] = blocks.to_bytes(4, "big")
    return bytes(cdb), cdb_len, data_len, out


def _mode_select(head: bytes, word: int) -> tuple[bytes, int, bytes]:
    """(16 CDB bytes, CDB length, parameter list) of a MODE SELECT the disk accepts, from ``word``.

    The list: a header (4 bytes for the 6-byte CDB, 8 for the 10-byte one),
    in half of them a block descriptor whose block length is 4096 or 512
    (scsi-disk takes a new block size from it), then the caching page (its
    write cache bit from the word) or the read-write error recovery page.
    """
    six = head[0] == 0x15
    descriptor = b""
    if word & 1:
        block = 4096 if word & 2 else BLOCK
        descriptor = bytes(5) + block.to_bytes(3, "big")
    page = bytearray(CACHING_PAGE if word & 4 else RW_ERROR_PAGE)
    if word & 4 and word & 8:
        page[2] = 4  # write cache on (off otherwise: the disk flushes at each such MODE SELECT)
    header = bytearray(4 if six else 8)
    header[-1] = len(descriptor)
    parameters = bytes(header) + descriptor + bytes(page)
    cdb = bytearray(16)
    cdb[:2] = head
    if six:
        cdb[4] = len(parameters)
    else:
        cdb[7:9] = len(parameters).to_bytes(2, "big")
    return bytes(cdb), 6 if six else 10, parameters


def _sgl(frame: bytearray, at: int, flags: int, base: int, data_len: int, word: int, broken: int, count: int) -> None:
    """Write the SGL at ``at``: ``count`` elements covering ``data_len`` in the data pages, from ``word``."""
    covered = max(data_len, BLOCK)  # a command without data still needs an element (map_sgl refuses none)
    if broken == SHORT_SGL:
        covered = max(BLOCK, covered - BLOCK)
    elif broken == LONG_SGL:
        covered += BLOCK
    room = DATA_END - DATA - covered
    start = base + DATA + ((word >> 2) & 15) * BLOCK % (room + 1)
    size = 16 if flags & FLAG_IEEE else 12 if flags & FLAG_SGL64 else 8
    piece = covered // count
    for i in range(count):
        length = piece if i < count - 1 else covered - piece * (count - 1)
        address = 0 if broken == NULL_SGE and i == count - 1 else start + piece * i
        if size == 8:
            _put(frame, at + 8 * i, address)
            _put(frame, at + 8 * i + 4, length)
        else:
            _put(frame, at + size * i, address, 8)
            _put(frame, at + size * i + 8, length)  # the IEEE (skinny) element's flag word stays 0


def megasas_io_frame(base: int, slot: int, rotation: int, w0: int, w1: int, w2: int) -> bytes:
    """The 128 bytes of the frame in ``slot``: PLAN's entry ``slot - 1 + rotation``, one in eight any kind."""
    frame = bytearray(FRAME_BYTES)
    if maybe(w0, 24, 3):
        kind, pick = FRAME_KINDS[w0 & 15], w1
    else:
        kind, pick = PLAN[(slot - 1 + rotation) % len(PLAN)]
        if kind == MFI_LD_SCSI and w0 & 1:
            kind = MFI_PD_SCSI
    broken = (w0 >> 7) & 7 if maybe(w0, 4, 3) else -1
    if slot == HELD_SLOT:
        kind, broken = MFI_DCMD, -1
    elif slot == ABORTING_SLOT:
        kind, broken = MFI_ABORT, -1
    flags = (0, FLAG_SGL64, FLAG_IEEE | FLAG_SGL64, FLAG_SGL64)[(w0 >> 10) & 3] | ((w0 >> 12) & 1) * FLAG_SENSE64
    sense = base + SENSE + ((w0 >> 13) & 3) * SENSE_BYTES
    target, lun, sges = 0, 0, 0
    cdb_len = 0
    data_len = 0
    command = kind
    if kind in (MFI_LD_SCSI, MFI_PD_SCSI) and SCSI_COMMANDS[pick % len(SCSI_COMMANDS)][2] == MODE_SELECT_LIST:
        cdb, cdb_len, parameters = _mode_select(SCSI_COMMANDS[pick % len(SCSI_COMMANDS)][0], w1 >> 8)
        flags |= FLAG_WRITE
        _put(frame, 24, sense)
        frame[32:48] = cdb
        frame[LIST_AT : LIST_AT + len(parameters)] = parameters
        data_len = len(parameters)
        if broken == SHORT_SGL:  # the frame says less than the CDB: QEMU's "write overflow"
            data_len -= 4
        elif broken == LONG_SGL:  # more: its "write underflow"
            data_len += 8
        sges = 1
        address = 0 if broken == NULL_SGE else base + FIRST_FRAME + FRAME_BYTES * slot + LIST_AT
        size = 16 if flags & FLAG_IEEE else 12 if flags & FLAG_SGL64 else 8
        _put(frame, 48, address, 4 if size == 8 else 8)
        _put(frame, 48 + (4 if size == 8 else 8), data_len)
    elif kind in (MFI_LD_SCSI, MFI_PD_SCSI):
        cdb, cdb_len, data_len, out = _scsi_cdb(pick % len(SCSI_COMMANDS), w1 >> 8)
        flags |= FLAG_WRITE if out else FLAG_READ
        _put(frame, 24, sense)
        frame[32:48] = cdb
        sges = 1 + w2 % 3
        _sgl(frame, 48, flags, base, data_len, w2, broken, sges)
    elif kind in (MFI_LD_READ, MFI_LD_WRITE):
        blocks = 1 + ((w1 >> 8) & 7)
        flags |= FLAG_WRITE if kind == MFI_LD_WRITE else FLAG_READ
        _put(frame, 24, sense)
        _put(frame, 32, (w1 >> 16) & 0xFFFF)  # LBA low; high stays 0
        sges = 1 + w2 % 3
        _sgl(frame, 40, flags, base, blocks * BLOCK, w2, broken, sges)
        data_len = blocks  # an LD read/write's data length counts blocks
    elif kind == MFI_DCMD:
        opcode, data_len, mailbox = EVENT_WAIT if slot == HELD_SLOT else DCMDS[pick % len(DCMDS)]
        flags |= FLAG_READ
        _put(frame, 24, opcode)
        frame[28] = mailbox
        sges = 1  # a DCMD takes one element (map_dcmd refuses more)
        _sgl(frame, 40, flags, base, data_len, w2, broken, sges)
    else:  # abort: the held frame's context and address, or another frame's (one still in flight, or none)
        other = HELD_SLOT if slot == ABORTING_SLOT or (w1 >> 8) & 1 else (w1 >> 9) % FRAMES
        wrong = broken >= 0 or (slot != ABORTING_SLOT and maybe(w1, 10, 2))  # the plan's: one in four
        context = CONTEXT_BASE + other + (1 if wrong else 0)
        _put(frame, 24, context, 8)  # QEMU's mfi_abort_frame: the context at 24, the frame's address at 32
        _put(frame, 32, base + FIRST_FRAME + FRAME_BYTES * other, 8)
    if broken == BROKEN_COMMAND:
        command = 7 + (w2 >> 56) % 249  # SMP, STP, or no command at all
    elif broken == BROKEN_TARGET:
        target, lun = 1 + ((w2 >> 56) & 7), (w2 >> 60) & 1
    elif broken == BROKEN_CDB_LEN:
        cdb_len = 17 + ((w2 >> 56) & 15)
    elif broken == NO_SGE:
        sges = 0
    elif broken == MANY_SGES:
        sges = 129 + ((w2 >> 56) & 63)
    frame[0:8] = bytes((command, (18, SENSE_BYTES)[(w0 >> 15) & 1], 0, 0, target, lun, cdb_len, sges))
    _put(frame, 8, CONTEXT_BASE + slot, 8)
    _put(frame, 16, flags | ((w0 >> 16) & 0xFF) << 16)  # flags, a timeout
    _put(frame, 20, data_len)
    return bytes(frame)


def megasas_io_init(base: int, word: int) -> bytes:
    """The init frame, its queue info, producer and consumer (0x00-0x67); one in 16 asks for too many entries."""
    head = bytearray(0x80)
    _put(head, 8, CONTEXT_BASE - 1, 8)
    _put(head, 24, base + QINFO)
    entries = 0xFFFF if maybe(word, 4, 4) else REPLY_ENTRIES
    _put(head, QINFO, QUEUE_CONTEXT64 if word & 1 else 0)
    _put(head, QINFO + 4, entries)
    _put(head, QINFO + 8, base + REPLY_QUEUE, 8)
    _put(head, QINFO + 16, base + PRODUCER, 8)
    _put(head, QINFO + 24, base + CONSUMER, 8)
    return bytes(head)


def megasas_io(base: int, seed: int) -> list[int]:
    """The layout's dwords for the fill seed (see the module docstring)."""
    memory = bytearray(LAYOUT_SIZE)
    init = random_word(seed, STRUCT_WORDS)
    memory[0:0x80] = megasas_io_init(base, init)
    rotation = (init >> 16) % len(PLAN)
    for slot in range(FRAMES):
        at = FIRST_FRAME + FRAME_BYTES * slot
        words = [random_word(seed, STRUCT_WORDS + 2 * (at // 16) + j) for j in range(3)]
        memory[at : at + FRAME_BYTES] = megasas_io_frame(base, slot, rotation, *words)
    for d in range(DATA // 4, LAYOUT_SIZE // 4, 2):
        _put(memory, 4 * d, random_word(seed, d // 2), 8)
    return dwords_of(memory)
