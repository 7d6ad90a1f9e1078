"""Crash signatures: what makes two QEMU deaths the same bug.

A signature is the exit status or signal, plus the first fatal message QEMU
printed on stderr: a glibc ``assert`` (``file:line: func: Assertion `expr'
failed.``), a GLib ``g_assert`` (``ERROR:file:line:func: assertion failed:
(expr)``), a ``hw_error``, an AddressSanitizer report (bug kind and first
stack frame), or QEMU's own last ``error_report`` line. Line numbers are kept
for people but left out of the comparison key, so one assertion keeps one
signature across QEMU builds that moved it a few lines.

A hang (QEMU alive but no longer answering) is a signature of its own.
"""

from __future__ import annotations

import re
import signal as signals
from dataclasses import asdict, dataclass
from typing import Any

KIND_CRASH = "crash"  # QEMU died: a signal, or an exit status on its own
KIND_HANG = "hang"  # QEMU (or the guest) stopped making progress
KIND_NONE = "none"  # nothing happened: the replay ran to its end

# glibc: "qemu-system-x86_64: ../hw/ide/core.c:939: ide_dma_cb: Assertion `n > 0' failed."
_GLIBC_ASSERT = re.compile(r"(?P<file>[^\s:]+):(?P<line>\d+): (?P<func>[^:\n]+): Assertion `(?P<expr>.*)' failed\.")
# GLib: "ERROR:../hw/scsi/esp.c:123:esp_do_dma: assertion failed: (len > 0)" (also after "Bail out! ")
_GLIB_ERROR = re.compile(r"ERROR:(?P<file>[^\s:]+):(?P<line>\d+):(?P<func>[^:\n]+): (?P<text>.+)")
# SPICE and GLib conditions: "Spice-CRITICAL **: 12:00:01.234: ../server/red-worker.cpp:367:func: condition `x' failed"
# (also "Spice: ../server/...", after "(qemu-system-x86_64:123): "): the location names the code
_CONDITION = re.compile(
    r"(?:Spice|GLib)(?:-(?:CRITICAL|ERROR) \*\*)?:.*?"
    r"(?P<file>[^\s:]+\.(?:c|cc|cpp|h)):(?P<line>\d+):(?P<func>[^:\s]+): (?P<text>.+)"
)
# QEMU logs a library's GLib warnings as "qemu-system-x86_64: warning: Spice: ...": SPICE goes on after
# those (a qxl run prints dozens before the one CRITICAL condition that aborts), so they name no crash
_WARNING_BEFORE = re.compile(r"\bwarning: *$")
_HW_ERROR = re.compile(r"hardware error: (?P<text>.+)")
_ASAN = re.compile(r"ERROR: (?P<tool>AddressSanitizer|MemorySanitizer|ThreadSanitizer): (?P<what>\S+)")
_ASAN_FRAME = re.compile(r"#0 0x[0-9a-fA-F]+ in (?P<func>\S+) (?P<file>[^\s:]+)(?::(?P<line>\d+))?")
_UBSAN = re.compile(r"(?P<file>[^\s:]+):(?P<line>\d+):\d+: runtime error: (?P<text>.+)")
# QEMU's error_report(): "qemu-system-x86_64: <message>"; warnings and GLib criticals are not fatal
_QEMU_ERROR = re.compile(r"^qemu(?:-system-[\w-]+)?: (?P<text>.+)$")
_HEX_NUMBER = re.compile(r"0x[0-9a-fA-F]+")
# host paths (aexpect's temp scripts, sockets, images) differ between runs and hosts
_HOST_PATH = re.compile(r"(?<![\w.])/[^\s:'\"`,()]+")
# texts that quote code (an expression), not run-time values
_CODE_TEXT = ("Assertion `", "condition `", "assertion failed")
# signals another process sends (a user, a test harness, the OOM killer): no bug of QEMU's
OUTSIDE_SIGNALS = frozenset({signals.SIGKILL, signals.SIGTERM, signals.SIGINT, signals.SIGHUP, signals.SIGQUIT})
# signals of a fault in QEMU itself (a bad pointer, a bad division): QEMU prints nothing as it dies of one,
# so its last error line is a warning from before, which replays of the same bug need not repeat
FAULT_SIGNALS = frozenset({signals.SIGSEGV, signals.SIGBUS, signals.SIGFPE, signals.SIGILL})
_DECIMAL = re.compile(r"\b\d+\b")
_NOT_FATAL = re.compile(r"warning:|\binfo:|GLib(?:-\w+)?: |GLib-CRITICAL|\(process:\d+\)", re.I)


def _source_path(path: str) -> str:
    """``../../hw/ide/core.c`` -> ``hw/ide/core.c``: build directories differ, sources do not."""
    while path.startswith(("../", "./")):
        path = path.split("/", 1)[1]
    return path


@dataclass(frozen=True)
class CrashSignature:
    """What ended a run, in a form that compares equal for the same bug."""

    kind: str
    status: int | None = None
    signal: int | None = None
    message: str = ""  # the fatal message, line number removed ("" if QEMU printed none)
    location: str = ""  # "hw/ide/core.c:939" where the message names one
    frame: str = ""  # sanitizer builds: "func hw/x.c" of the report's first frame

    @property
    def key(self) -> str:
        """The comparison key: kind, how QEMU ended, message and frame, no line numbers."""
        if self.kind != KIND_CRASH:
            return self.kind
        how = f"signal {self.signal}" if self.signal is not None else f"status {self.status}"
        return " | ".join(part for part in (self.kind, how, self.stable_message, self.frame) if part)

    @property
    def stable_message(self) -> str:
        """The message without run-time values: assertions name code, but ``hw_error`` and
        ``error_report`` texts carry addresses and counts that change from one run to the next."""
        if self.location and any(marker in self.message for marker in _CODE_TEXT):
            return self.message
        return _DECIMAL.sub("N", _HEX_NUMBER.sub("0x?", _HOST_PATH.sub("PATH", self.message)))

    @property
    def from_outside(self) -> bool:
        """QEMU was killed by a signal another process sends, and printed no fatal message of its own."""
        return self.kind == KIND_CRASH and self.signal in OUTSIDE_SIGNALS and not self.message

    def same_bug(self, other: CrashSignature) -> bool:
        return self.key == other.key

    @property
    def is_failure(self) -> bool:
        return self.kind in (KIND_CRASH, KIND_HANG)

    def describe(self) -> str:
        if self.kind == KIND_HANG:
            return "hang: no progress, QEMU alive"
        if self.kind == KIND_NONE:
            return "no crash and no hang"
        if self.signal is not None:
            try:
                how = f"killed by {signals.Signals(self.signal).name}"
            except ValueError:
                how = f"killed by signal {self.signal}"
        else:
            how = f"exit status {self.status}"
        where = f" at {self.location}" if self.location else ""
        text = f": {self.message}" if self.message else ""
        frame = f" (first frame {self.frame})" if self.frame else ""
        return f"QEMU {how}{text}{where}{frame}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key, "description": self.describe()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CrashSignature:
        fields = {
            name: data[name] for name in ("kind", "status", "signal", "message", "location", "frame") if name in data
        }
        return cls(**fields)


NO_CRASH = CrashSignature(KIND_NONE)
HANG = CrashSignature(KIND_HANG)


def fatal_message(stderr: str) -> tuple[str, str, str]:
    """``(message, location, frame)``: the first fatal report in QEMU's stderr.

    Sanitizer reports win over everything (their first frame is the bug),
    then assertions and hardware errors; QEMU's last error line is the
    fallback for deaths that printed nothing more specific.
    """
    lines = stderr.splitlines()
    for index, line in enumerate(lines):
        match = _ASAN.search(line)
        if match:
            frame = ""
            for later in lines[index + 1 :]:
                frame_match = _ASAN_FRAME.search(later)
                if frame_match:
                    frame = f"{frame_match['func']} {_source_path(frame_match['file'])}"
                    break
            return f"{match['tool']}: {match['what']}", "", frame
    for line in lines:
        match = _GLIBC_ASSERT.search(line)
        if match:
            path = _source_path(match["file"])
            return (
                f"{path}: {match['func'].strip()}: Assertion `{match['expr']}' failed.",
                f"{path}:{match['line']}",
                "",
            )
        match = _GLIB_ERROR.search(line)
        if match:
            path = _source_path(match["file"])
            return f"{path}: {match['func'].strip()}: {match['text'].strip()}", f"{path}:{match['line']}", ""
        match = _UBSAN.search(line)
        if match:
            path = _source_path(match["file"])
            return f"{path}: runtime error: {match['text'].strip()}", f"{path}:{match['line']}", ""
        match = _CONDITION.search(line)
        if match and not _WARNING_BEFORE.search(line[: match.start()]):
            path = _source_path(match["file"])
            return f"{path}: {match['func'].strip()}: {match['text'].strip()}", f"{path}:{match['line']}", ""
        match = _HW_ERROR.search(line)
        if match:
            return f"hardware error: {match['text'].strip()}", "", ""
    errors = [m["text"].strip() for m in map(_QEMU_ERROR.match, lines) if m and not _NOT_FATAL.search(m["text"])]
    return (errors[-1], "", "") if errors else ("", "", "")


def crash_signature(status: int | None, signal: int | None, stderr: str) -> CrashSignature:
    """The signature of a QEMU that ended with ``status`` or ``signal`` after printing ``stderr``."""
    if (status is None) == (signal is None):
        raise ValueError(f"crash_signature: exactly one of status ({status}) and signal ({signal}) must be set")
    message, location, frame = fatal_message(stderr)
    if signal in OUTSIDE_SIGNALS and not (location or frame):
        # QEMU's last error line is not why another process killed it
        message = message if message.startswith("hardware error") else ""
    if signal in FAULT_SIGNALS and not (location or frame):
        # the fault is the bug; the warning printed last (AHCI's "PRDT length ... smaller than ...") varies
        # between runs of the same ops, and as the message it made triage call a replayed SIGSEGV another bug
        message = ""
    return CrashSignature(KIND_CRASH, status=status, signal=signal, message=message, location=location, frame=frame)


def signature_of_exit(exit_info: Any) -> CrashSignature:
    """The signature of a :class:`~avocado_iofuzz.vm.interface.QemuExit` (or its dict form)."""
    if isinstance(exit_info, dict):
        status, sig, tail = exit_info.get("status"), exit_info.get("signal"), exit_info.get("stderr_tail") or ""
    else:
        status, sig, tail = exit_info.status, exit_info.signal, exit_info.stderr_tail or ""
    if status is None and sig is None:
        # the exit status could not be read (avocado-vt lost it): still a death
        return CrashSignature(KIND_CRASH, status=-1, message=fatal_message(tail)[0])
    return crash_signature(status, sig, tail)


def group_by_signature(items: list[dict[str, Any]], field: str = "signature") -> list[dict[str, Any]]:
    """Items (dicts whose ``field`` is a signature dict) grouped by signature key, first seen first.

    Each group is ``{"key", "description", "count", "members": [index, ...]}``;
    items without the field are left out.
    """
    groups: dict[str, dict[str, Any]] = {}
    for index, item in enumerate(items):
        if not item.get(field):
            continue
        signature = CrashSignature.from_dict(item[field])
        group = groups.setdefault(
            signature.key, {"key": signature.key, "description": signature.describe(), "count": 0, "members": []}
        )
        group["count"] += 1
        group["members"].append(index)
    return list(groups.values())
