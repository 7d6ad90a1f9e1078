"""Host side of the executor protocol: the command line to run and its output lines.

The executor (``iofuzz_exec.c``) writes one protocol line per event to the
guest's serial console:

``@IOFUZZ READY <version> <n_ranges>``
    setup done (guest marker checked, ``iopl`` granted); ops start now.
``@P <range_index> <ops_done>``
    at the start of each range (``ops_done`` = first op to run), after every
    op index that is a multiple of ``report_every``, and at the range's end.
    The line is drained to the UART before the next op, so after a mark the
    ops in flight are at most ``ops_done .. next multiple of report_every``.
``@HANG <range_index> <op_index>``
    fault injection (``--hang-at``) reached: the guest now hangs for real
    before performing that op.
``@DONE <total_ops>``
    finished; ``total_ops`` counts the ops of this invocation only.
``@SAVED <range_index> <header_type> 0x<command> 0x<value>...``
    entering a ``pci`` range (unless ``--no-pci-restore``): the header the
    executor will put back, the values of the registers
    :func:`~avocado_iofuzz.model.pci_restore.header_registers` lists for the
    type. A resume into the middle of that range hands it back
    (``--pci-saved``): the header it finds then may be half fuzzed.
``@RESTORE <range_index> <op_index> 0xREG:W:0xVALUE...``
    leaving a ``pci`` range at ``op_index``: the config writes that put its
    function's header back (BARs, ROM, bridge windows, command register; see
    :mod:`avocado_iofuzz.model.pci_restore`), in the order the executor makes
    them, right after this line. Not with ``--no-pci-restore``; nothing when
    nothing changed.
``@DENIED <range_index> <reason>``
    the guest kernel refuses access to that range (lockdown, no ``/dev/mem``,
    a BAR claimed under ``iomem=strict``...); printed while the access paths
    are set up, before ``READY``. Followed by ``@ERR`` (exit status 3), except
    under ``--check``, which reports every refused range and ends ``@DONE 0``
    without performing any op.
``@NOSCRATCH <reason>``
    under ``--check`` only: a range has DMA-aware values (``+dma``) but the
    scratch memory cannot be mapped (no ``memmap=`` reservation on the guest's
    kernel command line, no ``/dev/mem``...). A real run fails with ``@ERR``
    (status 3) instead.
``@ERR <message>``
    failure (bad arguments, not an iofuzz guest); the executor exits non-zero.

``--dry-run`` prints each op as ``<range_index> <op_index> <r|w> 0x<port>
<width> 0x<value>`` in between, without touching any port, and each fill of
the scratch memory of a ``+dma`` range as ``M <range_index> <op_index>
<hex bytes>`` before the op it precedes.

A range word (:func:`range_argument`) is
``I:[SPACE:]0xSTART-0xEND[/W][,N][!|!0xV][+dma[=LAYOUT]][@S][~E:U]``: ``!``
makes the range fuzz-only (its N seeded writes per slot alone), ``!0xV``
fuzz-only with a fixed value (every write writes V, hex, within the width).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from avocado_iofuzz.model.dma import SCRATCH_BASE, SCRATCH_END, VALUES_UNIFORM
from avocado_iofuzz.model.dma_layouts import LAYOUT_GENERIC
from avocado_iofuzz.model.pci_restore import ConfigWrite, RestoreError, parse_writes
from avocado_iofuzz.model.program import SPACE_PCI, SPACE_PIO, Op, RangePlan

PROTOCOL_VERSION = 1
DEFAULT_BINARY = "/usr/bin/iofuzz-exec"
DEFAULT_REPORT_EVERY = 4096
GUEST_MARKER = "iofuzz.guest=1"
# busybox ash's line editor keeps at most 1024 bytes of a command line; a
# longer command passes its ranges as a here-document of short lines instead.
COMMAND_LINE_LIMIT = 900
HEREDOC_LINE_LIMIT = 400
HEREDOC_END = "IOFUZZ_RANGES"


@dataclass(frozen=True)
class Ready:
    version: int
    n_ranges: int


@dataclass(frozen=True)
class Progress:
    range_index: int
    ops_done: int


@dataclass(frozen=True)
class Hang:
    range_index: int
    op_index: int


@dataclass(frozen=True)
class Done:
    total_ops: int


@dataclass(frozen=True)
class ExecError:
    message: str


@dataclass(frozen=True)
class Denied:
    range_index: int
    reason: str


@dataclass(frozen=True)
class NoScratch:
    reason: str


@dataclass(frozen=True)
class Restore:
    """The executor puts a pci range's function header back with ``writes``, leaving it at ``op_index``."""

    range_index: int
    op_index: int
    writes: tuple[ConfigWrite, ...]


@dataclass(frozen=True)
class Saved:
    """The header of a pci range's function as the executor saved it on entering the range."""

    range_index: int
    header_type: int
    command: int
    values: tuple[int, ...]

    def argument(self) -> str:
        """The executor's ``--pci-saved`` value that hands this header back."""
        return ":".join(
            [str(self.range_index), str(self.header_type), *(f"{v:#x}" for v in (self.command, *self.values))]
        )


Message = Ready | Progress | Hang | Done | ExecError | Denied | NoScratch | Restore | Saved

# CSI sequences such as the ESC[6n (cursor position query) busybox ash prints
# after its prompt, and the bracketed-paste toggles of bash.
_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# A protocol line may follow junk on the same console line (a prompt, a
# kernel message) but must run to the end of it.
_MESSAGE = re.compile(
    r"(?:^|(?<=[^\w@]))@(?:"
    r"IOFUZZ READY (?P<version>\d+) (?P<n_ranges>\d+)"
    r"|P (?P<p_range>\d+) (?P<p_done>\d+)"
    r"|HANG (?P<h_range>\d+) (?P<h_op>\d+)"
    r"|DONE (?P<total>\d+)"
    r"|SAVED (?P<s_range>\d+) (?P<s_type>\d+) 0x(?P<s_command>[0-9a-f]+)(?P<s_values>(?: 0x[0-9a-f]+)*)"
    r"|RESTORE (?P<r_range>\d+) (?P<r_op>\d+)(?P<r_writes>(?: 0x[0-9a-f]+:[124]:0x[0-9a-f]+)+)"
    r"|DENIED (?P<d_range>\d+) (?P<reason>.*?)"
    r"|NOSCRATCH (?P<no_scratch>.*?)"
    r"|ERR (?P<message>.*?)"
    r")[ \t]*$"
)


def clean_line(line: str) -> str:
    """``line`` without terminal escape sequences, carriage returns and the newline."""
    return _ESCAPE.sub("", line).replace("\r", "").rstrip("\n")


def parse_line(line: str) -> Message | None:
    """The protocol message on a console line, or None for anything else."""
    match = _MESSAGE.search(clean_line(line))
    if match is None:
        return None
    g = match.groupdict()
    if g["version"] is not None:
        return Ready(int(g["version"]), int(g["n_ranges"]))
    if g["p_range"] is not None:
        return Progress(int(g["p_range"]), int(g["p_done"]))
    if g["h_range"] is not None:
        return Hang(int(g["h_range"]), int(g["h_op"]))
    if g["total"] is not None:
        return Done(int(g["total"]))
    if g["s_range"] is not None:
        values = tuple(int(v, 16) for v in g["s_values"].split())
        return Saved(int(g["s_range"]), int(g["s_type"]), int(g["s_command"], 16), values)
    if g["r_range"] is not None:
        try:
            return Restore(int(g["r_range"]), int(g["r_op"]), parse_writes(g["r_writes"].split()))
        except RestoreError:  # a line the console garbled: no restore the executor announced
            return None
    if g["d_range"] is not None:
        return Denied(int(g["d_range"]), g["reason"])
    if g["no_scratch"] is not None:
        return NoScratch(g["no_scratch"])
    return ExecError(g["message"])


def format_dry_run_op(range_index: int, op_index: int, op: Op) -> str:
    """The line ``--dry-run`` prints for one op (without newline)."""
    return f"{range_index} {op_index} {op.kind} 0x{op.port:x} {op.width} 0x{op.value:x}"


def parse_dry_run_op(line: str, space: str = SPACE_PIO) -> tuple[int, int, Op]:
    """``(range_index, op_index, op)`` from a ``--dry-run`` op line; ValueError if it is not one.

    The line does not name the address space: ``space`` is the range's.
    """
    fields = line.split()
    if len(fields) != 6 or fields[2] not in ("r", "w"):
        raise ValueError(f"not a dry-run op line: {line!r}")
    try:
        return (
            int(fields[0]),
            int(fields[1]),
            Op(fields[2], int(fields[3], 16), int(fields[4]), int(fields[5], 16), space),
        )
    except ValueError:
        raise ValueError(f"not a dry-run op line: {line!r}") from None


def format_dry_run_fill(range_index: int, op_index: int, data: bytes) -> str:
    """The line ``--dry-run`` prints for a fill of the scratch memory before op ``op_index``."""
    return f"M {range_index} {op_index} {data.hex()}"


def range_argument(plan: RangePlan, fuzz_count: int | None = None, seed: int | None = None) -> str:
    """How the executor's command line names a range: ``I:[SPACE:]0xSTART-0xEND[/W][,N][!|!0xV][+VALUES][@S][~E:U]``.

    ``,N`` is written when the plan's fuzz count differs from ``fuzz_count``
    (the command's ``--fuzz-count``), ``@S`` when its seed differs from
    ``seed`` (the command's ``--seed``: a guided round's batches each have
    their own); ``SPACE:`` for every space but pio; ``+VALUES`` for every
    value mode but uniform (``+dma=LAYOUT`` for a device layout of the
    scratch memory); ``~E:U`` for a paced range; ``!`` for a fuzz-only one
    (with ``,N`` always: its ops are N writes per slot and nothing else),
    ``!0xV`` for a fuzz-only one whose writes all write the fixed value V.
    """
    space = f"{plan.space}:" if plan.space != SPACE_PIO else ""
    width = f"/{plan.width}" if plan.width != 1 else ""
    count = f",{plan.fuzz_count}" if fuzz_count is not None and plan.fuzz_count != fuzz_count else ""
    if plan.fuzz_only:
        count = f",{plan.fuzz_count}!" + (f"{plan.fixed:#x}" if plan.fixed is not None else "")
    values = f"+{plan.values}" if plan.values != VALUES_UNIFORM else ""
    if plan.layout != LAYOUT_GENERIC:
        values += f"={plan.layout}"  # +dma=LAYOUT: the scratch memory laid out like the device's structures
    own_seed = f"@{plan.seed}" if seed is not None and plan.seed != seed else ""
    pace = f"~{plan.pause_every}:{plan.pause_us}" if plan.pause_every else ""
    return f"{plan.index}:{space}{plan.start:#x}-{plan.end:#x}{width}{count}{values}{own_seed}{pace}"


def scratch_argument() -> str:
    """The executor's ``--scratch`` value: the scratch memory of ranges with DMA-aware values."""
    return f"{SCRATCH_BASE:#x}-{SCRATCH_END:#x}"


def executor_command(
    plans: Sequence[RangePlan],
    report_every: int = DEFAULT_REPORT_EVERY,
    resume: tuple[int, int] | None = None,
    hang_at: tuple[int, int] | None = None,
    binary: str = DEFAULT_BINARY,
    dry_run: bool = False,
    limit_loop: bool = False,
    bare_loop: bool = False,
    check: bool = False,
    pci_restore: bool = True,
    pci_saved: Saved | None = None,
) -> str:
    """The shell command that runs ``plans`` in the guest.

    ``resume=(I, J)`` starts at op J of the range with index I, skipping the
    ranges listed before it. ``hang_at=(I, J)`` is fault injection for tests:
    the guest hangs for real before op J of range I. ``limit_loop`` and
    ``bare_loop`` are benchmark modes without progress marks: the ops as
    generated, or the accesses alone replayed from a table (see the C source).
    ``check`` sets up every range's access path and reports refusals
    (``@DENIED``, ``@NOSCRATCH``) without performing any op. A plan whose
    seed or fuzz count differs from the first plan's carries its own (``@S``,
    ``,N``): a blind run's command is the same as before ranges had seeds.
    Plans with DMA-aware values add the scratch memory (``--scratch``).
    ``pci_restore=False`` leaves each ``pci`` range's function header as its
    ops left it (``--no-pci-restore``, written only when a plan is ``pci``).
    ``pci_saved``: the header the executor saved when it entered the range
    ``resume`` goes back into, to be put back instead of the one it finds.
    """
    if not plans:
        raise ValueError("executor_command: no range plans given")
    by_index = {}
    for plan in plans:
        if plan.index in by_index:
            raise ValueError(f"executor_command: range index {plan.index} appears twice")
        by_index[plan.index] = plan
    if not isinstance(report_every, int) or not 1 <= report_every <= 0xFFFFFFFF:
        raise ValueError(f"executor_command: report_every must be within 1..2**32-1, got {report_every!r}")
    args = [binary]
    if dry_run:
        args.append("--dry-run")
    if check and (dry_run or limit_loop or bare_loop):
        raise ValueError("executor_command: check combines with none of dry_run, limit_loop, bare_loop")
    if check:
        args.append("--check")
    if limit_loop and bare_loop:
        raise ValueError("executor_command: limit_loop and bare_loop are exclusive")
    if bare_loop and dry_run:
        raise ValueError("executor_command: bare_loop does not combine with dry_run")
    if bare_loop and any(p.space != SPACE_PIO for p in plans):
        raise ValueError("executor_command: bare_loop replays port I/O only")
    if limit_loop:
        args.append("--limit-loop")
    if bare_loop:
        args.append("--bare-loop")
    args += ["--seed", str(plans[0].seed), "--fuzz-count", str(plans[0].fuzz_count)]
    args += ["--report-every", str(report_every)]
    if any(p.values != VALUES_UNIFORM for p in plans):
        if bare_loop:
            raise ValueError("executor_command: bare_loop replays a table of ops without the scratch memory")
        args += ["--scratch", scratch_argument()]
    if not pci_restore and any(p.space == SPACE_PCI for p in plans):
        args.append("--no-pci-restore")
    if pci_saved is not None:
        if not pci_restore or resume is None or resume[0] != pci_saved.range_index:
            raise ValueError("executor_command: pci_saved is for a resume into that range, with pci_restore")
        if by_index[resume[0]].space != SPACE_PCI:
            raise ValueError(f"executor_command: pci_saved names range {resume[0]}, which is no pci range")
        args += ["--pci-saved", pci_saved.argument()]
    order = [p.index for p in plans]
    if resume is not None:
        _check_position("resume", resume, by_index, allow_end=True)
        args += ["--resume", f"{resume[0]}:{resume[1]}"]
    if hang_at is not None:
        if limit_loop or bare_loop:
            raise ValueError("executor_command: hang_at does not combine with limit_loop or bare_loop")
        _check_position("hang_at", hang_at, by_index, allow_end=False)
        if resume is not None and (order.index(hang_at[0]), hang_at[1]) < (order.index(resume[0]), resume[1]):
            raise ValueError(f"executor_command: hang_at {hang_at} is before resume {resume}: never reached")
        args += ["--hang-at", f"{hang_at[0]}:{hang_at[1]}"]
    ranges = [range_argument(p, plans[0].fuzz_count, plans[0].seed) for p in plans]
    command = shlex.join(args + ranges)
    if len(command) <= COMMAND_LINE_LIMIT:
        return command
    return ranges_heredoc_command(args, ranges)


def ranges_heredoc_command(args: Sequence[str], ranges: Sequence[str]) -> str:
    """``args --ranges-stdin`` fed the range words by a here-document of short lines.

    Several lines: a shell reads them one by one, each within its line
    editor's limit, and runs the executor at the end marker.
    """
    lines: list[str] = []
    for word in ranges:
        if lines and len(lines[-1]) + 1 + len(word) <= HEREDOC_LINE_LIMIT:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "\n".join([f"{shlex.join([*args, '--ranges-stdin'])} <<'{HEREDOC_END}'", *lines, HEREDOC_END])


def _check_position(what: str, position: tuple[int, int], by_index: dict[int, RangePlan], allow_end: bool) -> None:
    range_index, op_index = position
    plan = by_index.get(range_index)
    if plan is None:
        raise ValueError(f"executor_command: {what} names range {range_index}, not among {sorted(by_index)}")
    limit = plan.op_count if allow_end else plan.op_count - 1
    if not 0 <= op_index <= limit:
        raise ValueError(f"executor_command: {what} op {op_index} is outside range {range_index}'s ops 0..{limit}")


def inflight_window(plan: RangePlan, ops_done: int, report_every: int) -> tuple[int, int]:
    """Ops ``(first, stop)`` that may have run after the mark ``@P <plan.index> <ops_done>``.

    The executor reports at multiples of ``report_every``, so the op that hung
    or crashed the guest lies in this window (if it lies in this range).
    """
    if not 0 <= ops_done <= plan.op_count:
        raise ValueError(f"range {plan.index}: ops_done {ops_done} is outside 0..{plan.op_count}")
    stop = min(plan.op_count, (ops_done // report_every + 1) * report_every)
    return ops_done, stop
