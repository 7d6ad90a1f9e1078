"""QEMU's output: every line kept in a file of the test's, a bounded summary in its log.

avocado-vt hands each line QEMU prints to a logger (``[qemu output] ...`` in
debug.log). A device that warns on every access (eepro100's "feature is
missing in this emulation", virtio-scsi's "bad data written to ... config
space") then costs one logging call per fuzz op, each a record shipped to
avocado's runner and written to debug.log: on 2 cores that CPU is taken from
QEMU's vCPU and the campaign, and the run crawls. Here every line goes to
``qemu-output-<vm>.log`` (a buffered file write), and the log gets the first
few lines of each kind and, every few seconds, how many more were suppressed.

In the file, a run of identical lines is the line once and then
``[previous line repeated N more times]``: eepro100 prints the same line for
a million fuzz ops (74 MB at ``fuzz_count=200``, gigabytes at the default
count), and the count is all a reader gains from the copies.
:func:`expand_lines` gives the lines back one by one.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

QEMU_OUTPUT_PARAM = "qemu_output"
QEMU_OUTPUT_FILE = "file"  # every line to the file, a throttled share to the log
QEMU_OUTPUT_LOG = "log"  # avocado-vt's own way: every line a log record (the baseline the benchmark measures)
QEMU_OUTPUT_MODES = (QEMU_OUTPUT_FILE, QEMU_OUTPUT_LOG)
FIRST_OF_A_KIND = 3  # lines of one kind logged in full before the rest are only counted
SUMMARY_INTERVAL = 10.0  # seconds between the summaries of suppressed lines
LINES_PER_INTERVAL = 50  # lines logged in full per interval, all kinds together
MAX_KINDS = 1000  # kinds remembered; lines of further kinds are counted together
FLUSH_INTERVAL = 1.0  # seconds between flushes of the output file
# aexpect's own last line when QEMU's shell ends; the log must have it at once
TERMINATED = "(Process terminated with status"
OTHER_KINDS = "(lines of other kinds)"

# 0x1f, 12, and bare hex words with a digit (virtio's "wrong value for queue_enable f9412e9a")
_NUMBER = re.compile(r"\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]*\d[0-9a-fA-F]*\b|\d+")
_REPEATED = re.compile(r"^\[previous line repeated (\d+) more times?\]$")


def repeated_marker(count: int) -> str:
    return f"[previous line repeated {count} more time{'s' if count > 1 else ''}]"


def expand_lines(lines: Iterable[str]) -> Iterator[str]:
    """The lines QEMU printed, from the file's lines: each marker stands for copies of the last real line."""
    last: str | None = None
    for line in lines:
        match = _REPEATED.match(line)
        if match and last is not None:
            yield from itertools.repeat(last, int(match[1]))
        else:
            last = line
            yield line


def line_kind(line: str) -> str:
    """Lines that differ only in their numbers (addresses, values, counts) are one kind."""
    return _NUMBER.sub("#", line)


@dataclass
class LineThrottle:
    """Which lines to log in full and which to count; pure: lines and times in, messages out."""

    first: int = FIRST_OF_A_KIND
    interval: float = SUMMARY_INTERVAL
    budget: int = LINES_PER_INTERVAL
    max_kinds: int = MAX_KINDS
    where: str = ""  # said after each summary: where the suppressed lines are
    seen: dict[str, int] = field(default_factory=dict)  # kind -> lines so far
    examples: dict[str, str] = field(default_factory=dict)  # kind -> its first line
    suppressed: dict[str, int] = field(default_factory=dict)  # kind -> lines counted since the last summary
    window_start: float | None = None
    logged_in_window: int = 0

    def feed(self, line: str, now: float) -> list[str]:
        """The messages to log for ``line`` arriving at ``now``: itself, a summary due, or nothing."""
        messages: list[str] = []
        if self.window_start is None:
            self.window_start = now
        elif now - self.window_start >= self.interval:
            messages += self.summary(self.where)
            self.window_start, self.logged_in_window = now, 0
        kind = line_kind(line)
        if kind not in self.seen and len(self.seen) >= self.max_kinds:
            kind = OTHER_KINDS
        self.seen[kind] = self.seen.get(kind, 0) + 1
        self.examples.setdefault(kind, line)
        if self.seen[kind] <= self.first and self.logged_in_window < self.budget:
            self.logged_in_window += 1
            messages.append(line)
        else:
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
        return messages

    def summary(self, where: str = "") -> list[str]:
        """One message per kind with lines counted since the last summary; the counts start again."""
        messages = [
            f"{count} more line{'s' if count > 1 else ''} like {self.examples[kind]!r} suppressed{where}"
            for kind, count in self.suppressed.items()
        ]
        self.suppressed.clear()
        return messages


class QemuOutputLog:
    """aexpect's ``output_func`` for QEMU: each line into ``path``, a throttled share into ``log``.

    aexpect calls it from its tail thread only. avocado-vt pickles the VM and
    with it this object (the env file): the open file is not pickled, and is
    opened again (appending) where the object is used next.
    """

    def __init__(
        self, path: str, log: Callable[[str], Any], prefix: str = "", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self.log = log
        self.prefix = prefix
        self.clock = clock
        self.throttle = LineThrottle(where=f" (all of QEMU's output: {path})")
        self.lines = 0
        self._file: IO[str] | None = None
        self._flushed = 0.0
        self._last: str | None = None  # the last line written out
        self._repeats = 0  # copies of it received since, not yet written as a marker

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"] = None
        state["_repeats"] = 0  # the original writes the copies it counted; a clone must not again
        return state

    def __call__(self, line: str) -> None:
        now = self.clock()
        self._write(line, now)
        if line.startswith(TERMINATED):
            # QEMU is gone: what was suppressed is reported before the end, whole
            self._emit(self.throttle.summary(self.throttle.where))
            self._emit([line])
            self.close()
            return
        self._emit(self.throttle.feed(line, now))

    def _write(self, line: str, now: float) -> None:
        if self._file is None or self._file.closed:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115 (kept open across calls)
        self.lines += 1
        if line == self._last:
            self._repeats += 1
        else:
            self._write_repeats()
            self._file.write(line + "\n")
            self._last = line
        # buffered: a flush per line would be a syscall per fuzz op; pending copies are counted in
        # the file at each flush, so a test killed with its QEMU leaves the counts so far
        if now - self._flushed >= FLUSH_INTERVAL:
            self._write_repeats()
            self._file.flush()
            self._flushed = now

    def _write_repeats(self) -> None:
        if self._repeats and self._file is not None:
            self._file.write(repeated_marker(self._repeats) + "\n")
            self._repeats = 0

    def _emit(self, messages: list[str]) -> None:
        for message in messages:
            self.log(self.prefix + message)

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._write_repeats()
            self._file.close()
        self._file = None


def output_log_path(log_dir: str, vm_name: str | None) -> str:
    """Where a VM's QEMU output goes: next to avocado-vt's ``serial-<serial>-<vm>.log``."""
    return str(Path(log_dir) / f"qemu-output-{vm_name or 'vm'}.log")


def read_tail(path: str, lines: int, max_bytes: int = 65536) -> str:
    """The last ``lines`` lines of a file, reading at most its last ``max_bytes`` bytes."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "backslashreplace").strip()
    return "\n".join(text.splitlines()[-lines:])


def first_line_with(path: str, needle: str, chunk: int = 1 << 20) -> str:
    """The first line of a file containing ``needle``, read in chunks (QEMU's output may be large)."""
    pattern = needle.encode()
    carry = b""
    try:
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                data = carry + block
                at = data.find(pattern)
                if at >= 0:
                    start = data.rfind(b"\n", 0, at) + 1
                    if data.find(b"\n", at) < 0:
                        data += handle.readline()  # the rest of the line, past this chunk
                    end = data.find(b"\n", at)
                    return data[start : end if end >= 0 else None].decode("utf-8", "backslashreplace").rstrip()
                # keep the unfinished last line: the needle may straddle the chunk boundary
                carry = data[data.rfind(b"\n") + 1 :]
    except OSError:
        return ""
    return ""
