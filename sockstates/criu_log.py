"""What really went wrong in a failed ``criu dump`` or ``criu restore``, read from its log.

CRIU logs ``Error`` lines that do not stop it: on a host without
``CAP_SYS_RESOURCE`` every run logs "Can't setup RLIMIT_NOFILE", and every run
without iptables logs the failed ``iptables-save -V`` probes, successful runs
included. So the first ``Error`` line is no reason. The reason is, in order:

1. an assertion CRIU hit (``BUG at file:line``), with the error it logged just
   before (the assertion's context), and the death of a restored task that
   usually follows (the restorer crashes);
2. a restored (or dumped) task killed by a signal;
3. the first ``Error`` line that is not *benign*: not logged as well by a run
   that succeeded on the same machine (`benign_messages` of a calibration run),
   and not one of the closing summary lines CRIU prints after any failure.

Messages are compared with numbers blanked (pids, fds, inodes and ids differ
from run to run); the source location keeps its line for a BUG (that is what
upstream needs), and drops it elsewhere so that groups do not split on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

ERROR = re.compile(r"Error \(([^)]*)\):\s*(.*)")
BUG = re.compile(r"BUG at (\S+)")
# "14061 killed by signal 11: Segmentation fault" (cr-restore.c), also without the text
DEATH = re.compile(r"\b\d+ killed by signal (\d+)(?::\s*(.*))?")
NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\b(?=[0-9a-f]*[0-9])[0-9a-f]+\b")  # CRIU prints inodes in bare hex
# the lines CRIU closes any failed run with: consequences, never causes
SUMMARIES = re.compile(r"(Restoring|Dumping|Pre-dumping) FAILED|^Dump failed|^Restore failed")


@dataclass(frozen=True)
class Fatal:
    """The cause of a failed CRIU run: ``crashed`` when CRIU hit a BUG or a task died of a signal."""

    reason: str
    crashed: bool

    def group(self) -> str:
        """The reason without numbers that change between runs, for grouping states."""
        return NUMBERS.sub("N", self.reason) if not self.crashed else _blank_except_bug(self.reason)


def _blank_except_bug(text: str) -> str:
    # keep "BUG at criu/files.c:244" and "signal 11" intact: they name the assertion and the death
    parts = re.split(r"(BUG at \S+|signal \d+)", text)
    return "".join(part if part.startswith(("BUG at ", "signal ")) else NUMBERS.sub("N", part) for part in parts)


def _errors(lines: Iterable[str]) -> list[tuple[str, str]]:
    """(source location, message) of every Error line, in log order."""
    out = []
    for line in lines:
        match = ERROR.search(line)
        if match:
            out.append((match.group(1), match.group(2).strip()))
    return out


def normalized(location: str, message: str) -> str:
    """An error line as compared across runs: file without line number, message without numbers."""
    return f"{re.sub(r':[0-9]+$', '', location)}: {NUMBERS.sub('N', message)}"


def benign_messages(lines: Iterable[str]) -> frozenset[str]:
    """The errors a run that succeeded logged: on this machine they are no reason for a failure."""
    return frozenset(normalized(loc, msg) for loc, msg in _errors(lines))


def fatal(lines: Iterable[str], benign: frozenset[str] = frozenset()) -> Fatal | None:
    """The cause of the failure a CRIU log records; None when it names none."""
    errors = _errors(lines)
    for i, (_, message) in enumerate(errors):
        bug = BUG.search(message)
        if not bug:
            continue
        context = next((m for loc, m in reversed(errors[:i]) if not BUG.search(m)
                        and normalized(loc, m) not in benign), "")
        reason = bug.group(0) + (f" ({context})" if context else "")
        death = _death(errors)
        return Fatal(reason + (f"; {death}" if death else ""), crashed=True)
    death = _death(errors)
    if death:
        return Fatal(death, crashed=True)
    for location, message in errors:
        if SUMMARIES.search(message) or normalized(location, message) in benign:
            continue
        return Fatal(f"{re.sub(r':[0-9]+$', '', location)}: {message}", crashed=False)
    return None


def _death(errors: list[tuple[str, str]]) -> str:
    for _, message in errors:
        match = DEATH.search(message)
        if match:
            name = f" ({match.group(2).strip()})" if match.group(2) else ""
            return f"a task died of signal {match.group(1)}{name}"
    return ""
