"""PCI functions from the guest's sysfs, and the config-space ranges to fuzz.

Pure functions, no I/O: the VT test runs :data:`PCI_LISTING_COMMAND` in the
guest and hands its output here.

Config addresses use the ECAM layout, ``bus << 20 | device << 15 | function
<< 12 | register``, so one integer names a register of one function: an
op's ``port`` in the ``pci`` space. The executor turns it into a
``pread``/``pwrite`` of the function's sysfs ``config`` file; a qtest
reproducer into a type-1 configuration cycle through ports 0xcf8/0xcfc
(:func:`cf8_address`), which reaches registers 0x00-0xff only -- hence the
default :data:`CONFIG_SPACE_SIZE` of 256 bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from avocado_iofuzz.program import SPACE_PCI
from avocado_iofuzz.ranges import RangeError, cut_spans, name_matches
from avocado_iofuzz.target import Target

# What the VT test runs in the guest: one header line per function, then its
# sysfs ``resource`` file (BARs 0-5, the ROM, then bridge windows).
PCI_LISTING_COMMAND = (
    'for d in /sys/bus/pci/devices/*; do [ -e "$d/config" ] || continue; '
    'echo "== $d $(cat $d/vendor) $(cat $d/device) $(cat $d/class)"; cat "$d/resource"; done'
)
CONFIG_SPACE_SIZE = 0x100
MAX_CONFIG_SPACE_SIZE = 0x1000

# Resource flags (include/linux/ioport.h), as sysfs ``resource`` prints them.
IORESOURCE_IO = 0x100
IORESOURCE_MEM = 0x200
IORESOURCE_DISABLED = 0x10000000
IORESOURCE_UNSET = 0x20000000
ROM_RESOURCE = 6  # lines 0-5 are BARs, 6 the expansion ROM

# Config registers cut out of the pci kind by default: PATTERN@0xFIRST-0xLAST
# (a function pattern, see PciFunction.identifiers, then register offsets).
DEFAULT_CONFIG_HOLES: dict[str, str] = {
    "8086:29c0@0x60-0x67": (
        "q35 host bridge PCIEXBAR: moves or disables MMCONFIG, the guest kernel's only path to extended "
        "config space (0x100-0xfff of PCIe functions): every later extended access, the executor's "
        "included (pci_config_size above 0x100), would read zeros (registers 0x00-0xff go through "
        "ports 0xcf8/0xcfc and stay reachable)"
    ),
}

_HEADER = re.compile(
    r"^== (?P<path>\S*?(?P<address>(?P<domain>[0-9a-f]{4}):(?P<bus>[0-9a-f]{2}):(?P<device>[0-1][0-9a-f])"
    r"\.(?P<function>[0-7]))) 0x(?P<vendor>[0-9a-f]{4}) 0x(?P<product>[0-9a-f]{4}) 0x(?P<class>[0-9a-f]{6})$"
)
_RESOURCE = re.compile(r"^0x([0-9a-f]{1,16}) 0x([0-9a-f]{1,16}) 0x([0-9a-f]{1,16})$")
_HOLE = re.compile(r"^(?P<pattern>[^@\s]+)@(0x)?(?P<first>[0-9a-fA-F]+)(?:-(0x)?(?P<last>[0-9a-fA-F]+))?$")


class PciListingError(RangeError):
    """Malformed PCI listing or pci param; the message names the line or the param."""


@dataclass(frozen=True)
class PciResource:
    """Line ``index`` of a function's sysfs ``resource`` file."""

    index: int
    start: int
    end: int
    flags: int

    @property
    def assigned(self) -> bool:
        return self.end > self.start and not self.flags & (IORESOURCE_DISABLED | IORESOURCE_UNSET)

    @property
    def is_memory_bar(self) -> bool:
        """A memory BAR the executor can map through ``resource<index>`` (not the ROM, not a bridge window)."""
        return self.index < ROM_RESOURCE and bool(self.flags & IORESOURCE_MEM) and self.assigned


@dataclass(frozen=True)
class PciFunction:
    domain: int
    bus: int
    device: int
    function: int
    vendor: int
    product: int
    class_code: int
    resources: tuple[PciResource, ...] = field(default=())

    @property
    def address(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.device:02x}.{self.function:x}"

    @property
    def ids(self) -> str:
        return f"{self.vendor:04x}:{self.product:04x}"

    @property
    def name(self) -> str:
        """``0000:00:02.0 8086:100e``: where it is and what it is."""
        return f"{self.address} {self.ids}"

    @property
    def identifiers(self) -> tuple[str, ...]:
        """Every name a pattern may use for this function."""
        return (self.name, self.address, self.address[5:], self.ids)

    def matches(self, patterns: Iterable[str]) -> bool:
        patterns = list(patterns)
        return any(name_matches(name, patterns) for name in self.identifiers)

    def memory_bars(self) -> list[PciResource]:
        return [r for r in self.resources if r.is_memory_bar]


def parse_pci_listing(text: str, source: str = "PCI listing") -> list[PciFunction]:
    """Functions from :data:`PCI_LISTING_COMMAND`'s output, in address order.

    PciListingError names the first line that is neither a ``== <sysfs dir>
    <vendor> <device> <class>`` header nor a ``0xSTART 0xEND 0xFLAGS``
    resource line following one.
    """
    functions: list[PciFunction] = []
    header: re.Match[str] | None = None
    resources: list[PciResource] = []
    seen: set[str] = set()

    def close() -> None:
        if header is not None:
            functions.append(
                PciFunction(
                    int(header["domain"], 16),
                    int(header["bus"], 16),
                    int(header["device"], 16),
                    int(header["function"], 16),
                    int(header["vendor"], 16),
                    int(header["product"], 16),
                    int(header["class"], 16),
                    tuple(resources),
                )
            )

    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        where = f"{source}:{lineno}"
        if line.startswith("=="):
            match = _HEADER.match(line)
            if not match:
                raise PciListingError(f"{where}: not '== <sysfs dir> 0xVENDOR 0xDEVICE 0xCLASS': {line!r}")
            if match["address"] in seen:
                raise PciListingError(f"{where}: function {match['address']} is listed twice")
            close()
            seen.add(match["address"])
            header, resources = match, []
            continue
        match = _RESOURCE.match(line)
        if not match:
            raise PciListingError(f"{where}: not a resource line '0xSTART 0xEND 0xFLAGS': {line!r}")
        if header is None:
            raise PciListingError(f"{where}: resource line before any '== <sysfs dir> ...' header")
        start, end, flags = (int(group, 16) for group in match.groups())
        if start > end:
            raise PciListingError(f"{where}: resource start {start:#x} is above its end {end:#x}")
        resources.append(PciResource(len(resources), start, end, flags))
    close()
    return sorted(functions, key=lambda f: (f.domain, f.bus, f.device, f.function))


def config_address(bus: int, device: int, function: int, register: int = 0) -> int:
    """The ECAM-layout address of a config register (the ``pci`` space's addresses)."""
    if not (0 <= bus <= 0xFF and 0 <= device <= 0x1F and 0 <= function <= 7 and 0 <= register <= 0xFFF):
        raise ValueError(f"no PCI config register {bus:#x}:{device:#x}.{function:#x} @{register:#x}")
    return bus << 20 | device << 15 | function << 12 | register


def split_config_address(address: int) -> tuple[int, int, int, int]:
    """``(bus, device, function, register)`` of an ECAM-layout address."""
    if not 0 <= address <= 0xFFFFFFF:
        raise ValueError(f"PCI config address {address:#x} is outside 0x0..0xfffffff")
    return address >> 20, (address >> 15) & 0x1F, (address >> 12) & 0x7, address & 0xFFF


def cf8_address(address: int) -> int:
    """The value for port 0xcf8 that selects the dword holding ``address`` (type-1 config cycle)."""
    bus, device, function, register = split_config_address(address)
    if register > 0xFF:
        raise ValueError(f"config register {register:#x} is beyond 0xff: ports 0xcf8/0xcfc cannot reach it")
    return 0x80000000 | bus << 16 | device << 11 | function << 8 | (register & 0xFC)


def parse_config_holes(text: str, what: str = "skip_pci_config") -> list[tuple[str, int, int]]:
    """``PATTERN@0xFIRST[-0xLAST]`` items (spaces between) -> (pattern, first, last) register spans."""
    holes = []
    for token in text.split():
        match = _HOLE.match(token)
        if not match:
            raise PciListingError(f"{what}: {token!r} is not PATTERN@0xFIRST-0xLAST (e.g. 8086:29c0@0x60-0x67)")
        first = int(match["first"], 16)
        last = int(match["last"], 16) if match["last"] else first
        if first > last or last >= MAX_CONFIG_SPACE_SIZE:
            raise PciListingError(f"{what}: {token!r} is not a register span within 0x0-0xfff")
        holes.append((match["pattern"], first, last))
    return holes


def config_targets(
    functions: Sequence[PciFunction],
    skip: Sequence[str] = (),
    only: Sequence[str] = (),
    holes: Sequence[tuple[str, int, int]] = (),
    size: int = CONFIG_SPACE_SIZE,
) -> list[Target]:
    """The config space of each function (registers ``0 .. size-1``), minus skipped functions and holes.

    Functions outside PCI domain 0 are left out: the ECAM-layout address has
    no domain. ``only`` names functions that must exist (an error otherwise:
    a device row whose device did not show up must not pass unnoticed).
    """
    if not 4 <= size <= MAX_CONFIG_SPACE_SIZE or size % 4:
        raise PciListingError(f"pci_config_size: {size:#x} is not a multiple of 4 within 0x4-0x1000")
    candidates = [f for f in functions if f.domain == 0 and not f.matches(skip)]
    if only:
        missing = [p for p in only if not any(f.matches([p]) for f in candidates)]
        if missing:
            known = ", ".join(f.name for f in candidates) or "none"
            raise PciListingError(f"only_pci: no PCI function matches {missing} (functions: {known})")
        candidates = [f for f in candidates if f.matches(only)]
    targets = []
    for function in candidates:
        base = config_address(function.bus, function.device, function.function)
        pieces = cut_spans(
            0, size - 1, [(first, last) for pattern, first, last in holes if function.matches([pattern])]
        )
        targets += [
            Target(SPACE_PCI, base + lo, base + hi, function.name, function.identifiers[1:]) for lo, hi in pieces
        ]
    return targets
