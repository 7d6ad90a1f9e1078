"""The ``lsi_scripts`` scratch layout: SCRIPTS programs that do real SCSI I/O through an LSI53C895A.

Only a recipe names this layout (``recipes.toml``, ``lsi-scripts``): blind
runs never fill it. It holds what a driver for the chip would: sixteen
SCRIPTS programs, each with its own table (the DSA area) of table-indirect
moves, message bytes and a command descriptor block drawn from the disk's
command set, and a data buffer:

* pages 0-1: program ``p`` at ``0x200 * p`` (fixed shape, 103 dwords);
* page 2: its table at ``0x2000 + 0x100 * p``, no dword of which decodes as a
  memory move (:func:`tame`: SCRIPTS started there move no megabytes);
* page 3: the data buffer, zero: what a write sends. Not random bytes: a
  DSP that random writes point into it (guided rounds fuzz the registers
  too) runs zero dwords, which the chip skips, where random bytes would
  decode as memory moves of up to 16 MB (the lsi stall in the findings).

A program does what a driver's SCRIPTS do for one command: clear the SCSI
interrupt status an earlier program left (register reads), load its DSA and
the phase-mismatch jump address (LOAD), enable that jump (a register write),
select target 0 with ATN, MSG OUT an identify (LUN, disconnect privilege, a
simple-queue tag sometimes, an SDTR/WDTR/abort message before it now and
then), COMMAND, then dispatch on the phase the target asks for: DATA IN or
DATA OUT by a CALL to up to four 4 KiB moves into the buffer, MSG IN of a
disconnect (then WAIT DISCONNECT, WAIT RESELECT, the reselection's identify),
STATUS and the COMMAND COMPLETE message; it stores SCRATCHA into its table
and jumps to the next program (or raises INT). A transfer shorter than the
move ends by the phase-mismatch jump to STATUS, as on the real chip.

Every jump goes forward (the subroutine returns to the instruction after its
call), every byte count is bounded (a memory move copies at most 16 bytes,
a data move 4 KiB into page 3), and every program ends in a jump to the next
one or an INT: a fill runs at most sixteen programs of 52 instructions and
never keeps QEMU's main loop busy (what stalled the session 7 recipe, whose
SCRIPTS were random bytes with memory moves of up to 16 MB). One program in
eight is malformed in a bounded way (a swapped phase, an odd CDB length, a
message QEMU rejects, another target).

Which generator word feeds which field is part of the layout: program ``p``
reads words ``STRUCT_WORDS + 16 p + j`` (j < 4). The C executor's
``fill_lsi_scripts`` computes the same bytes.
"""

from __future__ import annotations

from avocado_iofuzz.model.generator import random_word
from avocado_iofuzz.model.layouts.common import LAYOUT_SIZE, dwords_of, maybe

LAYOUT_LSI_SCRIPTS = "lsi_scripts"
DWORDS = LAYOUT_SIZE // 4
STRUCT_WORDS = DWORDS
PROGRAMS = 16
PROGRAM_BYTES = 0x200
TABLES = 0x2000
TABLE_BYTES = 0x100
BUFFER = 0x3000
BUFFER_BYTES = 0x1000
DISK_BLOCKS = 64 * 1024 * 1024 // 512  # the storage row's null-co disk (cfg/devices.cfg)

# SCSI phases (SSTAT1 bits 2:0) as block moves and phase compares name them.
DATA_OUT, DATA_IN, COMMAND, STATUS, MSG_OUT, MSG_IN = 0, 1, 2, 3, 6, 7

# The table (DSA-relative offsets): table-indirect entries (count, address), then the bytes they move.
T_MSGOUT, T_CMD, T_DATA, T_STATUS, T_MSGIN, T_DISC, T_RESEL, T_SELECT = 0x00, 0x08, 0x10, 0x18, 0x20, 0x28, 0x30, 0x38
T_MSGOUT_BYTES, T_CDB, T_STATUS_BYTE, T_MSGIN_BYTE, T_DISC_BYTES, T_RESEL_BYTES = 0x40, 0x50, 0x60, 0x68, 0x70, 0x78
T_STORE, T_PMJAD, T_SELF, T_COPY, T_ABORT, T_ABORT_BYTE = 0x80, 0x90, 0x98, 0xA0, 0xB0, 0xB8

# Dword indices of a program's labels (each instruction is 2 dwords, the memory-move slot 3).
_DISPATCH, _DISC, _DOUT, _DIN, _STATUS, _END, _ABORT = 23, 33, 47, 65, 83, 93, 95
PROGRAM_DWORDS = 103
CHAIN_STARTS = 8  # programs 0 and 8: where the recipes start (the first command meets the reset's UNIT ATTENTION)
DATA_MOVES = 4  # moves of at most BUFFER_BYTES per direction: transfers of up to 16 KiB complete

# Command forms: where a CDB carries its LBA and block count, or its allocation/parameter length.
NONE, RW6, LBA10, LBA12, LBA16, LEN_B4, LEN_B34, LEN_B78, LEN_B69, LEN_B1013 = range(10)
PAGE_NONE, PAGE_VPD, PAGE_MODE, PAGE_REPORT = range(4)
# (opcode, CDB length, form, byte 1 fixed bits, byte 1 random bits, byte 2 kind): a scsi-hd's command set
COMMANDS = (
    (0x00, 6, NONE, 0, 0, PAGE_NONE),  # TEST UNIT READY
    (0x12, 6, LEN_B34, 0, 0x01, PAGE_VPD),  # INQUIRY (EVPD at random)
    (0x12, 6, LEN_B34, 0x01, 0, PAGE_VPD),  # INQUIRY, VPD page
    (0x25, 10, NONE, 0, 0, PAGE_NONE),  # READ CAPACITY(10)
    (0x9E, 16, LEN_B1013, 0x10, 0, PAGE_NONE),  # SERVICE ACTION IN: READ CAPACITY(16)
    (0x08, 6, RW6, 0, 0, PAGE_NONE),  # READ(6)
    (0x28, 10, LBA10, 0, 0x08, PAGE_NONE),  # READ(10), FUA at random
    (0x28, 10, LBA10, 0, 0x08, PAGE_NONE),
    (0xA8, 12, LBA12, 0, 0x08, PAGE_NONE),  # READ(12)
    (0x88, 16, LBA16, 0, 0x08, PAGE_NONE),  # READ(16)
    (0x0A, 6, RW6, 0, 0, PAGE_NONE),  # WRITE(6)
    (0x2A, 10, LBA10, 0, 0x08, PAGE_NONE),  # WRITE(10)
    (0x2A, 10, LBA10, 0, 0x08, PAGE_NONE),
    (0xAA, 12, LBA12, 0, 0x08, PAGE_NONE),  # WRITE(12)
    (0x8A, 16, LBA16, 0, 0x08, PAGE_NONE),  # WRITE(16)
    (0x2F, 10, LBA10, 0, 0x02, PAGE_NONE),  # VERIFY(10), BYTCHK at random
    (0x8F, 16, LBA16, 0, 0x02, PAGE_NONE),  # VERIFY(16)
    (0x35, 10, LBA10, 0, 0x02, PAGE_NONE),  # SYNCHRONIZE CACHE(10), IMMED at random
    (0x91, 16, LBA16, 0, 0x02, PAGE_NONE),  # SYNCHRONIZE CACHE(16)
    (0x1A, 6, LEN_B4, 0, 0x08, PAGE_MODE),  # MODE SENSE(6), DBD at random
    (0x5A, 10, LEN_B78, 0, 0x08, PAGE_MODE),  # MODE SENSE(10)
    (0x15, 6, LEN_B4, 0x10, 0x01, PAGE_NONE),  # MODE SELECT(6), PF
    (0x55, 10, LEN_B78, 0x10, 0x01, PAGE_NONE),  # MODE SELECT(10)
    (0x03, 6, LEN_B4, 0, 0, PAGE_NONE),  # REQUEST SENSE
    (0x1B, 6, LEN_B4, 0, 0x01, PAGE_NONE),  # START STOP UNIT (byte 4: start, loej, power condition)
    (0x42, 10, LEN_B78, 0, 0x01, PAGE_NONE),  # UNMAP (a parameter list from the buffer)
    (0x41, 10, LBA10, 0, 0x08, PAGE_NONE),  # WRITE SAME(10), UNMAP bit at random
    (0x93, 16, LBA16, 0, 0x08, PAGE_NONE),  # WRITE SAME(16)
    (0xA0, 12, LEN_B69, 0, 0, PAGE_REPORT),  # REPORT LUNS
    (0x2B, 10, LBA10, 0, 0, PAGE_NONE),  # SEEK(10)
    (0x1E, 6, LEN_B4, 0, 0, PAGE_NONE),  # PREVENT ALLOW MEDIUM REMOVAL
    (0x04, 6, NONE, 0, 0, PAGE_NONE),  # FORMAT UNIT
)
# One command in two is a READ or WRITE (6, 10, 12, 16): the disk's data path, what a driver mostly sends.
READ_WRITE = (5, 6, 8, 9, 10, 11, 13, 14)  # indices into COMMANDS
VPD_PAGES = (0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2, 0x89, 0xC0)
MODE_PAGES = (0x3F, 0x08, 0x01, 0x04, 0x05, 0x0A, 0x1C, 0x00)
# Messages a driver may send before its identify (whole, so their lengths are right): none, SDTR, WDTR,
# PPR, NOP, ABORT, BUS DEVICE RESET, ABORT TAG -- and MESSAGE REJECT, which QEMU does not take.
PREFIXES = (
    (), (0x01, 0x03, 0x01, 0x0C, 0x08), (0x01, 0x02, 0x03, 0x01), (0x01, 0x06, 0x04, 0x09, 0, 0x3E, 0x01, 0x02),
    (0x08,), (0x06,), (0x0C,), (0x0D,), (0x07,),
)  # fmt: skip



def blocks(word: int) -> int:
    """A transfer length in blocks: 1-8 mostly, 0 one in 16, 9-31 one in 8, a large one one in 16."""
    pick = (word >> 40) & 15
    if pick == 0:
        return 0
    if pick <= 12:
        return 1 + ((word >> 44) & 7)
    if pick <= 14:
        return 9 + ((word >> 48) & 15) % 23
    return 0x100 + ((word >> 48) & 0xFFFF)


def lba(word: int) -> int:
    """An LBA inside the disk (7 in 8), else at or past its end."""
    if maybe(word, 0, 3):
        return (DISK_BLOCKS - 1, DISK_BLOCKS, 0xFFFF_FFFF, DISK_BLOCKS + ((word >> 8) & 0xFFFF))[(word >> 3) & 3]
    return ((word >> 8) & 0xFFFF_FFFF) % (DISK_BLOCKS - 32)


def cdb(w1: int, w2: int) -> tuple[list[int], int]:
    """A command descriptor block (16 bytes, zero padded) and its length, from the command table."""
    pick = READ_WRITE[(w1 >> 6) & 7] if maybe(w1, 5, 1) else w1 & 31
    opcode, length, form, fixed, random_bits, page_kind = COMMANDS[pick]
    out = [0] * 16
    out[0] = opcode
    out[1] = fixed | ((w1 >> 8) & 0xFF & random_bits)
    if page_kind == PAGE_VPD:
        out[2] = VPD_PAGES[(w1 >> 16) & 7]
    elif page_kind == PAGE_MODE:
        out[2] = ((w1 >> 19) & 3) << 6 | MODE_PAGES[(w1 >> 16) & 7]
    elif page_kind == PAGE_REPORT:
        out[2] = (w1 >> 16) & 3
    count, address = blocks(w2), lba(w2)
    amount = 4 + ((w1 >> 24) & 0xFF)  # an allocation or parameter list length
    if form == RW6:
        out[1:5] = [(address >> 16) & 0x1F, (address >> 8) & 0xFF, address & 0xFF, count & 0xFF]
    elif form == LBA10:
        out[2:6] = (address & 0xFFFF_FFFF).to_bytes(4, "big")
        out[7:9] = (count & 0xFFFF).to_bytes(2, "big")
    elif form == LBA12:
        out[2:6] = (address & 0xFFFF_FFFF).to_bytes(4, "big")
        out[6:10] = count.to_bytes(4, "big")
    elif form == LBA16:
        out[2:10] = address.to_bytes(8, "big")
        out[10:14] = count.to_bytes(4, "big")
    elif form == LEN_B4:
        out[4] = amount & 0xFF
    elif form == LEN_B34:
        out[3:5] = amount.to_bytes(2, "big")
    elif form == LEN_B78:
        out[7:9] = amount.to_bytes(2, "big")
    elif form == LEN_B69:
        out[6:10] = amount.to_bytes(4, "big")
    elif form == LEN_B1013:
        out[10:14] = amount.to_bytes(4, "big")
    return out, length


def _put_bytes(dwords: list[int], at: int, data: list[int]) -> None:
    """Little-endian bytes at byte offset ``at`` (a multiple of 4) of the layout."""
    words = dwords_of(bytes(data))
    dwords[at // 4 : at // 4 + len(words)] = words


def _program(base: int, p: int, words: list[int]) -> tuple[list[int], list[int]]:
    """Program ``p``'s dwords and its table's dwords."""
    w0, w1, w2, w3 = words
    prog = base + PROGRAM_BYTES * p
    table = base + TABLES + TABLE_BYTES * p

    def at(label: int) -> int:
        return prog + 4 * label

    start = p % CHAIN_STARTS == 0  # where a recipe starts SCRIPTS: never malformed, never the last
    malformed = not start and maybe(w0, 20, 3)
    kind = (w0 >> 23) & 3 if malformed else -1
    pmj = not maybe(w0, 0, 4)
    target = (w0 >> 10) & 7 if kind == 3 else 0
    lun = (w0 >> 31) & 7 if maybe(w0, 28, 3) else 0
    tagged = maybe(w0, 26, 2)
    data_count = BUFFER_BYTES if not maybe(w0, 14, 2) else 512 * (1 + ((w0 >> 16) & 7))
    last = p == PROGRAMS - 1 or (not start and maybe(w0, 13, 4))
    msg_phase, cmd_phase = (COMMAND, MSG_OUT) if kind == 0 else (MSG_OUT, COMMAND)

    code = [
        0x7242_0000, 0,  # MOVE SIST0 | 0 TO SFBR: reading clears what an earlier program left (a select timeout
        0x7243_0000, 0,  # MOVE SIST1 | 0 TO SFBR  stops every later bus instruction until it is read)
        0xE110_0004, table + T_SELF,  # LOAD DSA, 4 bytes: this program's table
        0xF1C0_0004, T_PMJAD,  # LOAD PMJAD1, 4 bytes, DSA-relative: the STATUS label
        0x7856_0000 | (0x80 if pmj else 0) << 8, 0,  # MOVE 0x80 TO CCNTL0: jump on phase mismatch
    ]
    if maybe(w0, 3, 2):  # MOVE MEMORY: a copy of the CDB (at most 16 bytes)
        code += [0xC000_0000 | (1 + ((w0 >> 44) & 15)), table + T_CDB, table + T_COPY]
    else:  # a NOP, then an empty dword (the chip skips it)
        code += [0x8000_0000, 0, 0]
    # SELECT ATN, the target ID from the table or the instruction (QEMU takes bit 3 for ATN); still connected
    # (an earlier program stopped in a phase): on to the dispatch, which moves the target to its status
    if (w0 >> 5) & 1:
        code += [0x4300_0000 | T_SELECT, at(_DISPATCH)]
    else:
        code += [0x4100_0008 | target << 16, at(_DISPATCH)]
    code += [
        0x7243_0000, 0,  # MOVE SIST1 | 0 TO SFBR: a select timeout (no such target) read and cleared
        0x8602_0000, at(_END),  # JUMP end, IF NOT MSG_OUT: not selected, the next program
        0x1800_0000 | msg_phase << 24, T_MSGOUT,  # MOVE FROM msgout WHEN MSG_OUT
        0x1800_0000 | cmd_phase << 24, T_CMD,  # MOVE FROM command WHEN COMMAND
    ]
    assert len(code) == _DISPATCH
    code += [
        0x800A_0000 | STATUS << 24, at(_STATUS),  # JUMP status, IF STATUS
        0x800A_0000 | MSG_IN << 24, at(_DISC),  # JUMP disconnected, IF MSG_IN
        0x880A_0000 | DATA_OUT << 24, at(_DOUT),  # CALL data_out, IF DATA_OUT
        0x880A_0000 | DATA_IN << 24, at(_DIN),  # CALL data_in, IF DATA_IN
        0x8008_0000, at(_STATUS),  # JUMP status
    ]
    assert len(code) == _DISC
    code += [
        0x1F00_0000, T_DISC,  # MOVE FROM disconnect WHEN MSG_IN: SAVE DATA POINTER, DISCONNECT
        0x4800_0000, 0,  # WAIT DISCONNECT
        0x5000_0000, at(_ABORT),  # WAIT RESELECT
        0x1F00_0000, T_RESEL,  # MOVE FROM reselect WHEN MSG_IN: the identify (and tag)
        0x880A_0000 | DATA_OUT << 24, at(_DOUT),
        0x880A_0000 | DATA_IN << 24, at(_DIN),
        0x8008_0000, at(_STATUS),
    ]
    in_phase = DATA_OUT if kind == 2 else DATA_IN
    for phase in (DATA_OUT, in_phase):  # the subroutines: up to four moves, return once the phase changes
        for _ in range(DATA_MOVES):
            code += [0x1800_0000 | phase << 24, T_DATA, 0x9002_0000 | phase << 24, 0]
        code += [0x9008_0000, 0]  # RETURN
    assert len(code) == _STATUS
    end = [0x9808_0000, 0x1000 | p] if last else [0x8008_0000, prog + PROGRAM_BYTES]
    code += [
        0x8302_0000, at(_ABORT),  # JUMP abort, IF NOT STATUS (a phase no move here takes)
        0x1B00_0000, T_STATUS,  # MOVE FROM status WHEN STATUS
        0x1F00_0000, T_MSGIN,  # MOVE FROM message WHEN MSG_IN: COMMAND COMPLETE
        0x4800_0000, 0,  # WAIT DISCONNECT
        0xF034_0004, T_STORE,  # STORE SCRATCHA, 4 bytes, DSA-relative
    ]
    assert len(code) == _END
    code += [
        *end,  # JUMP next program, or INT
        # abort: what a driver does with a target in an unexpected phase; ABORT cancels the request and
        # disconnects, so the next program selects again (no bus reset: its interrupt would stop SCRIPTS)
        0x5800_0008, 0,  # SET ATN: the target goes to MSG OUT
        0x1E00_0000, T_ABORT,  # MOVE FROM abort WHEN MSG_OUT: ABORT
        0x6000_0008, 0,  # CLEAR ATN
        0x8008_0000, at(_END),  # JUMP end
    ]
    assert len(code) == PROGRAM_DWORDS

    identify = (0xC0 if (w0 >> 34) & 1 else 0x80) | lun
    message = [*PREFIXES[(w3 & 15) % len(PREFIXES)]] if maybe(w3, 4, 2) or kind == 1 else []
    message += [identify] + ([0x20, (w0 >> 40) & 0xFF] if tagged else [])
    command, length = cdb(w1, w2)
    if kind == 2:
        length = 1 + ((w3 >> 8) & 15)
    entries = [
        len(message), table + T_MSGOUT_BYTES, length, table + T_CDB, data_count, base + BUFFER,
        1, table + T_STATUS_BYTE, 1, table + T_MSGIN_BYTE, 2, table + T_DISC_BYTES, 3, table + T_RESEL_BYTES,
        target << 16, 0,
    ]  # fmt: skip
    rows = [0] * (TABLE_BYTES // 4)
    rows[: len(entries)] = entries
    _put_bytes(rows, T_MSGOUT_BYTES, message)
    _put_bytes(rows, T_CDB, command)
    rows[T_PMJAD // 4] = at(_STATUS)
    rows[T_SELF // 4] = table
    rows[T_ABORT // 4 : T_ABORT // 4 + 2] = [1, table + T_ABORT_BYTE]
    rows[T_ABORT_BYTE // 4] = 0x06  # ABORT
    return code, [tame(row) for row in rows]


def tame(dword: int) -> int:
    """A table dword that would decode as a memory move (top bits 110) with bit 31 clear: an I/O instruction.

    Why: a DSP that guided's dma values point at a table (16-byte aligned) runs it as SCRIPTS; a CDB's LBA or
    length byte, or a tag, at a dword's top byte made memory moves of up to 16 MB there (1 in 8 such bytes).
    """
    return dword & ~0x8000_0000 if dword >> 29 == 0b110 else dword


def lsi_scripts(base: int, seed: int) -> list[int]:
    dwords = [0] * DWORDS
    for p in range(PROGRAMS):
        words = [random_word(seed, STRUCT_WORDS + 16 * p + j) for j in range(4)]
        code, rows = _program(base, p, words)
        first = PROGRAM_BYTES * p // 4
        dwords[first : first + len(code)] = [d & 0xFFFF_FFFF for d in code]
        first = (TABLES + TABLE_BYTES * p) // 4
        dwords[first : first + len(rows)] = [d & 0xFFFF_FFFF for d in rows]
    return dwords  # the buffer stays zero (see the module's docstring)
