"""The ``ehci_msd`` scratch layout: an EHCI asynchronous schedule that enumerates a USB stick and runs SCSI on it.

Only the ``ehci-msd`` recipe names it (blind's layout choice never does). Its
scratch memory holds a ring of queue heads in the order a driver talks to a
freshly reset bulk-only mass-storage device, so one walk of the async list
takes the stick from address 0 to SCSI commands:

* QH 0, device 0, endpoint 0, the head of the list (H bit): GET_DESCRIPTOR
  (device), then SET_ADDRESS to the address ``N`` (4-127) the fill seed
  draws;
* QH 1, device ``N``, endpoint 0: GET_DESCRIPTOR (configuration),
  SET_CONFIGURATION 1, GET MAX LUN, then one more request the seed picks
  (a string, the device qualifier, the BOS descriptor, or none);
* four command slots, each three queue heads: bulk OUT endpoint 2 (the
  31-byte CBW, then the data of a command that writes), bulk IN endpoint 1
  (the data of a command that reads, then the 13-byte CSW), and endpoint 0
  again (a bulk-only reset, a GET MAX LUN or a CLEAR_FEATURE(HALT) of the IN
  endpoint: what a driver does after a command, and what puts the device
  back to waiting for a CBW when the previous one went wrong);
* the last queue head links back to QH 0: the walk is circular.

The order matters: QEMU walks the list from its head and a queue head for
address ``N`` finds no device before SET_ADDRESS took effect (the queue then
halts for good), so the new address is used only by the queue heads after
QH 0. The CBW's SCSI command comes from :data:`MSD_COMMANDS` (INQUIRY, TEST
UNIT READY, READ CAPACITY, READ/WRITE, REQUEST SENSE, MODE SENSE, ...); its
fields (LBA, page codes, VPD pages, the opcode of the last entry) come from
the seed. One CBW in eight is malformed on purpose (a bad signature, a
30-byte transfer, LUN 1, the direction flag flipped). Never malformed: PID
SETUP goes only to endpoint 0 (QEMU 7.2 aborts in ``usb_ep_get`` otherwise,
docs/results/findings.rst) and every horizontal link names a queue head
(QEMU aborts on any other type in the async list).

Memory: queue heads from 0x0000 (64 bytes apart), control qTDs from 0x1000
(32 bytes apart), the bulk qTDs of slot ``k`` at 0x1800 + 0x100k (OUT) and
+0x80 (IN), SETUP packets from 0x2000, CBWs from 0x2800, each slot's data
buffer (512 bytes) from 0x3000, CSW buffers from 0x3800, the control
transfers' data at 0x3c00. Every queue head and every bulk qTD has the same
place and role whatever the seed: the executor refills the memory under a
running schedule (the next round's fill comes before its HCRESET), and a
queue head of a bulk endpoint that met, half-way through a refill, a qTD the
previous seed had made a SETUP would abort QEMU (usb_ep_get). For the same
reason SETUP packets and CBW tags keep the bits a queue head's endpoint
number would be read from at 0 (a list address the fuzzer points into them).
The executor (``fill_ehci_msd`` in ``executor/iofuzz_exec.c``) builds the
same bytes.
"""

from __future__ import annotations

import itertools

from avocado_iofuzz.model.generator import random_word
from avocado_iofuzz.model.layouts.common import LAYOUT_SIZE, dwords_of

QH_AREA, QTD_AREA, BULK_QTD_AREA, SETUP_AREA, CBW_AREA = 0x0000, 0x1000, 0x1800, 0x2000, 0x2800
BULK_QTD_SLOT, BULK_IN_QTDS = 0x100, 0x80  # a slot's OUT qTDs, then (at +0x80) its IN qTDs
DATA_AREA, CSW_AREA, CONTROL_DATA = 0x3000, 0x3800, 0x3C00
SLOTS = 4
DATA_BYTES = 512  # one slot's data buffer: one block of the stick
STRUCT_WORDS = LAYOUT_SIZE // 4  # first generator word of the choices (as the other layouts)

PID_OUT, PID_IN, PID_SETUP = 0, 1, 2
QTD_ACTIVE, QTD_CERR3, QTD_TOGGLE = 0x80, 3 << 10, 1 << 31
LINK_QH, TERMINATE = 2, 1
SPEED_HIGH = 2
QH_DTC, QH_HEAD = 1 << 14, 1 << 15
ENDPOINT_IN, ENDPOINT_OUT = 1, 2  # the stick's bulk endpoints (0x81, 0x02)
CONTROL_PACKET, BULK_PACKET = 64, 512

CBW_SIGNATURE = 0x43425355
CBW_BYTES, CSW_BYTES = 31, 13
NONE, IN, OUT = 0, 1, 2
# (opcode, CDB length, data bytes, direction); the last entry's opcode is drawn from the seed
MSD_COMMANDS = (
    (0x12, 6, 36, IN),  # INQUIRY
    (0x00, 6, 0, NONE),  # TEST UNIT READY
    (0x25, 10, 8, IN),  # READ CAPACITY(10)
    (0x28, 10, 512, IN),  # READ(10)
    (0x2A, 10, 512, OUT),  # WRITE(10)
    (0x03, 6, 18, IN),  # REQUEST SENSE
    (0x1A, 6, 192, IN),  # MODE SENSE(6)
    (0x5A, 10, 192, IN),  # MODE SENSE(10)
    (0xA0, 12, 64, IN),  # REPORT LUNS
    (0x9E, 16, 32, IN),  # SERVICE ACTION IN(16): READ CAPACITY(16)
    (0x1B, 6, 0, NONE),  # START STOP UNIT
    (0x35, 10, 0, NONE),  # SYNCHRONIZE CACHE(10)
    (0x2F, 10, 0, NONE),  # VERIFY(10)
    (0x08, 6, 512, IN),  # READ(6)
    (0x0A, 6, 512, OUT),  # WRITE(6)
    (0x00, 16, 0, NONE),  # any opcode
)
MODE_PAGES = (0x3F, 0x08, 0x1C, 0x0A, 0x01, 0x05, 0x2A, 0x00)
VPD_PAGES = (0x00, 0x80, 0x83, 0xB0)
DEVICE_DESCRIPTOR_LENGTHS = (18, 8, 64, 18)
FIRST_ADDRESS = 4  # the addresses SET_ADDRESS gives: 4-127


class _Schedule:
    """The layout's bytes as they are built: queue heads, qTDs and SETUP packets take the next free place."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.memory = bytearray(LAYOUT_SIZE)
        self.qtds = 0
        self.setups = 0

    def put(self, at: int, data: bytes) -> None:
        self.memory[at : at + len(data)] = data

    def dword(self, at: int, value: int) -> None:
        self.put(at, (value & 0xFFFF_FFFF).to_bytes(4, "little"))

    def qtd(self, pid: int, length: int, buffer: int, toggle: int, at: int = -1) -> int:
        """An active qTD at ``at`` (-1: the next free one of the control area), chained by :meth:`queue_head`."""
        if at < 0:
            at = QTD_AREA + 32 * self.qtds
            self.qtds += 1
        token = QTD_ACTIVE | pid << 8 | QTD_CERR3 | length << 16 | (QTD_TOGGLE if toggle else 0)
        address = self.base + buffer
        page = self.base + DATA_AREA  # later pages of a transfer that crosses one: still in the scratch memory
        for i, value in enumerate((TERMINATE, TERMINATE, token, address, page, page, page, page)):
            self.dword(at + 4 * i, value)
        return at

    def setup(self, request: bytes) -> int:
        at = SETUP_AREA + 8 * self.setups
        self.setups += 1
        self.put(at, request)
        return at

    def control(self, request: bytes) -> list[int]:
        """The qTDs of a control transfer: SETUP, the IN data stage its wLength asks for, the status stage."""
        length = int.from_bytes(request[6:8], "little")
        qtds = [self.qtd(PID_SETUP, 8, self.setup(request), 0)]
        if length:
            qtds.append(self.qtd(PID_IN, length, CONTROL_DATA, 1))
        qtds.append(self.qtd(PID_OUT if length else PID_IN, 0, 0, 1))
        return qtds

    def queue_head(self, index: int, device: int, endpoint: int, qtds: list[int], following: int) -> None:
        """QH ``index`` with its qTDs chained in order, linked to QH ``following``."""
        for at, then in itertools.pairwise(qtds):
            self.dword(at, self.base + then)
        control = endpoint == 0
        epchar = device | endpoint << 8 | SPEED_HIGH << 12 | (QH_DTC if control else 0)
        epchar |= (QH_HEAD if index == 0 else 0) | (CONTROL_PACKET if control else BULK_PACKET) << 16
        at = QH_AREA + 64 * index
        link = self.base + QH_AREA + 64 * following | LINK_QH
        first = self.base + qtds[0] if qtds else TERMINATE
        for i, value in enumerate((link, epchar, 1 << 30, 0, first, TERMINATE)):
            self.dword(at + 4 * i, value)


def request(kind: int, code: int, value: int, index: int, length: int) -> bytes:
    """A SETUP packet: bmRequestType, bRequest, wValue, wIndex, wLength."""
    return bytes((kind, code)) + b"".join(field.to_bytes(2, "little") for field in (value, index, length))


def extra_request(word: int) -> bytes | None:
    """The seed's last request of the configuring queue head: a string, the device qualifier, BOS, or none."""
    pick = (word >> 8) & 3
    if pick == 1:
        return request(0x80, 6, 0x0300 | (word >> 10) & 3, 0, 64)
    if pick == 2:
        return request(0x80, 6, 0x0600, 0, 10)
    if pick == 3:
        return request(0x80, 6, 0x0F00, 0, 64)
    return None


def command_block(word: int, detail: int) -> tuple[bytes, int, int]:
    """The CDB (16 bytes, padded), its length and the command's direction and data bytes, from the table."""
    opcode, length, data, direction = MSD_COMMANDS[word & 15]
    cdb = bytearray(16)
    cdb[0] = opcode
    large = (detail >> 12) & 15 == 0  # one in 16: any LBA, mostly past the stick's end
    lba = (detail >> 16) & (0xFFFF_FFFF if large else 0xFF)
    if opcode == 0x12:
        cdb[4] = data
        if (detail >> 8) & 3 == 0:  # a VPD page
            cdb[1], cdb[2] = 1, VPD_PAGES[(detail >> 10) & 3]
    elif opcode == 0x03:
        cdb[4] = data
    elif opcode in (0x1A, 0x5A):
        cdb[2] = MODE_PAGES[(detail >> 8) & 7] | ((detail >> 11) & 3) << 6
        if opcode == 0x1A:
            cdb[4] = data
        else:
            cdb[7:9] = data.to_bytes(2, "big")
    elif opcode == 0xA0:
        cdb[6:10] = data.to_bytes(4, "big")
    elif opcode == 0x9E:
        cdb[1] = 0x10
        cdb[10:14] = data.to_bytes(4, "big")
    elif opcode in (0x28, 0x2A, 0x2F):
        cdb[2:6] = lba.to_bytes(4, "big")
        cdb[8] = 1
    elif opcode in (0x08, 0x0A):
        cdb[1:4] = (lba & 0x1F_FFFF).to_bytes(3, "big")
        cdb[4] = 1
    elif opcode == 0x1B:
        cdb[4] = (detail >> 8) & 3
    elif (word & 15) == len(MSD_COMMANDS) - 1:
        cdb[:] = ((detail >> 56) & 0xFF).to_bytes(1, "little") + (detail >> 8).to_bytes(7, "little") + bytes(8)
    return bytes(cdb), length, direction | data << 2


def command_slot(schedule: _Schedule, slot: int, first_qh: int, device: int, word: int, detail: int) -> None:
    """Slot ``slot``'s three queue heads from QH ``first_qh``: CBW (+ data out), data in + CSW, endpoint 0."""
    cdb, cdb_length, shape = command_block(word, detail)
    direction, data = shape & 3, shape >> 2
    signature, cbw_bytes, lun, flags = CBW_SIGNATURE, CBW_BYTES, 0, 0x80 if direction == IN else 0
    if (word >> 4) & 7 == 0:  # malformed: one CBW in eight
        fault = (word >> 7) & 3
        if fault == 0:
            signature ^= 1 << ((word >> 16) & 31)
        elif fault == 1:
            cbw_bytes = CBW_BYTES - 1
        elif fault == 2:
            lun = 1
        else:
            flags ^= 0x80
    tag = (word >> 32) & 0xFFFF_F0FF  # bits 8-11 zero: read as a queue head's endpoint number, 0
    cbw = signature.to_bytes(4, "little") + tag.to_bytes(4, "little") + data.to_bytes(4, "little")
    cbw += bytes((flags, lun, cdb_length)) + cdb
    schedule.put(CBW_AREA + 64 * slot, cbw)
    buffer = DATA_AREA + DATA_BYTES * slot
    out_at = BULK_QTD_AREA + BULK_QTD_SLOT * slot
    in_at = out_at + BULK_IN_QTDS
    out = [schedule.qtd(PID_OUT, cbw_bytes, CBW_AREA + 64 * slot, 0, out_at)]
    if direction == OUT:
        out.append(schedule.qtd(PID_OUT, data, buffer, 1, out_at + 32))
    into = [schedule.qtd(PID_IN, data, buffer, 0, in_at)] if direction == IN else []
    into.append(schedule.qtd(PID_IN, CSW_BYTES, CSW_AREA + 64 * slot, len(into), in_at + 32 * len(into)))
    after = (
        request(0xA1, 0xFE, 0, 0, 1),  # GET MAX LUN
        request(0x21, 0xFF, 0, 0, 0),  # bulk-only mass storage reset
        request(0x02, 0x01, 0, 0x80 | ENDPOINT_IN, 0),  # CLEAR_FEATURE(ENDPOINT_HALT) of the IN endpoint
        request(0x21, 0xFF, 0, 0, 0),
    )[(word >> 9) & 3]
    last = first_qh + 2 == 1 + 3 * SLOTS
    schedule.queue_head(first_qh, device, ENDPOINT_OUT, out, first_qh + 1)
    schedule.queue_head(first_qh + 1, device, ENDPOINT_IN, into, first_qh + 2)
    schedule.queue_head(first_qh + 2, device, 0, schedule.control(after), 0 if last else first_qh + 3)


def ehci_msd(base: int, seed: int) -> list[int]:
    """The layout's dwords at guest-physical ``base`` for the fill seed ``seed``."""
    choice = random_word(seed, STRUCT_WORDS)
    # 4-127: the plain ehci layout's queue heads name devices 0-3, so when a sweep refills the memory under
    # the running list they find no stick there (a SETUP of theirs on a bulk endpoint aborts QEMU 7.2)
    device = FIRST_ADDRESS + (choice & 0x7F) % (128 - FIRST_ADDRESS)
    schedule = _Schedule(base)
    enumerate_ = schedule.control(request(0x80, 6, 0x0100, 0, DEVICE_DESCRIPTOR_LENGTHS[(choice >> 12) & 3]))
    enumerate_ += schedule.control(request(0x00, 5, device, 0, 0))  # SET_ADDRESS
    configure = schedule.control(request(0x80, 6, 0x0200, 0, 32 if (choice >> 7) & 1 else 9))
    configure += schedule.control(request(0x00, 9, 1, 0, 0))  # SET_CONFIGURATION 1
    configure += schedule.control(request(0xA1, 0xFE, 0, 0, 1))  # GET MAX LUN
    extra = extra_request(choice)
    if extra is not None:
        configure += schedule.control(extra)
    schedule.queue_head(0, 0, 0, enumerate_, 1)
    schedule.queue_head(1, device, 0, configure, 2)
    for slot in range(SLOTS):
        word = random_word(seed, STRUCT_WORDS + 8 + slot)
        detail = random_word(seed, STRUCT_WORDS + 16 + slot)
        command_slot(schedule, slot, 2 + 3 * slot, device, word, detail)
    memory = schedule.memory
    return dwords_of(memory)
