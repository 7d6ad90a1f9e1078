"""Putting a PCI function's header back after a config range: which registers, which writes, in what order.

Random config writes move a function's BARs or turn its decoding off, and
QEMU keeps it so for the rest of its life: every later op aimed at the
device's ports or MMIO BAR hits nothing (piix3-usb-uhci: BAR4 from 0xc000 to
0xd4177aa0, I/O decoding off). So the executor saves, on entering a ``pci``
range, the registers that decide where the function decodes, and writes each
one that changed back when it leaves the range (ops done, a stop signal, an
error): decoding off first, then the registers, then the command register as
it was, so that no half-restored BAR decodes in between (a resume into the
middle of a range is handed the header saved when the range was entered,
``@SAVED`` / ``--pci-saved``). It prints the writes (``@RESTORE``) before
making them; the host records them in the trace (event
:data:`RESTORE_EVENT`) and every replay makes them again, as ordinary config
writes (:func:`restore_ops`).

The executor (``iofuzz_exec.c``: ``plan_restore``) decides the writes;
:func:`plan_restore` here is the same rule, kept in step with it: the unit
tests pin the rule, and a functional test checks the executor's writes, as
QEMU logged them, against it.

What is left alone, and why: the status register (write 1 to clear: writing
its old value back would clear bits), the capabilities (MSI/MSI-X address and
enable, power management state: they change how the device interrupts and its
power state, not where QEMU 7.2 decodes it), a host bridge's chipset
registers (PAM, SMRAM), and
read-only or informational registers (IDs, class, cache line size, latency
timer, interrupt line).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from avocado_iofuzz.model.pci import split_config_address
from avocado_iofuzz.model.program import SPACE_PCI, Op

COMMAND_REGISTER = 0x04
COMMAND_WIDTH = 2
COMMAND_DECODE = 0x3  # I/O space, memory space
HEADER_TYPE_REGISTER = 0x0E
# event kind in the trace: {"range": I, "op": J, "writes": [[config address, width, value], ...]}
RESTORE_EVENT = "pci_restore"
# key of the campaign's "start" event: whether the executor put headers back (absent: an older run, it did not)
START_KEY = "pci_restore"

# (register, width) the executor saves, by header type (low 7 bits of register 0x0e)
HEADER_REGISTERS: dict[int, tuple[tuple[int, int], ...]] = {
    # BARs 0-5 (a 64-bit BAR is two of them: both halves), expansion ROM BAR
    0: ((0x10, 4), (0x14, 4), (0x18, 4), (0x1C, 4), (0x20, 4), (0x24, 4), (0x30, 4)),
    # a bridge: BARs 0-1, bus numbers, I/O base/limit (not the secondary status beside them), memory and
    # prefetchable windows with their upper halves, I/O upper halves, ROM, bridge control (secondary bus
    # reset, ISA/VGA forwarding; not the interrupt line and pin beside it)
    1: (
        (0x10, 4), (0x14, 4), (0x18, 4), (0x1C, 2), (0x20, 4), (0x24, 4),
        (0x28, 4), (0x2C, 4), (0x30, 4), (0x38, 4), (0x3E, 2),
    ),
}  # fmt: skip


class RestoreError(ValueError):
    """A restore record (an ``@RESTORE`` line or a trace event) is malformed; the message says what."""


@dataclass(frozen=True)
class ConfigWrite:
    """One config write of a restore: ``width`` bytes of ``value`` at ``register`` of the function."""

    register: int
    width: int
    value: int

    def __post_init__(self) -> None:
        if self.width not in (1, 2, 4) or not 0 <= self.register <= 0xFFF or self.register % self.width:
            raise RestoreError(
                f"config write of {self.width} byte(s) at register {self.register:#x}: not an aligned access"
            )
        if not 0 <= self.value < 1 << (8 * self.width):
            raise RestoreError(
                f"config write at {self.register:#x}: value {self.value:#x} does not fit {self.width} byte(s)"
            )

    def as_text(self) -> str:
        """How ``@RESTORE`` prints it: ``0xREG:W:0xVALUE``."""
        return f"{self.register:#x}:{self.width}:{self.value:#x}"


def header_registers(header_type: int) -> tuple[tuple[int, int], ...]:
    """The (register, width) pairs saved for a header type; none (the command register only) for others."""
    return HEADER_REGISTERS.get(header_type & 0x7F, ())


def plan_restore(
    header_type: int, saved_command: int, saved: Mapping[int, int], now_command: int, now: Mapping[int, int]
) -> list[ConfigWrite]:
    """The writes that take the header from ``now`` back to ``saved`` (register -> value maps).

    Decoding off first when an address register changed and decoding is on,
    then each changed register (ascending), then the command register unless
    it already is as saved. Nothing changed: no write.
    """
    registers = header_registers(header_type)
    changed = [(register, width) for register, width in registers if now[register] != saved[register]]
    writes: list[ConfigWrite] = []
    command = now_command
    if changed and command & COMMAND_DECODE:
        command &= ~COMMAND_DECODE
        writes.append(ConfigWrite(COMMAND_REGISTER, COMMAND_WIDTH, command))
    writes += [ConfigWrite(register, width, saved[register]) for register, width in changed]
    if command != saved_command:
        writes.append(ConfigWrite(COMMAND_REGISTER, COMMAND_WIDTH, saved_command))
    return writes


def parse_writes(words: Sequence[str]) -> tuple[ConfigWrite, ...]:
    """``0xREG:W:0xVALUE`` words (the tail of an ``@RESTORE`` line) -> writes; RestoreError names a bad word."""
    writes = []
    for word in words:
        parts = word.split(":")
        try:
            if len(parts) != 3:
                raise ValueError
            register, width, value = int(parts[0], 16), int(parts[1]), int(parts[2], 16)
        except ValueError:
            raise RestoreError(f"restore write {word!r} is not 0xREGISTER:WIDTH:0xVALUE") from None
        writes.append(ConfigWrite(register, width, value))
    return tuple(writes)


def event_writes(function_address: int, writes: Sequence[ConfigWrite]) -> list[list[int]]:
    """The trace event's ``writes``: ``[config address, width, value]`` with the function's ECAM address."""
    base = function_address & ~0xFFF
    return [[base | w.register, w.width, w.value] for w in writes]


def restore_ops(event_data: Mapping[str, object]) -> list[Op]:
    """The config write ops a :data:`RESTORE_EVENT` recorded, in order; RestoreError if it is malformed."""
    raw = event_data.get("writes")
    if not isinstance(raw, list) or not raw:
        raise RestoreError(f"{RESTORE_EVENT} event without a list of writes: {raw!r}")
    ops = []
    for entry in raw:
        if not (isinstance(entry, list) and len(entry) == 3 and all(isinstance(v, int) for v in entry)):
            raise RestoreError(f"{RESTORE_EVENT} write {entry!r} is not [config address, width, value]")
        address, width, value = entry
        try:
            split_config_address(address)
        except ValueError as err:
            raise RestoreError(f"{RESTORE_EVENT} write {entry!r}: {err}") from None
        write = ConfigWrite(address & 0xFFF, width, value)
        ops.append(Op("w", address, write.width, write.value, SPACE_PCI))
    return ops
