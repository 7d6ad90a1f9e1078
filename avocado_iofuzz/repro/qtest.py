"""Reproducer scripts: ops as qtest text, written and read back.

Writing goes through :mod:`avocado_iofuzz.repro.qtest_ops` (one op -> its qtest
lines, every address space). Reading parses the command lines back into
ops, so a reproducer a person edited (or wrote) can be replayed, minimized
and run in a guest:

* ``outb|outw|outl PORT VALUE`` and ``inb|inw|inl PORT``: port I/O;
* ``writeb|writew|writel|writeq ADDR VALUE`` and ``readb|...|readq ADDR``: MMIO;
* ``write ADDR LEN 0xDATA`` (QEMU's fuzzer writes DMA buffers so): one byte write each;
* ``clock_step [NS]``: dropped (this QEMU has no qtest accelerator; replays run
  with the clock stopped and running instead), with a note saying so.

A PCI config op was written as two port commands (``outl 0xcf8`` and the
access at ``0xcfc``) and reads back as those two port ops: the same accesses.

QEMU's qtest server asserts on malformed lines (an empty line, a missing
value, a port above 0xffff abort QEMU with an error of *its own*), so every
script is validated here before it reaches QEMU: a reproducer never crashes
the harness instead of the device. Comment lines (``#``) and blank lines are
accepted in files and dropped on reading; written scripts contain neither.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from avocado_iofuzz.model.program import MASK64, PIO_MAX_PORT, SPACE_MMIO, SPACE_PIO, Op
from avocado_iofuzz.repro.qtest_ops import format_script, qtest_commands

_SUFFIX_WIDTH = {"b": 1, "w": 2, "l": 4, "q": 8}
# command -> (space, is_write)
_COMMANDS = {
    **{f"out{s}": (SPACE_PIO, True) for s in "bwl"},
    **{f"in{s}": (SPACE_PIO, False) for s in "bwl"},
    **{f"write{s}": (SPACE_MMIO, True) for s in "bwlq"},
    **{f"read{s}": (SPACE_MMIO, False) for s in "bwlq"},
}
# qtest commands that exist but that no op stands for
_OTHER_QTEST = ("read", "memset", "b64read", "b64write", "clock_set", "irq_intercept_in")


class QtestScriptError(ValueError):
    """A qtest script is malformed; the message starts with ``<source>:<line>:``."""


def write_script(path: str | os.PathLike[str], ops: Iterable[Op]) -> Path:
    path = Path(path)
    path.write_text(format_script(ops), encoding="utf-8")
    return path


def _number(text: str, what: str, where: str) -> int:
    try:
        value = int(text, 0)  # 0x.. hex or plain decimal; leading-zero octal is refused
    except ValueError:
        raise QtestScriptError(f"{where}: {what} {text!r} is not a number (hex with 0x, or decimal)") from None
    if value < 0:
        raise QtestScriptError(f"{where}: {what} {text!r} is negative")
    return value


CLOCK_STEP_NOTE = (
    "clock_step lines dropped: this QEMU has no qtest accelerator (it answers 'FAIL Unknown command'); "
    "the script is replayed with the clock stopped and with it running (timers fire in real time)"
)
WRITE_NOTE = "write ADDR LEN DATA lines replayed as one writeb per byte (guest memory: the same bytes)"


def parse_line_ops(line: str, where: str, notes: list[str] | None = None) -> list[Op]:
    """The ops of one line: one for an access, one per byte for ``write``, none for ``clock_step`` or a comment.

    What a line turned into is said once in ``notes``.
    """
    words = line.split()
    if words and words[0] == "clock_step":
        _note(notes, CLOCK_STEP_NOTE)
        return []
    if words and words[0] == "write":
        _note(notes, WRITE_NOTE)
        return _byte_writes(words, where)
    op = parse_line(line, where)
    return [] if op is None else [op]


def _note(notes: list[str] | None, note: str) -> None:
    if notes is not None and note not in notes:
        notes.append(note)


def _byte_writes(words: Sequence[str], where: str) -> list[Op]:
    if len(words) != 4:
        usage = "write ADDRESS LENGTH 0xDATA"
        raise QtestScriptError(f"{where}: 'write' takes 3 arguments ({usage}), got {len(words) - 1}")
    address = _number(words[1], "address", where)
    length = _number(words[2], "length", where)
    data = words[3][2:] if words[3].lower().startswith("0x") else ""
    try:
        payload = bytes.fromhex(data)
    except ValueError:
        payload = b""
    if not payload or len(payload) != length:
        raise QtestScriptError(f"{where}: write data {words[3]!r} is not {length} byte(s) of 0x-prefixed hex")
    if address + length - 1 > MASK64:
        raise QtestScriptError(f"{where}: write at {words[1]} runs past the end of the address space")
    return [Op("w", address + n, 1, byte, SPACE_MMIO) for n, byte in enumerate(payload)]


def parse_line(line: str, where: str) -> Op | None:
    """The op on one line; None for a comment or blank line; QtestScriptError otherwise."""
    words = line.split()
    if not words or words[0].startswith("#"):
        return None
    command = words[0]
    if command not in _COMMANDS:
        known = " (a qtest command, but not an I/O access)" if command in _OTHER_QTEST else ""
        raise QtestScriptError(
            f"{where}: unknown command {command!r}{known}; expected outb/outw/outl PORT VALUE, inb/inw/inl PORT, "
            "writeb..writeq ADDR VALUE or readb..readq ADDR"
        )
    space, is_write = _COMMANDS[command]
    width = _SUFFIX_WIDTH[command[-1]]
    expected = 3 if is_write else 2
    if len(words) != expected:
        usage = f"{command} ADDRESS VALUE" if is_write else f"{command} ADDRESS"
        raise QtestScriptError(f"{where}: {command!r} takes {expected - 1} argument(s) ({usage}), got {len(words) - 1}")
    address = _number(words[1], "address", where)
    limit = PIO_MAX_PORT if space == SPACE_PIO else MASK64
    if address > limit:
        raise QtestScriptError(f"{where}: address {words[1]} is above {limit:#x}")
    if not is_write:
        return Op("r", address, width, 0, space)
    value = _number(words[2], "value", where)
    if value >= 1 << (8 * width):
        raise QtestScriptError(f"{where}: value {words[2]} does not fit {command} ({width} byte(s))")
    return Op("w", address, width, value, space)


def parse_script(text: str, source: str = "<script>", notes: list[str] | None = None) -> list[Op]:
    """All ops of a script's text; QtestScriptError names the first bad line; conversions go to ``notes``."""
    ops = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        ops += parse_line_ops(line, f"{source}:{lineno}", notes)
    return ops


def read_script(path: str | os.PathLike[str], notes: list[str] | None = None) -> list[Op]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise QtestScriptError(f"{path}:0: cannot read qtest script: {err.strerror}") from None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise QtestScriptError(f"{path}:{line}: not a text qtest script (byte {err.start} is not ASCII)") from None
    ops = parse_script(text, str(path), notes)
    if not ops:
        raise QtestScriptError(f"{path}:0: no I/O command in this qtest script")
    return ops


def describe_ops(ops: Sequence[Op], limit: int = 8) -> str:
    """A short one-line rendering for logs and FAIL reasons: ``outb 0x70 0x1; inb 0x71; ...``."""
    lines = [line for op in ops[:limit] for line in qtest_commands(op)]
    return "; ".join(lines) + (f"; ... ({len(ops)} ops)" if len(ops) > limit else "")
