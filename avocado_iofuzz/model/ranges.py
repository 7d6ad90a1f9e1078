"""From the guest's ``/proc/ioports`` and the test params to the port ranges to fuzz.

Pure functions, no I/O: the VT test reads the file through its session and
hands the text here, so every rule below is unit-testable on captured text.

Terms:
  * ``/proc/ioports`` is a tree: each level of nesting indents by two spaces.
    Buses ("PCI Bus 0000:00") span thousands of ports and contain the devices,
    so only the *leaves* are fuzzed; a parent's ports are reached through its
    children, and unclaimed ports can be added with ``extra_ioports``.
  * ``skip_devices`` names ranges (exactly as the kernel prints them; ``*``
    matches any run of characters); a skipped range takes its whole subtree
    with it.
  * ``skip_ports`` names single ports or spans that are cut out of whatever
    range holds them (splitting it), for the ports that reset or power off
    the guest or carry its console.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

PORT_MAX = 0xFFFF

# Why each port is skipped by default; docs/reference/params.rst, "iofuzz params", lists the same table.
DEFAULT_SKIP_PORTS: dict[str, str] = {
    "0x64": "i8042 command port: command 0xfe pulses CPU reset, 0xd1 rewrites the reset line",
    "0x92": "System control port A: bit 0 is a fast CPU reset",
    "0x3f8-0x3ff": "COM1, the serial console the test talks through",
    "0x514-0x51b": (
        "fw_cfg DMA address: a 4-byte write at 0x518 starts a DMA at the guest address written; from random "
        "guest memory as its descriptor QEMU zeroes or copies up to 4 GiB, answering nothing meanwhile"
    ),
    "0x604-0x605": "ACPI PM1a control block: SLP_EN powers the guest off",
    "0xcf9": "Reset control register: writes reset the machine",
}

_LINE = re.compile(r"^(?P<indent> *)(?P<start>[0-9a-fA-F]+)-(?P<end>[0-9a-fA-F]+) : (?P<name>.*)$")
_SPAN = re.compile(r"^(0x)?([0-9a-fA-F]+)(?:-(0x)?([0-9a-fA-F]+))?$")


class RangeError(ValueError):
    """Malformed ioports text or range param; the message names the culprit."""


@dataclass
class PortRange:
    """One named range, inclusive on both ends, with its nested children."""

    start: int
    end: int
    name: str
    children: list[PortRange] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    def __str__(self) -> str:
        return f"{self.start:#06x}-{self.end:#06x} {self.name}"


def parse_ioports(text: str, source: str = "/proc/ioports") -> list[PortRange]:
    """Parse ``/proc/ioports`` text into a forest of ranges.

    Raises RangeError naming the line number and text of the first line that
    is not ``<indent>START-END : name`` or whose nesting does not fit.
    """
    return parse_resource_tree(text, source, PORT_MAX, "port")


def parse_resource_tree(text: str, source: str, max_address: int, what: str) -> list[PortRange]:
    """Parse a kernel resource tree (``/proc/ioports``, ``/proc/iomem``) into a forest.

    Both files print one ``START-END : name`` per resource, nested by two
    spaces per level; only the address limit differs (``what`` names the
    unit in errors).
    """
    roots: list[PortRange] = []
    # stack of (indent, range) for the current chain of open parents
    stack: list[tuple[int, PortRange]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        match = _LINE.match(line)
        if not match:
            raise RangeError(f"{source}:{lineno}: not 'START-END : name': {line!r}")
        indent = len(match["indent"])
        if indent % 2:
            raise RangeError(f"{source}:{lineno}: odd indentation ({indent} spaces): {line!r}")
        start, end = int(match["start"], 16), int(match["end"], 16)
        if start > end or end > max_address:
            raise RangeError(f"{source}:{lineno}: bad {what} span {start:#x}-{end:#x}: {line!r}")
        node = PortRange(start, end, match["name"].strip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if stack:
            parent_indent, parent = stack[-1]
            if indent != parent_indent + 2:
                raise RangeError(f"{source}:{lineno}: indented too deep under {parent}: {line!r}")
            if not (parent.start <= start and end <= parent.end):
                raise RangeError(f"{source}:{lineno}: {node} lies outside its parent {parent}")
            parent.children.append(node)
        else:
            if indent:
                raise RangeError(f"{source}:{lineno}: indented line without a parent: {line!r}")
            roots.append(node)
        stack.append((indent, node))
    return roots


def parse_spans(text: str, what: str, limit: int, unit: str, example: str) -> list[tuple[int, int]]:
    """Parse hex spans like ``0x64 0x3f8-0x3ff`` (spaces or commas) into inclusive ``(start, end)``.

    ``what`` names the param in errors; ``unit``/``example`` say what a span
    of this address space looks like; ``limit`` is its highest address.
    """
    spans = []
    for token in re.split(r"[\s,]+", text.strip()):
        if not token:
            continue
        match = _SPAN.match(token)
        if not match:
            raise RangeError(f"{what}: {token!r} is not {unit} span (hex{example})")
        start = int(match[2], 16)
        end = int(match[4], 16) if match[4] else start
        if start > end:
            raise RangeError(f"{what}: {token!r}: start {start:#x} is greater than end {end:#x} (write START-END)")
        if end > limit:
            raise RangeError(f"{what}: {token!r} is not a span within {0:#x}-{limit:#x}")
        spans.append((start, end))
    return spans


def parse_port_spans(text: str, what: str) -> list[tuple[int, int]]:
    """Port spans: ``0x64 0x3f8-0x3ff``."""
    return parse_spans(text, what, PORT_MAX, "a port or PORT-PORT", ", e.g. 0x3f8-0x3ff")


def parse_named_spans(
    text: str, what: str, example: str, spans: Callable[[str, str], list[tuple[int, int]]]
) -> list[tuple[int, int, str]]:
    """``START-END:NAME`` items separated by spaces, as ``(start, end, name)``."""
    named = []
    for token in text.split():
        span, sep, name = token.partition(":")
        if not sep or not name:
            raise RangeError(f"{what}: {token!r} lacks ':NAME' (expected e.g. {example})")
        ((start, end),) = spans(span, what)
        named.append((start, end, name))
    return named


def parse_extra_ranges(text: str) -> list[PortRange]:
    """Parse ``extra_ioports``: ``START-END:NAME`` items separated by spaces."""
    return [
        PortRange(start, end, name)
        for start, end, name in parse_named_spans(text, "extra_ioports", "0x0e9-0x0e9:debug", parse_port_spans)
    ]


def parse_name_list(text: str) -> list[str]:
    """``skip_devices`` syntax: exact range names separated by commas."""
    return [name.strip() for name in text.split(",") if name.strip()]


def name_matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether ``name`` equals one of ``patterns``, where ``*`` matches any run of characters.

    Only ``*`` is special: kernel names hold brackets and dots
    (``PCI MMCONFIG 0000 [bus 00-ff]``), which must match as themselves.
    """
    for pattern in patterns:
        if "*" not in pattern:
            if name == pattern:
                return True
        elif re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), name, re.DOTALL):
            return True
    return False


def leaves(forest: Iterable[PortRange], skip_names: Sequence[str] = ()) -> list[PortRange]:
    """The innermost ranges, in address order, minus skipped names (patterns) and their subtrees."""
    skipped = list(skip_names)
    found: list[PortRange] = []

    def walk(node: PortRange) -> None:
        if name_matches(node.name, skipped):
            return
        if node.children:
            for child in node.children:
                walk(child)
        else:
            found.append(node)

    for root in forest:
        walk(root)
    return sorted(found, key=lambda r: (r.start, r.end, r.name))


def cut_spans(start: int, end: int, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The pieces of ``[start, end]`` left when every inclusive span in ``spans`` is cut out."""
    pieces = [(start, end)]
    for lo, hi in spans:
        next_pieces = []
        for first, last in pieces:
            if hi < first or lo > last:
                next_pieces.append((first, last))
                continue
            if first < lo:
                next_pieces.append((first, lo - 1))
            if hi < last:
                next_pieces.append((hi + 1, last))
        pieces = next_pieces
    return pieces


def cut_ports(ranges: Iterable[PortRange], spans: Sequence[tuple[int, int]]) -> list[PortRange]:
    """Remove skipped port spans from ranges, splitting a range around each hole."""
    result: list[PortRange] = []
    for rng in ranges:
        result.extend(PortRange(start, end, rng.name) for start, end in cut_spans(rng.start, rng.end, spans))
    return result


def _all_names(forest: Iterable[PortRange], extra_ioports: str) -> set[str]:
    """Every range name a skip may name: parents (which take their children with them), leaves, extra ranges."""
    names: set[str] = set()

    def walk(node: PortRange) -> None:
        names.add(node.name)
        for child in node.children:
            walk(child)

    for root in forest:
        walk(root)
    return names | {r.name for r in parse_extra_ranges(extra_ioports)}


def _listed(names: Iterable[str]) -> str:
    """Names quoted and comma separated, as a person reads a list."""
    return ", ".join(f"'{name}'" for name in names)


def check_skip_devices(ioports_text: str, skip_devices: str, extra_ioports: str = "") -> None:
    """RangeError naming every ``skip_devices`` name (or pattern) that matches no range, and the known names.

    A name that matches nothing is a typo that would leave the device it
    meant fuzzed; the guest's listing is needed, so this runs after boot.
    """
    known = _all_names(parse_ioports(ioports_text), extra_ioports)
    unknown = [p for p in parse_name_list(skip_devices) if not any(name_matches(n, [p]) for n in known)]
    if unknown:
        raise RangeError(
            f"skip_devices: {_listed(unknown)} matches no range of the guest's /proc/ioports nor extra_ioports "
            f"(known: {_listed(sorted(known))})"
        )


def fuzz_targets(
    ioports_text: str,
    skip_devices: str = "",
    skip_ports: str = " ".join(DEFAULT_SKIP_PORTS),
    extra_ioports: str = "",
    only_devices: str = "",
) -> list[PortRange]:
    """The whole pipeline from params to the ordered list of ranges to fuzz.

    Extra ranges are fuzzed in addition to the kernel's (even where they
    overlap a listed range: the user asked for them by name).
    """
    forest = parse_ioports(ioports_text)
    skip_names = parse_name_list(skip_devices)
    targets = leaves(forest, skip_names) + [
        r for r in parse_extra_ranges(extra_ioports) if not name_matches(r.name, skip_names)
    ]
    wanted = parse_name_list(only_devices)
    if wanted:
        known = {r.name for r in targets}
        missing = [name for name in wanted if name not in known]
        if missing:
            known_text = _listed(sorted(known))
            raise RangeError(f"only_devices: no fuzzable range named {_listed(missing)} (known: {known_text})")
        targets = [r for r in targets if r.name in wanted]
    targets = cut_ports(targets, parse_port_spans(skip_ports, "skip_ports"))
    return sorted(targets, key=lambda r: (r.start, r.end, r.name))
