"""Ops of every address space as QEMU qtest commands, and the PCI setup a qtest replay needs first.

The mapping (one op -> qtest lines):

* ``pio``:  ``inb|inw|inl PORT`` / ``outb|outw|outl PORT VALUE``;
* ``mmio``: ``readb|readw|readl|readq ADDR`` / ``writeb|writew|writel|writeq ADDR VALUE``
  at the guest-physical address the executor accessed;
* ``pci``:  a type-1 configuration cycle: ``outl 0xcf8 ADDRESS`` (enable bit,
  bus, device, function, dword-aligned register), then ``inX`` / ``outX`` of
  the op's width at ``0xcfc + (register & 3)``. Registers above 0xff have no
  type-1 cycle: such an op is refused (the pci kind stops at 0xff by default).

Under ``-qtest`` the firmware never runs, so no BAR holds an address and no
device decodes memory. :func:`pci_setup_commands` writes back what the guest's
firmware had assigned (from the PCI listing recorded with the run) and
enables decoding, so that MMIO ops reach the BARs they reached in the guest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from avocado_iofuzz.model.dma import SCRATCH_BASE, SCRATCH_END
from avocado_iofuzz.model.pci import IORESOURCE_IO, ROM_RESOURCE, PciFunction, cf8_address, config_address
from avocado_iofuzz.model.program import PIO_MAX_PORT, SPACE_MMIO, SPACE_PCI, SPACE_PIO, Op

_SUFFIX = {1: "b", 2: "w", 4: "l", 8: "q"}
CONFIG_ADDRESS_PORT = 0xCF8
CONFIG_DATA_PORT = 0xCFC
IORESOURCE_MEM_64 = 0x100000
IORESOURCE_PCI_FIXED = 0x10  # legacy addresses (an IDE controller's 0x1f0...), no BAR behind them
# command register: I/O space, memory space, bus master
COMMAND_ENABLE = 0x7
MEMORY_WRITE_CHUNK = 4096  # bytes per qtest write line: 8 k hex digits, a line a person can still page through


def qtest_commands(op: Op) -> list[str]:
    """The qtest lines that perform ``op`` (ValueError when qtest cannot express it)."""
    if op.kind not in ("r", "w"):
        raise ValueError(f"op {op}: kind must be 'r' or 'w'")
    suffix = _SUFFIX.get(op.width)
    if suffix is None or (op.space != SPACE_MMIO and op.width == 8):
        raise ValueError(f"op {op}: no {op.space} qtest command of width {op.width}")
    if op.kind == "w" and not 0 <= op.value < 1 << (8 * op.width):
        raise ValueError(f"op {op}: value does not fit {op.width} byte(s)")
    if op.space == SPACE_PIO:
        if not 0 <= op.port <= PIO_MAX_PORT:
            raise ValueError(f"op {op}: port is outside 0x0..{PIO_MAX_PORT:#x}")
        return [_port(op.kind, suffix, op.port, op.value)]
    if op.space == SPACE_MMIO:
        if op.kind == "r":
            return [f"read{suffix} {op.port:#x}"]
        return [f"write{suffix} {op.port:#x} {op.value:#x}"]
    if op.space == SPACE_PCI:
        register = op.port & 0xFFF
        if (register & 3) + op.width > 4:
            raise ValueError(f"op {op}: a {op.width}-byte config access at register {register:#x} straddles a dword")
        data_port = CONFIG_DATA_PORT + (register & 3)
        return [f"outl {CONFIG_ADDRESS_PORT:#x} {cf8_address(op.port):#x}", _port(op.kind, suffix, data_port, op.value)]
    raise ValueError(f"op {op}: unknown address space {op.space!r}")


def _port(kind: str, suffix: str, port: int, value: int) -> str:
    return f"in{suffix} {port:#x}" if kind == "r" else f"out{suffix} {port:#x} {value:#x}"


def format_script(ops: Iterable[Op], setup: Sequence[str] = ()) -> str:
    """A whole qtest script: the setup lines, then every op's lines; newline-terminated.

    Consecutive 8-byte writes filling the scratch memory (DMA-aware values)
    become ``write ADDR LEN DATA`` lines: guest RAM, written as bytes.
    """
    lines = list(setup)
    memory: list[Op] = []
    for op in ops:
        if _is_memory_write(op) and (not memory or op.port == memory[-1].port + 8):
            memory.append(op)
            continue
        lines += memory_write_commands(memory)
        memory = [op] if _is_memory_write(op) else []
        if not memory:
            lines += qtest_commands(op)
    lines += memory_write_commands(memory)
    return "".join(line + "\n" for line in lines)


def _is_memory_write(op: Op) -> bool:
    return op.kind == "w" and op.space == SPACE_MMIO and op.width == 8 and SCRATCH_BASE <= op.port <= SCRATCH_END - 7


def memory_write_commands(ops: Sequence[Op], chunk: int = MEMORY_WRITE_CHUNK) -> list[str]:
    """Contiguous 8-byte writes as ``write ADDR LEN 0xDATA`` lines of at most ``chunk`` bytes."""
    data = b"".join(op.value.to_bytes(8, "little") for op in ops)
    base = ops[0].port if ops else 0
    return [
        f"write {base + offset:#x} {len(data[offset : offset + chunk])} 0x{data[offset : offset + chunk].hex()}"
        for offset in range(0, len(data), chunk)
    ]


def _config_write(bus: int, device: int, function: int, register: int, width: int, value: int) -> list[str]:
    op = Op("w", config_address(bus, device, function, register), width, value, SPACE_PCI)
    return qtest_commands(op)


def pci_setup_commands(functions: Sequence[PciFunction]) -> list[str]:
    """Config writes that give every bus-0 function the BARs the guest's firmware gave it, decoding on.

    Functions behind bridges are left alone: their addresses also need the
    bridges' windows, which a replay of a device row does not need (QEMU
    puts ``-device`` on bus 0 unless told otherwise).
    """
    lines: list[str] = []
    for function in functions:
        if function.domain or function.bus:
            continue
        where = (function.bus, function.device, function.function)
        bars = [
            r
            for r in function.resources
            if r.index < ROM_RESOURCE and r.assigned and not r.flags & IORESOURCE_PCI_FIXED
        ]
        for bar in bars:
            register = 0x10 + 4 * bar.index
            low = bar.start & (0xFFFFFFFC if bar.flags & IORESOURCE_IO else 0xFFFFFFF0)
            lines += _config_write(*where, register, 4, low)
            if bar.flags & IORESOURCE_MEM_64:
                lines += _config_write(*where, register + 4, 4, bar.start >> 32)
        if bars:
            lines += _config_write(*where, 0x04, 2, COMMAND_ENABLE)
    return lines
