"""DMA-aware values: the scratch memory in the guest and the dictionary of write values.

A range's ``values`` mode (:data:`VALUE_MODES`) says where its write values
come from:

``uniform``
    a uniform random word of the op's width (what iofuzz always did);
``dma``
    a dictionary draw (:func:`dictionary_value`): addresses inside the
    scratch memory, their page frame numbers, offsets into it, 0, all-ones,
    small integers, powers of two, sizes -- and in 5 draws of 16 a uniform
    word, as before.

A device DMAs from guest-physical memory whose address a register holds. The
scratch memory is guest RAM at a fixed guest-physical address
(:data:`SCRATCH_BASE`) that the guest's kernel was told to leave alone
(:data:`SCRATCH_KERNEL_PARAM`, a ``memmap=`` reservation) and that the
executor maps through ``/dev/mem``. While a ``dma`` range runs, the executor
fills the scratch memory at the first op it runs of the range and again at
every multiple of :data:`SCRATCH_EPOCH_OPS` (an *epoch*): its contents are a
pure function of the range's generator seed and the epoch
(:func:`scratch_fill`), so the host rebuilds them for a trace, a replay or a
qtest reproducer without asking the guest.

Layout of one fill (little endian): :data:`RING_DESCRIPTORS` descriptors of
16 bytes (an address inside the scratch memory, 16-byte aligned, a length that
is a power of two up to 4 KiB, 32 random flag bits), the layout most DMA rings
share (e1000 and AHCI PRDs, virtio, UHCI frame lists read the addresses), then
buffers of random words, one in four of which is a pair of 32-bit pointers into
the scratch memory (:func:`buffer_word`).

Values read back from the device are *not* in the dictionary: they depend on
the device's state, so op ``i`` could no longer be computed from the seed alone
(resume after a hang, host/guest equality, the ``G`` trace records and replay
all rest on that).

The in-guest executor (``executor/iofuzz_exec.c``) computes the same values and
fills; a unit test compares both byte for byte.
"""

from __future__ import annotations

from avocado_iofuzz.model.dma_layouts import LAYOUT_GENERIC, LAYOUT_SIZE, layout_fill
from avocado_iofuzz.model.generator import GAMMA, MASK64, mix64, random_word

VALUES_UNIFORM = "uniform"
VALUES_DMA = "dma"
# The value modes a RangePlan may carry (its ``values`` field); the first is the default.
VALUE_MODES = (VALUES_UNIFORM, VALUES_DMA)

# 112 MiB: above the kernel image (loaded at 16 MiB, its bss ends near 68 MiB),
# below the initrd (placed at the top of the 256 MiB guests) and below 256 MiB,
# which every DMA mask reaches (the edu device's default is 28 bits).
SCRATCH_BASE = 0x0700_0000
SCRATCH_SIZE = 0x4000
SCRATCH_END = SCRATCH_BASE + SCRATCH_SIZE - 1
assert SCRATCH_SIZE == LAYOUT_SIZE, "the device layouts are drawn for the scratch memory's size"
SCRATCH_KERNEL_PARAM = f"memmap={SCRATCH_SIZE // 1024}K${SCRATCH_BASE:#x}"
SCRATCH_EPOCH_OPS = 1 << 12
DESCRIPTOR_BYTES = 16
RING_DESCRIPTORS = 256
RING_BYTES = RING_DESCRIPTORS * DESCRIPTOR_BYTES
# Distinguishes the fill's generator stream from the ops' stream of the same range.
_FILL_STREAM = 0x5C7A7C4D3A11F00D
# Lengths a driver writes into a size register: the scratch memory, its ring,
# common buffer and frame sizes.
SIZES = (SCRATCH_SIZE, RING_BYTES, RING_DESCRIPTORS, DESCRIPTOR_BYTES, 8, 64, 128, 256, 512, 1024, 1514, 2048, 4096)


def scratch_epoch(op_index: int) -> int:
    return op_index // SCRATCH_EPOCH_OPS


def fill_points(first: int, stop: int) -> list[int]:
    """Op indices in ``first .. stop-1`` before which the executor fills the scratch memory.

    The first op it runs (a start or a resume) and every epoch boundary after it.
    """
    if first >= stop:
        return []
    boundary = (first // SCRATCH_EPOCH_OPS + 1) * SCRATCH_EPOCH_OPS
    return [first, *range(boundary, stop, SCRATCH_EPOCH_OPS)]


def fill_seed(rseed: int, epoch: int) -> int:
    return mix64(((rseed ^ _FILL_STREAM) + (epoch + 1) * GAMMA) & MASK64)


def scratch_fill(rseed: int, epoch: int, layout: str = LAYOUT_GENERIC) -> bytes:
    """The :data:`SCRATCH_SIZE` bytes the executor writes at the start of ``epoch`` of a range.

    ``layout`` is the range's (:data:`~avocado_iofuzz.model.dma_layouts.LAYOUTS`):
    the generic ring below, or one device family's structures.
    """
    seed = fill_seed(rseed, epoch)
    if layout != LAYOUT_GENERIC:
        return layout_fill(layout, SCRATCH_BASE, seed)
    out = bytearray()
    for d in range(RING_DESCRIPTORS):
        word = random_word(seed, 2 * d)
        flags = random_word(seed, 2 * d + 1) & 0xFFFF_FFFF
        address = SCRATCH_BASE + (word & (SCRATCH_SIZE - 1) & ~0xF)
        length = 1 << ((word >> 32) % 13)
        out += address.to_bytes(8, "little") + length.to_bytes(4, "little") + flags.to_bytes(4, "little")
    for k in range((SCRATCH_SIZE - RING_BYTES) // 8):
        out += buffer_word(random_word(seed, 2 * RING_DESCRIPTORS + k)).to_bytes(8, "little")
    return bytes(out)


def buffer_word(word: int) -> int:
    """A word of the buffers after the ring: random, or (1 in 4) two 32-bit pointers into the scratch memory.

    Link pointers (USB frame lists, queue heads, chained descriptors) are 32-bit
    words anywhere in a buffer: a device that follows one lands in the scratch
    memory again.
    """
    if word >> 62:
        return word
    low = SCRATCH_BASE + (word & (SCRATCH_SIZE - 1) & ~0xF)
    high = SCRATCH_BASE + ((word >> 16) & (SCRATCH_SIZE - 1) & ~0xF)
    return high << 32 | low


def dictionary_value(word: int, width: int) -> int:
    """The value a ``dma`` range writes for the generator word ``word``, in ``width`` bytes.

    The top 4 bits pick the kind of value, the low bits shape it; O(1), so op
    ``i`` stays computable on its own.
    """
    bits = 8 * width
    mask = (1 << bits) - 1
    kind = word >> 60
    if kind <= 4:
        value = word  # uniform, as in the uniform mode
    elif kind == 5:
        # a scratch page's frame number: a register that takes an address >> 12 (virtio legacy's QUEUE_PFN)
        value = (SCRATCH_BASE + (word & (SCRATCH_SIZE - 1) & ~0xFFF)) >> 12
    elif kind == 6:
        value = SCRATCH_BASE + (word & (SCRATCH_SIZE - 1) & ~0xF)  # a descriptor or buffer address
    elif kind == 7:
        value = SCRATCH_BASE + (word & (SCRATCH_SIZE - 1) & ~0xFFF)  # a page: ring and frame list bases
    elif kind == 8:
        # one width-sized lane of a scratch address: a 64-bit register written in narrower pieces
        lanes = 8 // width
        address = SCRATCH_BASE + (word & (SCRATCH_SIZE - 1) & ~0xF)
        value = address >> (bits * (((word >> 56) & 7) % lanes)) if lanes > 1 else address
    elif kind == 9:
        value = 0
    elif kind == 10:
        value = mask
    elif kind == 11:
        value = word & 31  # small integers: indices, counts, command codes
    elif kind == 12:
        value = 1 << ((word & 63) % bits)
    elif kind == 13:
        value = SIZES[(word & 0xFF) % len(SIZES)]
    elif kind == 14:
        value = word & (SCRATCH_SIZE - 1)  # an offset into the scratch memory
    else:
        value = (1 << ((word & 63) % bits + 1)) - 1  # a mask of low bits
    return value & mask
