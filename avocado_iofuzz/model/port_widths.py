"""The natural access widths of a port range: at which widths, and over which ports, it is fuzzed.

``pio_widths`` (default ``1 2 4``) names the widths a run may use; each
port range is fuzzed at every one of them it can hold:

* a width gets the range's *aligned interior*: the ``width``-aligned slots
  that lie wholly inside the range. A 1-byte range gets width 1 only; a
  2-byte range at an even port gets 1 and 2; a 4-byte range at a multiple of
  4 gets 1, 2 and 4; ``0x1f1-0x1f7`` gets 1 (7 slots), 2 (``0x1f2-0x1f7``)
  and 4 (``0x1f4-0x1f7``). Aligned, because x86 devices decode their 16-
  and 32-bit registers at even and dword-aligned ports (an ATA data port, a
  PCI data window, an ACPI timer); wholly inside, because a slot that
  reached past the range's end would touch a port the selection left out
  (a ``skip_ports`` port, or another device). A width the range holds no
  slot of is skipped (logged), never rounded;
* a *fixed-width register* is reached at its own width only, and its other
  ports never alone (:data:`FIXED_REGISTERS`): the PCI configuration address
  register CONFIG_ADDRESS, the dword at 0xcf8-0xcfb of the kernel's
  ``PCI conf1`` range. QEMU latches an address there from 4-byte writes
  only; a byte or word at 0xcf8-0xcfb is ignored. It is fuzzed as one
  4-byte slot whenever port 0xcf8 is in a range, even with the default
  ``skip_ports`` cutting 0xcf9 (the reset control register) out of it: a
  4-byte write at 0xcf8 reaches CONFIG_ADDRESS as a whole, and the reset
  control register only decodes byte accesses at 0xcf9 (QEMU's own
  ``memory_region_ops_write`` trace shows ``pci-conf-idx`` written with
  size 4, and never ``piix3-reset-control`` / ``lpc-reset-control``, on
  pc and q35). Naming 0xcf8 in ``skip_ports`` leaves the register out.
  With ``pio_widths`` lacking 4 the register is not fuzzed at all: a
  narrower write to it does nothing.

The width of each slot is the width of the plan it belongs to
(:class:`~avocado_iofuzz.model.program.RangePlan`), so the trace, the
generator and every replay carry it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from avocado_iofuzz.model.program import PIO_WIDTHS

DEFAULT_PIO_WIDTHS = PIO_WIDTHS


@dataclass(frozen=True)
class FixedRegister:
    """Ports ``port .. port + width - 1`` are one register that means something at ``width`` only."""

    port: int
    width: int
    name: str

    @property
    def last(self) -> int:
        return self.port + self.width - 1


CONF1_ADDRESS = FixedRegister(0xCF8, 4, "PCI conf1 CONFIG_ADDRESS")
FIXED_REGISTERS: tuple[FixedRegister, ...] = (CONF1_ADDRESS,)


def aligned_interior(start: int, end: int, width: int) -> tuple[int, int] | None:
    """The ``width``-aligned slots wholly inside ``[start, end]``, as ``(first, last)``; None if there are none."""
    first = -(-start // width) * width
    last = (end + 1) // width * width - 1
    return (first, last) if last >= first else None


def _without(pieces: list[tuple[int, int]], register: FixedRegister) -> list[tuple[int, int]]:
    """``pieces`` with the register's ports cut out."""
    kept = []
    for first, last in pieces:
        if register.last < first or register.port > last:
            kept.append((first, last))
            continue
        if first < register.port:
            kept.append((first, register.port - 1))
        if register.last < last:
            kept.append((register.last + 1, last))
    return kept


def port_spans(
    start: int, end: int, widths: Sequence[int], registers: Sequence[FixedRegister] = FIXED_REGISTERS
) -> list[tuple[int, int, int]]:
    """``(width, first, last)`` of every span the port range ``[start, end]`` is fuzzed at, widths in given order.

    Each span is a whole number of aligned ``width``-byte slots; a range
    split by a fixed register gives one span per piece.
    """
    spans = []
    for width in widths:
        pieces = [(start, end)]
        for register in registers:
            if width == register.width:
                # the register is one slot of its width: reached whole from its first port, whatever else was cut
                pieces = [
                    (first, max(last, register.last) if first <= register.port <= last else last)
                    for first, last in pieces
                ]
            else:
                pieces = _without(pieces, register)
        for first, last in pieces:
            interior = aligned_interior(first, last, width)
            if interior is not None:
                spans.append((width, *interior))
    return spans
