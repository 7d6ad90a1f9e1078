"""What every device layout of the scratch memory shares: its size, the one-in-2**n draw, the dword view.

Here rather than in :mod:`avocado_iofuzz.model.dma_layouts` because that
module imports the recipe-only layouts of this package; they and it take
these from one place (the executor's ``LAYOUT_SIZE``, ``maybe`` and
``store_bytes`` are their C twins).
"""

from __future__ import annotations

LAYOUT_SIZE = 0x4000  # device layouts are drawn for 16 KiB (the executor refuses another size for them)


def maybe(word: int, shift: int, bits: int) -> bool:
    """True one time in 2**bits: the bit field of ``word`` at ``shift`` is zero."""
    return (word >> shift) & ((1 << bits) - 1) == 0


def dwords_of(memory: bytes | bytearray) -> list[int]:
    """The little-endian dwords of bytes built in a buffer (a last partial dword zero-padded)."""
    padded = bytes(memory) + bytes(-len(memory) % 4)
    return [int.from_bytes(padded[at : at + 4], "little") for at in range(0, len(padded), 4)]
