"""Read the arguments back out of QEMU's ``log`` trace lines, using the formats QEMU ships.

A ``log`` backend line is ``[pid@secs.micros:]NAME `` followed by the event's
printf format applied to its arguments (``virtio_set_status vdev 0x55d0... val
15``). The formats are free text, one per event, so the only reliable way to
tell which number is which argument is the declaration itself. QEMU's build
installs every declaration, format included, as ``trace-events-all`` in its
data directory (``/usr/share/qemu`` next to ``/usr/bin``); this module finds
that file for a binary and turns a declaration's format into a regular
expression with one group per argument.

Only what a format says can be read back: ``%*d`` widths, floating point and
formats whose conversions do not match the declared arguments give no
pattern (:func:`line_pattern` returns None) and such an event is counted by
name only.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

FORMATS_FILE = "trace-events-all"
# where a distribution's QEMU keeps its data when the binary's own prefix has none
_FALLBACK_DATA_DIRS = (Path("/usr/share/qemu"), Path("/usr/local/share/qemu"))

# NAME(ARGS) "FORMAT" -- with optional properties (vcpu, tcg, disable) before the name
_DECLARATION = re.compile(r"^(?:(?:disable|vcpu|tcg)\s+)*([A-Za-z0-9_]+)\((.*?)\)\s*(.*)$")
# the format: string literals and inttypes.h macros between them ("0x%" PRIx64 " (%d)")
_FORMAT_PIECE = re.compile(r'"((?:[^"\\]|\\.)*)"|(PRI[diouxX](?:8|16|32|64|PTR|MAX))|\s+')
_CONVERSION = re.compile(r"%([-+ #0']*)(\d+|\*)?(?:\.(\d+|\*))?(?:hh|h|ll|l|L|q|j|z|Z|t)*([diouxXcsp%]|[eEfgGaA])")


@dataclass(frozen=True)
class Argument:
    name: str
    c_type: str

    @property
    def is_pointer(self) -> bool:
        """A host pointer (``void *vdev``): its value is an address in QEMU's heap, a new one every run."""
        return "*" in self.c_type and "char" not in self.c_type


@dataclass(frozen=True)
class Declaration:
    """One event of ``trace-events-all``: its arguments in order and its format, macros resolved."""

    name: str
    arguments: tuple[Argument, ...]
    format: str

    def argument(self, name: str) -> Argument | None:
        return next((a for a in self.arguments if a.name == name), None)


@dataclass(frozen=True)
class LinePattern:
    """A format as a regular expression over the text after ``NAME ``: group N is argument N's text."""

    regex: re.Pattern[str]
    conversions: dict[str, str]  # argument name -> its printf conversion letter (d, u, x, s, c...)


def find_formats_file(qemu: str) -> Path | None:
    """``trace-events-all`` of the QEMU ``qemu`` names (a path or a name on PATH), if it was installed."""
    found = shutil.which(qemu)
    candidates = []
    if found:
        binary = Path(found).resolve()
        candidates.append(binary.parent.parent / "share" / "qemu" / FORMATS_FILE)
        candidates.append(binary.parent / FORMATS_FILE)  # a build tree: the file sits next to the binary
    candidates += [d / FORMATS_FILE for d in _FALLBACK_DATA_DIRS]
    return next((c for c in candidates if c.is_file()), None)


def parse_declarations(text: str, only: Collection[str] | None = None) -> dict[str, Declaration]:
    """The events declared in ``text`` (a trace-events file), or those of them named in ``only``.

    Lines that are no declaration are skipped. ``only`` spares a run the
    parsing of QEMU's 5,000 declarations for the few dozen it reads.
    """
    declarations: dict[str, Declaration] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if only is not None and line.partition("(")[0].rpartition(" ")[2] not in only:
            continue
        match = _DECLARATION.match(line)
        if match is None:
            continue
        name, args, fmt = match.groups()
        arguments = _arguments(args)
        spelled = _format_text(fmt)
        if arguments is None or spelled is None:
            continue
        declarations.setdefault(name, Declaration(name, arguments, spelled))
    return declarations


def _arguments(text: str) -> tuple[Argument, ...] | None:
    text = text.strip()
    if text in ("", "void"):
        return ()
    arguments = []
    for part in text.split(","):
        match = re.match(r"^(.*?)([A-Za-z_][A-Za-z0-9_]*)\s*$", part.strip())
        if match is None:
            return None
        arguments.append(Argument(match[2], match[1].strip()))
    return tuple(arguments)


def _format_text(text: str) -> str | None:
    """The format as C would concatenate it, inttypes.h macros replaced by their conversion letter."""
    pieces, position = [], 0
    while position < len(text):
        match = _FORMAT_PIECE.match(text, position)
        if match is None:
            return None
        if match[1] is not None:
            pieces.append(re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m[1], m[1]), match[1]))
        elif match[2] is not None:
            pieces.append(match[2][3])  # PRIx64 -> x: the length modifier says nothing about the text
        position = match.end()
    return "".join(pieces)


def line_pattern(declaration: Declaration) -> LinePattern | None:
    """The regular expression that reads ``declaration``'s arguments back from its log line, if the format allows."""
    regex, conversions, index = [], {}, 0
    fmt = declaration.format
    position = 0
    for match in _CONVERSION.finditer(fmt):
        regex.append(re.escape(fmt[position : match.start()]))
        position = match.end()
        flags, width, precision, letter = match.groups()
        if letter == "%":
            regex.append("%")
            continue
        star = "*" in (width or "") or "*" in (precision or "")
        if star or letter in "eEfgGaA" or index >= len(declaration.arguments):
            return None  # an argument consumed by a width, or one we would not read exactly: no pattern
        conversions[declaration.arguments[index].name] = letter
        regex.append(f"({_TEXT_OF[letter].replace('#', '(?:0[xX])?' if '#' in flags else '')})")
        index += 1
    regex.append(re.escape(fmt[position:]))
    if index != len(declaration.arguments):
        return None
    return LinePattern(re.compile("".join(regex) + r"\Z", re.DOTALL), conversions)


# what one conversion prints; "#" stands for the 0x an alternate form ("%#x") puts in front
_TEXT_OF = {
    "d": r" *[-+]?\d+",
    "i": r" *[-+]?\d+",
    "u": r" *\d+",
    "o": r" *[0-7]+",
    "x": r" *#[0-9a-fA-F]+",
    "X": r" *#[0-9a-fA-F]+",
    "c": r".",
    "s": r".*?",
    "p": r"0x[0-9a-fA-F]+|\(nil\)",
}


def read_value(text: str, conversion: str) -> int | str:
    """An argument's value from its text: integers as ints (base from the conversion), strings as they are."""
    if conversion in "xX":
        return int(text.strip().lower().removeprefix("0x"), 16)
    if conversion == "o":
        return int(text.strip(), 8)
    if conversion in "diu":
        return int(text.strip())
    return text
