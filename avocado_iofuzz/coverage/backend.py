"""Does this QEMU have a trace backend iofuzz can read? Asked of QEMU itself, before the run.

Coverage needs the ``log`` backend: ``-trace file=F`` then makes QEMU write
one text line per enabled event to F, and QMP ``trace-event-set-state``
switches events on and off while the guest runs. A QEMU built with ``nop``
(or ``simple``, ``dtrace``, ``ust``, ``ftrace``, ``syslog`` alone) accepts
the same options and writes nothing readable. So the probe does what a run
does -- start QEMU with ``-trace file=F``, enable one event over QMP, cause
it -- and looks for the event's line in F.
"""

from __future__ import annotations

import functools
import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from avocado_iofuzz.coverage.formats import find_formats_file

# fired by every QMP command the monitor handles: the probe causes it by talking
PROBE_EVENT = "handle_qmp_command"
PROBE_TIMEOUT = 20.0


@dataclass(frozen=True)
class TraceBackend:
    usable: bool
    reason: str  # why not, or what was seen
    events: tuple[str, ...] = ()  # every event this QEMU has (``-trace help``)
    # QEMU's installed trace-events-all (the events' arguments and formats), if found: argument features
    formats_file: Path | None = None


def list_events(qemu: str, timeout: float = PROBE_TIMEOUT) -> tuple[str, ...]:
    """The event names of ``qemu -trace help`` (empty if QEMU cannot tell)."""
    try:
        out = subprocess.run(
            [qemu, "-trace", "help"], capture_output=True, text=True, timeout=timeout, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return tuple(line.strip() for line in out.splitlines() if line.strip() and " " not in line.strip())


@functools.lru_cache(maxsize=8)
def probe_backend(qemu: str, timeout: float = PROBE_TIMEOUT) -> TraceBackend:
    """Start ``qemu`` without a machine, enable :data:`PROBE_EVENT` over QMP and read the trace file back."""
    events = list_events(qemu, timeout)
    if PROBE_EVENT not in events:
        return TraceBackend(False, f"{qemu} -trace help does not list {PROBE_EVENT} (no trace events built in)")
    with tempfile.TemporaryDirectory(prefix="iofuzz-trace-probe-") as tmp:
        log = Path(tmp) / "trace.log"
        commands = [
            {"execute": "qmp_capabilities"},
            {"execute": "trace-event-set-state", "arguments": {"name": PROBE_EVENT, "enable": True}},
            {"execute": "query-status"},  # fires the event
            {"execute": "quit"},
        ]
        argv = [qemu, "-M", "none", "-nodefaults", "-display", "none", "-S", "-qmp", "stdio", "-trace", f"file={log}"]
        try:
            run = subprocess.run(
                argv,
                input="".join(json.dumps(c) + "\n" for c in commands),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            return TraceBackend(False, f"trace probe of {qemu} failed: {err}")
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    if any(line.split(" ", 1)[0].endswith(PROBE_EVENT) for line in text.splitlines()):
        reason = f"log backend: {PROBE_EVENT} enabled over QMP was written to -trace file="
        return TraceBackend(True, reason, events, find_formats_file(qemu))
    stderr = run.stderr.strip().splitlines()
    detail = f" (QEMU said: {stderr[-1]})" if stderr else ""
    return TraceBackend(
        False,
        f"{qemu} wrote no readable trace line for {PROBE_EVENT}: its trace backend is not 'log' "
        f"(nop, simple, dtrace...){detail}",
    )
