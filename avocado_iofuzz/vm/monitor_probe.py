"""At a stall, is it the guest or QEMU? Ask QEMU's monitor, with a short limit.

QEMU's monitor answers from its main loop, and the main loop needs the big
QEMU lock. A device model stuck in a loop inside an MMIO or port handler holds
that lock on the vCPU thread (or spins in the main loop itself), so the
monitor stays silent: QEMU hangs, which is QEMU's bug. A guest whose kernel
waits forever, or whose vCPU spins in guest code, leaves the main loop free:
the monitor answers at once, and the stall is the guest's (a device that
stopped raising interrupts, a guest driver loop) -- rarely a bug in QEMU.

A run asks right when it sees no progress, before any recovery touches the
machine, and asks :data:`PROBE_QUESTIONS` times a second apart: a device
model that runs from a timer (lsi53c895a's SCRIPTS processor on a guest's
garbage) stalls the main loop for seconds at a time, between which the
monitor answers -- one answer would call that stall the guest's. One silence
is QEMU's. The verdict goes into the hang finding and the trace.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

# long enough for a busy TCG main loop on a loaded host to answer, short enough not to stretch every hang
PROBE_TIMEOUT = 5.0
PROBE_QUESTIONS = 3
PROBE_INTERVAL = 1.0  # seconds between questions that were answered
ANSWERED = "answered"  # the main loop runs: the guest is stuck
SILENT = "silent"  # no answer within the limit: the main loop is stuck (a QEMU hang)
UNREACHABLE = "unreachable"  # the monitor could not be asked at all (no QMP, a broken socket): no verdict


@dataclass(frozen=True)
class MonitorProbe:
    verdict: str
    seconds: float  # the slowest answer, or how long the silence lasted
    status: str = ""  # query-status's run state when the monitor answered
    error: str = ""
    questions: int = 1  # asked until the verdict

    def describe(self) -> str:
        if self.verdict == ANSWERED:
            return (
                f"QEMU's monitor answered {self.questions} question(s) within {self.seconds:.2f} s "
                f"(status {self.status}): the guest is stuck, QEMU's main loop is not"
            )
        if self.verdict == SILENT:
            return f"QEMU's monitor did not answer within {self.seconds:.1f} s: QEMU's main loop is stuck (a QEMU hang)"
        return f"QEMU's monitor could not be asked ({self.error})"

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value != ""}


def probe_monitor(
    vm: Any,
    timeout: float = PROBE_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
    questions: int = PROBE_QUESTIONS,
    interval: float = PROBE_INTERVAL,
    sleep: Callable[[float], None] = time.sleep,
) -> MonitorProbe | None:
    """Ask ``vm``'s monitor for its run state, ``questions`` times ``interval`` s apart, each within ``timeout`` s.

    None for a VM that has no ``query_status`` (or is dead). ``vm.query_status(timeout)``
    returns the state or raises when no answer came in time (or the monitor is out
    of reach). The first silence is the verdict; a failure that came before the limit
    is no evidence of a stuck main loop: that is ``unreachable``.
    """
    ask = getattr(vm, "query_status", None)
    if ask is None or not vm.is_alive():
        return None
    slowest, status = 0.0, ""
    for asked in range(1, questions + 1):
        if asked > 1:
            sleep(interval)
        started = clock()
        try:
            status = str(ask(timeout))
        except Exception as err:  # avocado-vt's monitor and our QMP client raise their own classes for "no answer"
            waited = clock() - started
            verdict = SILENT if waited >= 0.9 * timeout else UNREACHABLE
            return MonitorProbe(verdict, round(waited, 2), error=f"{type(err).__name__}: {err}"[:200], questions=asked)
        slowest = max(slowest, clock() - started)
    return MonitorProbe(ANSWERED, round(slowest, 3), status, questions=questions)
