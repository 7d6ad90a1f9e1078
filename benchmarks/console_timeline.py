"""When did the guest print what: console text rebuilt from QEMU's ``serial_write`` trace events.

Run QEMU with ``-msg timestamp=on -trace serial_write -D <log>`` and every byte
the guest writes to a UART register shows up as
``<pid>@<unix seconds>.<micro>:serial_write write addr 0x00 val 0x41``. The
bytes written to the transmit register (offset 0) are the console output;
each keeps the host time at which the guest wrote it, with microseconds --
far finer than the per-second stamps of avocado-vt's console log, and on the
same clock as the host's ``time.time()``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_EVENT = re.compile(r"^\d+@(\d+\.\d+):serial_write write addr 0x([0-9a-f]+) val 0x([0-9a-f]+)", re.MULTILINE)
_LCR = 3  # line control register: its top bit switches offset 0 to the baud-rate divisor
_DLAB = 0x80


@dataclass(frozen=True)
class ConsoleTimeline:
    text: str
    times: tuple[float, ...]  # times[i]: when text[i] was written

    def first(self, marker: str, after: float = 0.0) -> float | None:
        """When the first occurrence of ``marker`` written at or after ``after`` was complete."""
        start = 0
        while (index := self.text.find(marker, start)) >= 0:
            if self.times[index] >= after:
                return self.times[index + len(marker) - 1]
            start = index + 1
        return None


def parse_serial_trace(log: str) -> ConsoleTimeline:
    """The console output in a QEMU trace log (other lines and events are ignored)."""
    chars: list[str] = []
    times: list[float] = []
    divisor_latch = False
    for match in _EVENT.finditer(log):
        when, register, value = float(match[1]), int(match[2], 16), int(match[3], 16)
        if register == _LCR:
            divisor_latch = bool(value & _DLAB)
        elif register == 0 and not divisor_latch:
            chars.append(chr(value))
            times.append(when)
    return ConsoleTimeline("".join(chars), tuple(times))


def read_serial_trace(path: Path) -> ConsoleTimeline:
    return parse_serial_trace(path.read_text(errors="replace"))
