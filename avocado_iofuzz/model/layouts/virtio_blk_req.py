"""The ``virtio_blk_req`` scratch layout: a legacy split queue full of virtio-blk requests of every type.

Only a recipe names it (``virtio-blk-requests*`` in ``guided/recipes.toml``);
blind's layout choice never does, so blind's fills stay what they were. The
generic ``virtio`` layout draws most chains as 3-descriptor requests but any
type in any order, with one descriptor chain in 32 random: a queue stops at
its first malformed chain, and IN/OUT rarely meet a neighbour they can merge
with. This layout carries what a driver knows about the device (virtio 1.x
spec, "Block Device"; QEMU 7.2's virtio-blk accepts the same on its legacy
interface):

* request types IN, OUT, FLUSH, GET_ID, DISCARD, WRITE_ZEROES, their forms
  without the OUT direction bit (refused), SCSI passthrough (unsupported in
  7.2) and any 32-bit type, the BARRIER bit at times;
* sectors inside the 64 MiB disk (the storage row's null-co size), at its
  last sector (a 2-sector request straddles the end) and past it;
* IN/OUT runs: a request repeats its predecessor's type on the next sector
  one time in 2, so the device's request merging (``submit_multireq``) sees
  adjacent requests of one direction;
* DISCARD/WRITE_ZEROES segments with the UNMAP flag, unknown flags, sector
  counts past the device's limit, and two segments (refused);
* one request in 16 through an indirect descriptor table (page 2, past the
  used ring), data lengths that are not whole sectors one in 16, one header
  descriptor shorter than 16 bytes in 64: the device takes the rest of the
  header from the next readable buffer (an OUT's data, a segment), or, with
  none, marks itself broken and stops the queue there (bugs live there too);
* 16-85 heads per notify, in order, with ``used_event`` for the event index.

Every word comes from the fill seed (request ``j`` reads generator words
``STRUCT_WORDS + 6j`` and ``+ 1``, the cell of its first descriptor), so
guided's seed mutations vary types, sectors, lengths and flags. The in-guest
executor's ``fill_virtio_blk_req`` draws the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable

from avocado_iofuzz.model.layouts.common import maybe

QUEUE = 256
SLOTS = 85  # requests, three descriptors each (the last descriptor stays zero)
AVAIL = 0x1000
TABLES = 0x2810  # indirect tables of 3 descriptors, past the used ring (0x2000-0x2806)
INDIRECT_SLOTS = 42  # the slots that have a table of their own
HEADERS = 0x3000  # 16 bytes per slot: type, ioprio, sector
STATUS = 0x3560  # one byte per slot
SEGMENTS = 0x35C0  # one 16-byte discard/write-zeroes segment per slot
DATA = 0x3C00  # two sectors every request's data points into
SECTOR = 512
CAPACITY = 0x4000000 // SECTOR  # the storage.virtio_blk row's null-co disk (67108864 bytes)
HEADER_BYTES = 16
NEXT, WRITE, INDIRECT = 1, 2, 4
T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD, T_WRITE_ZEROES = 0, 1, 4, 8, 11, 13
T_SCSI, T_BARRIER = 2, 0x8000_0000
UNMAP = 1
ANY_TYPE = -1  # the table entry that takes a random 32-bit type
# 3 in 8 IN or OUT, the other commands once or twice; 10 is DISCARD without the OUT bit, 5 FLUSH with it
TYPES = (
    T_IN, T_IN, T_IN, T_OUT, T_OUT, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD, T_DISCARD, T_WRITE_ZEROES,
    T_WRITE_ZEROES, T_SCSI, 10, 5, ANY_TYPE,
)  # fmt: skip



def _sector(word: int, blocks: int) -> int:
    """Inside the disk 14 in 16, its last sector 1 in 16 (a 2-sector request straddles the end), past it 1 in 16."""
    kind = (word >> 12) & 15
    if kind == 0:
        return CAPACITY + ((word >> 16) & 0xFFFF)
    if kind == 1:
        return CAPACITY - 1
    return ((word >> 16) & 0x1FFFF) % (CAPACITY - blocks)


def follows(w0: int, previous: int) -> bool:
    """One time in 2 after an IN or OUT: the same type on the next sector (a run the device merges)."""
    return previous in (T_IN, T_OUT) and (w0 >> 4) & 1 == 1


def request_type(w0: int, previous: int) -> int:
    """The slot's type: its predecessor's when it :func:`follows` it, else drawn from TYPES; BARRIER 1 in 32."""
    if follows(w0, previous):
        chosen = previous
    else:
        chosen = TYPES[w0 & 15]
        if chosen == ANY_TYPE:
            chosen = (w0 >> 32) & 0xFFFF_FFFF
    return chosen | T_BARRIER if maybe(w0, 5, 5) else chosen


def _descriptor(address: int, length: int, flags: int, following: int) -> list[int]:
    return [address & 0xFFFF_FFFF, address >> 32, length, flags | following << 16]


def build(base: int, seed: int, word: Callable[[int, int], int], struct_words: int, dwords_count: int) -> list[int]:
    """The layout's dwords; ``word(seed, k)`` is the generator, the tail of random data starts at DATA."""
    dwords = [0] * dwords_count
    previous, next_sector = -1, 0
    for j in range(SLOTS):
        w0, w1 = word(seed, struct_words + 6 * j), word(seed, struct_words + 6 * j + 1)
        kind = request_type(w0, previous)
        plain = kind & ~T_BARRIER
        blocks = 1 + ((w0 >> 10) & 1)
        sector = next_sector if follows(w0, previous) else _sector(w0, blocks)
        previous, next_sector = plain, sector + blocks
        header = HEADERS + HEADER_BYTES * j
        dwords[header // 4 : header // 4 + 4] = [kind, 0, sector & 0xFFFF_FFFF, sector >> 32]
        header_length = (w1 >> 40) & 15 if maybe(w0, 40, 6) else HEADER_BYTES  # too short (see the docstring)
        whole = not maybe(w0, 46, 4)
        length = SECTOR * blocks if whole else 1 + ((w1 >> 48) & 0x1FE)  # not whole sectors 1 in 16
        data = base + DATA + (SECTOR if whole and blocks == 1 and (w0 >> 11) & 1 else 0)
        if plain in (T_FLUSH, 5):
            middle: list[tuple[int, int, int]] = []
        elif plain in (T_DISCARD, T_WRITE_ZEROES, 10):
            segment = SEGMENTS + 16 * j
            count = 1 + (w1 & 0xFF) if not maybe(w1, 8, 4) else 0xFFFF_FF00 | (w1 & 0xFF)  # past the limit
            flags = UNMAP * ((w1 >> 12) & 1) | (2 if maybe(w1, 13, 4) else 0)  # an unknown flag 1 in 16
            segment_sector = _sector(w1 >> 16, 1) if (w1 >> 17) & 1 else _sector(w0, 1)
            dwords[segment // 4 : segment // 4 + 4] = [segment_sector & 0xFFFF_FFFF, segment_sector >> 32, count, flags]
            segments = 2 if maybe(w1, 24, 3) else 1  # two segments: refused
            middle = [(base + segment, 16 * segments, 0)]
        else:  # IN, GET_ID and what the device refuses take a writable buffer, OUT a readable one
            writable = 0 if plain == T_OUT else WRITE
            middle = [(data, length, writable)]
        parts = [(base + header, header_length, 0), *middle, (base + STATUS + j, 1, WRITE)]
        first = 3 * j
        if j < INDIRECT_SLOTS and maybe(w1, 28, 4):  # through a table of its own: next indices count from 0
            table = TABLES + 48 * j
            for n, (address, size, flags) in enumerate(parts):
                chained = NEXT if n + 1 < len(parts) else 0
                dwords[table // 4 + 4 * n : table // 4 + 4 * n + 4] = _descriptor(address, size, flags | chained, n + 1)
            dwords[4 * first : 4 * first + 4] = _descriptor(base + table, 16 * len(parts), INDIRECT, 0)
        else:
            for n, (address, size, flags) in enumerate(parts):
                chained = NEXT if n + 1 < len(parts) else 0
                dwords[4 * (first + n) : 4 * (first + n) + 4] = _descriptor(
                    address, size, flags | chained, first + n + 1
                )
    head = word(seed, struct_words + 6 * SLOTS)
    heads = 16 + (head >> 8) % (SLOTS - 15)  # 16..85 requests per notify
    avail = [head & 1, heads, *(3 * k if k < heads else 0 for k in range(QUEUE)), (head >> 16) & 0xFF, 0]
    for k in range(0, len(avail), 2):
        dwords[AVAIL // 4 + k // 2] = avail[k] | avail[k + 1] << 16
    for d in range(DATA // 4, dwords_count, 2):  # a write's sectors: random bytes
        w = word(seed, d // 2)
        dwords[d : d + 2] = [w & 0xFFFF_FFFF, w >> 32]
    return dwords
