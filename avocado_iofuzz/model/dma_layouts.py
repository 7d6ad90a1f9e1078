"""Device layouts of the scratch memory: fills that look like one device family's DMA structures.

The ``generic`` fill (:func:`avocado_iofuzz.model.dma.scratch_fill`) is a ring
of 16-byte descriptors and random buffers: a DMA engine walks it, but stops at
its first check (a UHCI TD's active bit and PID, an EHCI qTD's status, an
e1000 TX descriptor's command and length). A device layout makes most of the
16 KiB *valid-looking* structures of one family, so the engine goes on to the
packet, frame or request: the fields a device checks first are drawn from the
values it accepts, the fields it checks late (addresses, lengths, toggles,
flags) stay random, and every pointer stays inside the scratch memory.

Each layout is a pure function of the fill seed (:func:`fill_dwords`), drawn
from the same counter-based generator as everything else; the in-guest executor
(``executor/iofuzz_exec.c``, ``fill_layout``) computes the same bytes and a
unit test compares both for every layout. Which generator word feeds which
field is part of the layout: the structure at 16-byte cell ``c`` reads words
``STRUCT_WORDS + 2c + j``; the words below ``STRUCT_WORDS`` feed what is not
cut in cells (dword ``k`` of a frame list, e1000's frame bytes, virtio's
available ring).
"""

from __future__ import annotations

from collections.abc import Callable

from avocado_iofuzz.model.generator import random_word
from avocado_iofuzz.model.layouts import e1000e_net, virtio_blk_req
from avocado_iofuzz.model.layouts.common import LAYOUT_SIZE, maybe
from avocado_iofuzz.model.layouts.ehci_msd import ehci_msd
from avocado_iofuzz.model.layouts.lsi_scripts import LAYOUT_LSI_SCRIPTS, lsi_scripts
from avocado_iofuzz.model.layouts.megasas_io import megasas_io
from avocado_iofuzz.model.layouts.virtio_net import LAYOUT_VIRTIO_NET_MODERN, virtio_net_modern_dwords

LAYOUT_GENERIC = "generic"
LAYOUT_UHCI = "uhci"
LAYOUT_EHCI = "ehci"
LAYOUT_E1000 = "e1000"
LAYOUT_VIRTIO = "virtio"
LAYOUT_NVME = "nvme"
LAYOUT_MEGASAS = "megasas"
LAYOUT_AHCI = "ahci"
LAYOUT_EHCI_MSD = "ehci_msd"  # only the ehci-msd recipe names it (model/layouts/ehci_msd.py)
LAYOUT_VIRTIO_BLK_REQ = "virtio_blk_req"  # only a recipe names it (model/layouts/virtio_blk_req.py)
LAYOUT_MEGASAS_IO = "megasas_io"  # recipes only (recipes.toml): MFI frames a driver would post
LAYOUT_E1000E_NET = "e1000e_net"  # only recipes name it (model/layouts/e1000e_net.py)
# The layouts a RangePlan may carry (its ``layout`` field); the first is the default; the
# executor's enum follows this order.
LAYOUTS = (
    LAYOUT_GENERIC, LAYOUT_UHCI, LAYOUT_EHCI, LAYOUT_E1000, LAYOUT_VIRTIO, LAYOUT_NVME, LAYOUT_MEGASAS, LAYOUT_AHCI,
    LAYOUT_EHCI_MSD,
    LAYOUT_VIRTIO_BLK_REQ,
    LAYOUT_MEGASAS_IO,
    LAYOUT_E1000E_NET,
    LAYOUT_VIRTIO_NET_MODERN,
    LAYOUT_LSI_SCRIPTS,  # recipe-only (guided/recipes.toml, lsi-scripts): blind's layout choice never names it
)  # fmt: skip
PAGE = 0x1000
DWORDS = LAYOUT_SIZE // 4
# First generator word of the structures; words 0..DWORDS-1 feed frame lists dword by dword.
STRUCT_WORDS = DWORDS

# USB PIDs (token byte) and the UHCI/EHCI bits the schedules check first.
PID_SETUP, PID_IN, PID_OUT = 0x2D, 0x69, 0xE1
UHCI_TD_ACTIVE = 1 << 23
UHCI_TD_CERR3 = 3 << 27
EHCI_QTD_ACTIVE = 0x80
EHCI_QTD_CERR3 = 3 << 10
EHCI_LINK_QH = 1 << 1  # a periodic or horizontal link's type field (bits 2:1) = QH
EHCI_QH_HEAD = 1 << 15  # H: head of the reclamation list, which the async walk looks for

# e1000 transmit descriptor command bits (legacy CMD and extended DCMD share them).
TX_EOP, TX_IFCS, TX_IC_TSE, TX_RS, TX_DEXT, TX_VLE = 0x01, 0x02, 0x04, 0x08, 0x20, 0x40
TX_DTYP_DATA = 1 << 20
MIN_FRAME, MAX_FRAME = 14, 1514


def _word(seed: int, k: int) -> int:
    return random_word(seed, k)


def _random_tail(dwords: list[int], first_byte: int, seed: int) -> None:
    """Random bytes from ``first_byte`` to the end (data buffers, frames): word ``d // 2`` fills dwords d, d+1."""
    for d in range(first_byte // 4, DWORDS, 2):
        word = _word(seed, d // 2)
        dwords[d : d + 2] = [word & 0xFFFF_FFFF, word >> 32]



# --- uhci ---------------------------------------------------------------------------
# Pages 0 and 2: frame lists (1024 link pointers each). Pages 1 and 3: 16-byte
# cells, a QH at every 8th, TDs in the others. A frame list base register
# drawn from the dictionary (a scratch page) hits a frame list one time in two.


def _uhci_cell_address(base: int, word: int, qh: bool) -> int:
    cell = (0x100 if (word >> 16) & 1 == 0 else 0x300) + ((word >> 8) & 0xFF)
    cell = cell & ~7 if qh else cell | (1 if cell % 8 == 0 else 0)
    return base + cell * 16


def uhci_link(base: int, word: int) -> int:
    """A UHCI link pointer: a TD or (one in four) a QH cell; terminate one in 16, depth-first at random."""
    qh = maybe(word, 4, 2)
    terminate = 1 if maybe(word, 0, 4) else 0
    return _uhci_cell_address(base, word, qh) | (2 if qh else 0) | ((word >> 6) & 1) << 2 | terminate


def uhci_td(base: int, w0: int, w1: int) -> tuple[int, int, int, int]:
    """A transfer descriptor: active (15 in 16), SETUP/IN/OUT to device 0 endpoint 0 mostly, <= 64 bytes."""
    link = uhci_link(base, w0 & 0xFFFF_FFFF)
    ctrl = UHCI_TD_CERR3 | 0x7FF
    if not maybe(w0, 32, 4):
        ctrl |= UHCI_TD_ACTIVE
    ctrl |= ((w0 >> 36) & 1) << 24 | ((w0 >> 37) & 1) << 29 | (1 << 26 if maybe(w0, 38, 3) else 0)
    pick = w1 & 7
    pid = (PID_SETUP, PID_SETUP, PID_IN, PID_IN, PID_IN, PID_OUT, PID_OUT, (w1 >> 56) & 0xFF)[pick]
    device = 0 if (w1 >> 5) & 3 else (w1 >> 3) & 3
    endpoint = 0 if (w1 >> 9) & 3 else (w1 >> 7) & 3
    if pid == PID_SETUP:
        maxlen = 7
    elif maybe(w1, 18, 4):
        maxlen = 0x7FF  # a null packet
    else:
        maxlen = (w1 >> 12) & 63
    token = pid | device << 8 | endpoint << 15 | ((w1 >> 11) & 1) << 19 | maxlen << 21
    buffer = base + ((w1 >> 24) & (LAYOUT_SIZE - 1) & ~0x3F)  # 64-aligned: 64 bytes stay inside
    return link, ctrl, token, buffer


def _uhci(base: int, seed: int) -> list[int]:
    dwords = [0] * DWORDS
    for page in (0, 2):
        for e in range(PAGE // 4):
            d = page * PAGE // 4 + e
            dwords[d] = uhci_link(base, _word(seed, d) & 0xFFFF_FFFF)
    for page in (1, 3):
        for c in range(page * PAGE // 16, (page + 1) * PAGE // 16):
            w0, w1 = _word(seed, STRUCT_WORDS + 2 * c), _word(seed, STRUCT_WORDS + 2 * c + 1)
            if c % 8 == 0:  # a QH: horizontal link, element link, then two spare words
                cell = (uhci_link(base, w0 & 0xFFFF_FFFF), uhci_link(base, w0 >> 32), w1 & 0xFFFF_FFFF, w1 >> 32)
            else:
                cell = uhci_td(base, w0, w1)
            dwords[4 * c : 4 * c + 4] = cell
    return dwords


# --- ehci ---------------------------------------------------------------------------
# Page 0: the periodic frame list (links to QHs). Pages 1-2: 128 queue heads,
# one per 64 bytes (48 used). Page 3: 128 qTDs of 32 bytes.

_EHCI_QH_FIRST = 0x1000
_EHCI_QTD_FIRST = 0x3000


def _ehci_qh_address(base: int, word: int) -> int:
    return base + _EHCI_QH_FIRST + ((word >> 8) & 127) * 64


def _ehci_qtd_pointer(base: int, word: int, terminate_bits: int) -> int:
    """A qTD pointer; terminate (bit 0) one time in 2**terminate_bits."""
    return base + _EHCI_QTD_FIRST + ((word >> 8) & 127) * 32 | (1 if maybe(word, 0, terminate_bits) else 0)


def ehci_link(base: int, word: int) -> int:
    """A periodic or horizontal link: a QH (7 in 8, else any type), terminate one in 16."""
    kind = EHCI_LINK_QH if not maybe(word, 4, 3) else ((word >> 16) & 3) << 1
    return _ehci_qh_address(base, word) | kind | (1 if maybe(word, 0, 4) else 0)


def ehci_qtd_token(word: int) -> int:
    """A qTD token: active (15 in 16), PID OUT/IN/SETUP, 3 retries, <= 64 bytes (SETUP: 8)."""
    pid = (word >> 4) % 3
    total = 8 if pid == 2 else (word >> 8) & 127 if maybe(word, 15, 2) else (word >> 8) & 63
    token = pid << 8 | EHCI_QTD_CERR3 | total << 16 | ((word >> 16) & 1) << 15 | ((word >> 17) & 1) << 31
    return token | (0 if maybe(word, 0, 4) else EHCI_QTD_ACTIVE)


def _ehci_buffers(base: int, word: int) -> list[int]:
    """Buffer pointers: the first a 64-aligned address (a transfer of <= 64 bytes stays in its page), then pages."""
    first = base + ((word >> 20) & (LAYOUT_SIZE - 1) & ~0x3F)
    return [first] + [base + ((word >> (32 + 2 * i)) & 3) * PAGE for i in range(4)]


def ehci_qh(base: int, words: list[int]) -> list[int]:
    w0, w1, w2, w3 = words
    device = 0 if (w0 >> 5) & 3 else (w0 >> 3) & 3
    endpoint = 0 if (w0 >> 9) & 3 else (w0 >> 7) & 3
    speed = 2 if not maybe(w0, 11, 2) else (w0 >> 13) & 3
    maxpacket = (8, 64, 512, 64)[(w0 >> 15) & 3]
    head = EHCI_QH_HEAD if maybe(w0, 17, 2) else 0
    epchar = device | endpoint << 8 | speed << 12 | ((w0 >> 19) & 1) << 14 | head | maxpacket << 16
    epchar |= ((w0 >> 20) & 15) << 28  # NAK reload
    smask = 0 if maybe(w0, 24, 1) else (w0 >> 25) & 0xFF
    epcap = smask | (1 + (w0 >> 33) % 3) << 30
    overlay = ehci_qtd_token(w2 >> 32) if maybe(w0, 40, 2) else 0  # mostly inactive: the walk fetches next_qtd
    return [
        ehci_link(base, w1 & 0xFFFF_FFFF),
        epchar,
        epcap,
        _ehci_qtd_pointer(base, w1 >> 32, 8) & ~1,  # current qTD
        _ehci_qtd_pointer(base, w2 & 0xFFFF_FFFF, 3),  # next qTD
        _ehci_qtd_pointer(base, w2 >> 40, 1),  # alternate next
        overlay,
        *_ehci_buffers(base, w3),
        0,
        0,
        0,
        0,
    ]


def ehci_qtd(base: int, w0: int, w1: int) -> list[int]:
    return [
        _ehci_qtd_pointer(base, w0 & 0xFFFF_FFFF, 2),
        _ehci_qtd_pointer(base, w0 >> 32, 1),
        ehci_qtd_token(w1 & 0xFFFF_FFFF),
        *_ehci_buffers(base, w1 >> 8),
    ]


def _ehci(base: int, seed: int) -> list[int]:
    dwords = [0] * DWORDS
    for d in range(PAGE // 4):
        dwords[d] = ehci_link(base, _word(seed, d) & 0xFFFF_FFFF)
    for q in range(128):
        c = (_EHCI_QH_FIRST + q * 64) // 16
        words = [_word(seed, STRUCT_WORDS + 2 * c + j) for j in range(4)]
        dwords[4 * c : 4 * c + 16] = ehci_qh(base, words)
    for t in range(128):
        c = (_EHCI_QTD_FIRST + t * 32) // 16
        w0, w1 = _word(seed, STRUCT_WORDS + 2 * c), _word(seed, STRUCT_WORDS + 2 * c + 1)
        dwords[4 * c : 4 * c + 8] = ehci_qtd(base, w0, w1)
    return dwords


# --- e1000 --------------------------------------------------------------------------
# Pages 0-1: 512 transmit descriptors, legacy data (1/2), extended data (3/8)
# and context (1/8); their first quadword is a buffer address, so the same
# pages serve as receive descriptors. Pages 2-3: the frames' buffers.

_E1000_BUFFERS = 0x2000


def e1000_descriptor(base: int, w0: int, w1: int) -> list[int]:
    kind = w0 & 7
    if kind == 7:  # context: IPv4 + TCP offsets of an Ethernet frame, TSE at random, an MSS
        tucmd = TX_DEXT | (TX_IC_TSE if (w1 >> 2) & 1 else 0) | (w1 & 3)
        paylen = (w1 >> 8) & 0x1FFF
        mss = 64 + ((w1 >> 24) & 0x7FF) % 1397
        return [14 | 24 << 8 | 33 << 16, 34 | 50 << 8, paylen | tucmd << 24, 54 << 8 | mss << 16]
    address = base + _E1000_BUFFERS + ((w0 >> 8) & 0x7FE)
    length = MIN_FRAME + ((w0 >> 20) & 0x7FF) % (MAX_FRAME - MIN_FRAME + 1)
    command = TX_IFCS | TX_RS | (0 if maybe(w0, 32, 2) else TX_EOP)  # one in four continues a packet
    command |= (TX_VLE if maybe(w0, 34, 3) else 0) | ((w0 >> 37) & 1) * TX_IC_TSE
    special = (w1 >> 16) & 0xFFFF
    if kind < 4:  # legacy
        return [address & 0xFFFF_FFFF, address >> 32, length | command << 24, special << 16]
    popts = (w1 >> 8) & 3  # IXSM, TXSM
    extended = length | TX_DTYP_DATA | (command | TX_DEXT) << 24
    return [address & 0xFFFF_FFFF, address >> 32, extended, popts << 8 | special << 16]


def _e1000(base: int, seed: int) -> list[int]:
    dwords = [0] * DWORDS
    for c in range(_E1000_BUFFERS // 16):
        w0, w1 = _word(seed, STRUCT_WORDS + 2 * c), _word(seed, STRUCT_WORDS + 2 * c + 1)
        dwords[4 * c : 4 * c + 4] = e1000_descriptor(base, w0, w1)
    _random_tail(dwords, _E1000_BUFFERS, seed)  # frames: random bytes
    return dwords


# --- virtio -------------------------------------------------------------------------
# One split virtqueue of 256 entries, each part page aligned: page 0 the
# descriptor table, page 1 the available ring, page 2 the used ring (zero: the
# device writes it), page 3 the requests' memory: 16-byte request headers
# (virtio-blk's type and sector; a NIC reads the first 10 or 12 bytes as its
# virtio-net header), then status bytes, then four 512-byte data buffers.
#
# The table is cut in 85 chains of three descriptors (the last one spare), each
# shaped like a driver's request, as virtio-blk parses it: a readable 16-byte
# header, a 512- or 1024-byte data buffer (readable for a write, writable for a
# read or GET_ID), a writable status byte. A NIC's transmit path takes the
# readable part (header and, for a write, the buffer) as header plus frame. One
# chain in 32 is drawn descriptor by descriptor at random instead, and one
# available-ring entry in 32 names any descriptor: malformed chains find bugs too.

VIRTIO_QUEUE = 256
VIRTQ_NEXT, VIRTQ_WRITE, VIRTQ_INDIRECT = 1, 2, 4
VIRTIO_CHAIN = 3  # descriptors of a request: header, data, status
VIRTIO_CHAINS = VIRTIO_QUEUE // VIRTIO_CHAIN
BLK_OUTHDR = 16  # type, ioprio, sector
_VIRTIO_AVAIL_WORDS = 0x400  # generator words of the available ring
_VIRTIO_HEADERS = 0x3000
_VIRTIO_STATUS = 0x3600  # one byte per chain
_VIRTIO_DATA = 0x3800  # four 512-byte buffers
BLK_SECTOR = 512
BLK_T_IN, BLK_T_OUT, BLK_T_FLUSH, BLK_T_GET_ID = 0, 1, 4, 8
# IN and OUT 3 in 4 (what reaches the block layer), FLUSH, GET_ID; one in 8 any
BLK_TYPES = (0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 4, 8)


def virtio_descriptor(base: int, index: int, w0: int, w1: int) -> list[int]:
    """A random descriptor: chained on (1 in 2) to one of the next 4, device-writable 1 in 2, indirect 1 in 32."""
    flags = (w0 & 1) * VIRTQ_NEXT | ((w0 >> 1) & 1) * VIRTQ_WRITE
    following = (index + 1 + ((w0 >> 8) & 3)) % VIRTIO_QUEUE
    if maybe(w0, 2, 5):  # an indirect table: descriptors of the table itself
        flags = VIRTQ_INDIRECT
        address = base + ((w1 >> 8) & 0xFF) * 16
        length = 16 * (1 + ((w1 >> 16) & 7))
    else:
        address = base + _VIRTIO_HEADERS + ((w1 >> 8) & 0x7F) * 16
        length = 16 + ((w1 >> 16) & 0x1F0)  # at most 512 bytes: the buffer stays in page 3
    return [address & 0xFFFF_FFFF, address >> 32, length, flags | following << 16]


def virtio_blk_type(word: int) -> int:
    kind = word & 15
    return BLK_TYPES[kind] if kind < len(BLK_TYPES) else (word >> 32) & 0xFF


def virtio_request(base: int, chain: int, request_type: int, word: int) -> list[int]:
    """The three descriptors of chain ``chain``: header -> data (its direction by ``request_type``) -> status."""
    first = VIRTIO_CHAIN * chain
    blocks = 1 + ((word >> 20) & 1)
    data = base + _VIRTIO_DATA + BLK_SECTOR * (((word >> 21) & 3) % (5 - blocks))  # stays in page 3
    writable = VIRTQ_WRITE if request_type in (BLK_T_IN, BLK_T_GET_ID) else 0
    header = base + _VIRTIO_HEADERS + BLK_OUTHDR * chain
    status = base + _VIRTIO_STATUS + chain
    return [
        header & 0xFFFF_FFFF, header >> 32, BLK_OUTHDR, VIRTQ_NEXT | (first + 1) << 16,
        data & 0xFFFF_FFFF, data >> 32, BLK_SECTOR * blocks, VIRTQ_NEXT | writable | (first + 2) << 16,
        status & 0xFFFF_FFFF, status >> 32, 1, VIRTQ_WRITE,
    ]  # fmt: skip


def _virtio(base: int, seed: int) -> list[int]:
    dwords = [0] * DWORDS
    for c in range(VIRTIO_QUEUE):  # every descriptor drawn at random, then most chains overwritten as requests
        w0, w1 = _word(seed, STRUCT_WORDS + 2 * c), _word(seed, STRUCT_WORDS + 2 * c + 1)
        dwords[4 * c : 4 * c + 4] = virtio_descriptor(base, c, w0, w1)
    for chain in range(VIRTIO_CHAINS):
        cell = _VIRTIO_HEADERS // 16 + chain
        word = _word(seed, STRUCT_WORDS + 2 * cell)
        request_type = virtio_blk_type(word)
        sector = (word >> 8) & 0xFF
        dwords[4 * cell : 4 * cell + 4] = [request_type, 0, sector, 0]
        shape = _word(seed, STRUCT_WORDS + 2 * cell + 1)
        if not maybe(shape, 0, 5):
            first = 4 * VIRTIO_CHAIN * chain
            dwords[first : first + 4 * VIRTIO_CHAIN] = virtio_request(base, chain, request_type, shape)
    head = _word(seed, _VIRTIO_AVAIL_WORDS)
    avail = [head & 1, 1 + ((head >> 8) & 0xFF)]  # flags (NO_INTERRUPT at random), idx 1..256
    for j in range(VIRTIO_QUEUE):  # head indices: a chain's first descriptor, any descriptor one in 32
        word = _word(seed, _VIRTIO_AVAIL_WORDS + 1 + j)
        avail.append(word & 0xFF if maybe(word, 8, 5) else VIRTIO_CHAIN * ((word >> 16) % VIRTIO_CHAINS))
    avail.append((head >> 16) & 0xFF)  # used_event
    avail.append(0)
    first = PAGE // 4
    for j in range(0, len(avail), 2):
        dwords[first + j // 2] = avail[j] | avail[j + 1] << 16
    _random_tail(dwords, _VIRTIO_DATA, seed)  # data buffers: a write's sectors, a NIC's frames
    return dwords


# --- nvme ---------------------------------------------------------------------------
# Pages 0-1: 128 submission queue entries of 64 bytes, admin and I/O opcodes
# mixed (the same page may be the admin queue or an I/O one); page 2: a
# completion queue (zero: the device posts there); page 3: data. PRP1 names
# page 3 (a queue page for the create-queue commands), PRP2 any page.

NVME_OPCODES = (0x06, 0x06, 0x02, 0x09, 0x0A, 0x05, 0x01, 0x04, 0x00, 0x0C, 0x08, 0x02, 0x01, 0x08, 0x09, 0x05)
NVME_CREATE_CQ, NVME_CREATE_SQ = 0x05, 0x01
_NVME_ENTRIES = 128


def nvme_command(base: int, w0: int, w1: int, w2: int) -> list[int]:
    """A submission queue entry: a known opcode, namespace 1 mostly, PRPs in the scratch memory, small fields."""
    opcode = NVME_OPCODES[w0 & 15]
    nsid = 0xFFFF_FFFF if maybe(w0, 4, 4) else 1 if not maybe(w0, 8, 2) else (w0 >> 10) & 3
    if opcode == NVME_CREATE_SQ:
        prp1 = base + ((w1 >> 4) & 1) * PAGE  # the new queue: a page of entries
    elif opcode == NVME_CREATE_CQ:
        prp1 = base + 2 * PAGE
    else:
        prp1 = base + 3 * PAGE + (((w1 >> 4) & 0xFF) * 4 if maybe(w1, 12, 2) else 0)
    prp2 = base + ((w1 >> 16) & 3) * PAGE
    cdw10 = (w2 & 3) | ((w2 >> 8) & 0x3F) << 16  # CNS, log page, feature, queue id or LBA; a size
    cdw11 = 1 | ((w2 >> 16) & 3) << 16  # physically contiguous, completion queue 0-3
    cdw12 = (w2 >> 24) & 7  # blocks - 1
    command = [opcode | ((w0 >> 16) & 0xFFFF) << 16, nsid, 0, 0, 0, 0]
    return [*command, prp1 & 0xFFFF_FFFF, prp1 >> 32, prp2 & 0xFFFF_FFFF, prp2 >> 32, cdw10, cdw11, cdw12, 0, 0, 0]


def _nvme(base: int, seed: int) -> list[int]:
    dwords = [0] * DWORDS
    for e in range(_NVME_ENTRIES):
        c = 4 * e
        w0, w1, w2 = (_word(seed, STRUCT_WORDS + 2 * c + j) for j in range(3))
        dwords[16 * e : 16 * e + 16] = nvme_command(base, w0, w1, w2)
    _random_tail(dwords, 3 * PAGE, seed)  # data
    return dwords


# --- megasas ------------------------------------------------------------------------
# Pages 0-2: 192 MFI frames of 64 bytes (a frame address the controller is
# given is 32-byte aligned: one in two lands on a frame); page 3: data, sense
# buffers and queue info. A frame: the 24-byte header (a known command, target
# 0 mostly, a CDB length, one SGE mostly, a data length of 512-4096), then the
# command's own fields, then one SGE (32- or 64-bit, as the header's flags say)
# into page 3.

MFI_COMMANDS = (3, 4, 5, 5, 1, 2, 6, 0)  # LD SCSI, PD SCSI, DCMD (x2), LD read, LD write, abort, init
MFI_DCMDS = (0x01010000, 0x01020100, 0x02010000, 0x03010000, 0x01040100, 0x04010000, 0x03020000, 0x02020000)
SCSI_OPCODES = (0x00, 0x12, 0x25, 0x28, 0x2A, 0x1A, 0x03, 0xA0)  # TUR, INQUIRY, READ CAPACITY, READ/WRITE(10)...
MFI_FRAME_SGL64 = 0x02
_MFI_FRAMES = 192
_MFI_DATA = 0x3000


def megasas_frame(base: int, w0: int, w1: int) -> list[int]:
    command = MFI_COMMANDS[w0 & 7]
    target = 0 if (w0 >> 3) & 3 else (w0 >> 5) & 3
    cdb_len = (6, 10, 12, 16)[(w0 >> 7) & 3]
    sges = 1 if not maybe(w0, 9, 2) else (w0 >> 11) & 3
    flags = ((w0 >> 13) & 1) * MFI_FRAME_SGL64 | (0x10 if (w0 >> 14) & 1 else 0x08)
    data_len = 512 * (1 + ((w0 >> 15) & 7))
    data = base + _MFI_DATA  # the whole of page 3: 4096 bytes
    frame = [command | (18 if (w0 >> 18) & 1 else 0) << 8, target | cdb_len << 16 | sges << 24,
             (w0 >> 32) & 0xFFFF_FFFF, 0, flags, data_len]  # fmt: skip
    sense = base + _MFI_DATA + ((w1 >> 8) & 0x3F) * 64
    if command in (3, 4):  # sense address, a CDB, the SGL at 48
        cdb = SCSI_OPCODES[w1 & 7] | ((w1 >> 16) & 0xFFFFFF) << 8
        frame += [sense, 0, cdb, (w1 >> 40) & 0xFF, 0, 0]
    elif command == 5:  # opcode, mailbox, the SGL at 40
        frame += [MFI_DCMDS[w1 & 7], (w1 >> 8) & 0xFF, 0, 0]
    elif command in (1, 2):  # sense address, a small LBA, the SGL at 40
        frame += [sense, 0, (w1 >> 8) & 0xFF, 0]
    elif command == 6:  # the context and address of another frame to abort
        frame += [w1 & 0xFFFF_FFFF, 0, base + ((w1 >> 32) % _MFI_FRAMES) * 64, 0]
    else:  # init: the queue info in page 3
        frame += [base + _MFI_DATA + ((w1 >> 8) & 0x3F) * 64, 0, 0, 0]
    if flags & MFI_FRAME_SGL64:
        frame += [data, 0, data_len]
    else:
        frame += [data, data_len]
    return frame + [0] * (16 - len(frame))


def _megasas(base: int, seed: int) -> list[int]:
    dwords = [0] * DWORDS
    for f in range(_MFI_FRAMES):
        c = 4 * f
        w0, w1 = _word(seed, STRUCT_WORDS + 2 * c), _word(seed, STRUCT_WORDS + 2 * c + 1)
        dwords[16 * f : 16 * f + 16] = megasas_frame(base, w0, w1)
    _random_tail(dwords, _MFI_DATA, seed)
    return dwords


# --- ahci ---------------------------------------------------------------------------
# Page 0: four command lists of 32 headers (32 bytes each, 1 KiB aligned: a
# port's list base lands on one); pages 1-2: 32 command tables of 256 bytes:
# an H2D register FIS with a common ATA command, an ATAPI CDB, 8 PRD entries
# of 512 bytes into page 3; page 3: data (and where a received-FIS base may
# point).

ATA_COMMANDS = (0xEC, 0x25, 0x35, 0xC8, 0xCA, 0xE7, 0x60, 0x61, 0xA0, 0xEF, 0x2F, 0xA1, 0x20, 0x30, 0xEA, 0x00)
_AHCI_TABLES = 0x1000
_AHCI_DATA = 0x3000


def ahci_header(base: int, word: int) -> list[int]:
    """A command header: a 5-dword FIS, ATAPI 1 in 8, write and prefetch at random, 1-8 PRD entries."""
    flags = 5 | (0x20 if maybe(word, 0, 3) else 0) | ((word >> 3) & 1) << 6 | ((word >> 4) & 1) << 7
    prdtl = 1 + ((word >> 5) & 7 if maybe(word, 8, 1) else (word >> 5) & 1)
    table = base + _AHCI_TABLES + ((word >> 16) & 31) * 256
    return [flags | prdtl << 16, 0, table & 0xFFFF_FFFF, table >> 32, 0, 0, 0, 0]


def ahci_table(base: int, w0: int, w1: int) -> list[int]:
    command = ATA_COMMANDS[w0 & 15]
    fis = [0x27 | 0x80 << 8 | command << 16 | ((w0 >> 8) & 0xFF) << 24,  # type, C bit, command, features
           ((w0 >> 16) & 0xFF) | 0x40 << 24,  # LBA low byte, LBA mode
           0, 1 + ((w0 >> 24) & 7), 0]  # fmt: skip
    acmd = [SCSI_OPCODES[w1 & 7] | ((w1 >> 8) & 0xFF) << 16, 0, 0, 0]  # an ATAPI CDB
    prdt: list[int] = []
    for e in range(8):
        data = base + _AHCI_DATA + e * 512
        prdt += [data & 0xFFFF_FFFF, data >> 32, 0, 511 | ((w1 >> (16 + e)) & 1) << 31]
    return fis + [0] * 11 + acmd + [0] * 12 + prdt


def _ahci(base: int, seed: int) -> list[int]:
    dwords = [0] * DWORDS
    for h in range(128):
        dwords[8 * h : 8 * h + 8] = ahci_header(base, _word(seed, STRUCT_WORDS + 4 * h))
    for t in range(32):
        c = (_AHCI_TABLES + 256 * t) // 16
        w0, w1 = _word(seed, STRUCT_WORDS + 2 * c), _word(seed, STRUCT_WORDS + 2 * c + 1)
        dwords[4 * c : 4 * c + 64] = ahci_table(base, w0, w1)
    _random_tail(dwords, _AHCI_DATA, seed)
    return dwords


# --- virtio_blk_req: virtio-blk requests of every type, only for recipes (model/layouts/virtio_blk_req.py) ---
def _virtio_blk_req(base: int, seed: int) -> list[int]:
    return virtio_blk_req.build(base, seed, _word, STRUCT_WORDS, DWORDS)


_DEVICE_LAYOUTS: dict[str, Callable[[int, int], list[int]]] = {
    LAYOUT_UHCI: _uhci,
    LAYOUT_EHCI: _ehci,
    LAYOUT_E1000: _e1000,
    LAYOUT_VIRTIO: _virtio,
    LAYOUT_NVME: _nvme,
    LAYOUT_MEGASAS: _megasas,
    LAYOUT_AHCI: _ahci,
    LAYOUT_EHCI_MSD: ehci_msd,
    LAYOUT_VIRTIO_BLK_REQ: _virtio_blk_req,
    LAYOUT_MEGASAS_IO: megasas_io,
    LAYOUT_E1000E_NET: e1000e_net.build,
    LAYOUT_VIRTIO_NET_MODERN: virtio_net_modern_dwords,
    LAYOUT_LSI_SCRIPTS: lsi_scripts,
}


def layout_fill(layout: str, base: int, seed: int) -> bytes:
    """The 16 KiB of a device layout at guest-physical ``base`` for the fill seed ``seed`` (little endian)."""
    try:
        build = _DEVICE_LAYOUTS[layout]
    except KeyError:
        raise ValueError(f"no device layout {layout!r} (one of {', '.join(_DEVICE_LAYOUTS)})") from None
    return b"".join(d.to_bytes(4, "little") for d in build(base, seed))
