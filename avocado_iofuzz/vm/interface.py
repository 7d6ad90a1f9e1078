"""The one small interface through which a campaign reaches a VM.

The campaign (hang handling, crash detection) must work the same on an
avocado-vt ``qemu_vm.VM`` and on the bare QEMU that benchmarks, replays and
selftests start, so it only ever talks to this protocol.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Protocol

import aexpect

# hw_error() prints its message, then a dump of every vCPU's registers (~40 lines each)
HW_ERROR_LINE = "hardware error:"


def stderr_tail(output: str, tail: str) -> str:
    """``tail`` of QEMU's ``output``, with the ``hardware error`` line in front if the tail cut it off.

    The register dump that follows ``hw_error``'s message would otherwise push
    the one line naming the bug out of any short tail.
    """
    if HW_ERROR_LINE in tail:
        return tail
    line = next((line for line in output.splitlines() if HW_ERROR_LINE in line), "")
    return f"{line}\n{tail}" if line else tail


@dataclass(frozen=True)
class QemuExit:
    """How a QEMU process ended: exactly one of ``status`` / ``signal`` is set."""

    status: int | None
    signal: int | None
    stderr_tail: str

    def describe(self) -> str:
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            how = f"QEMU was killed by {name} ({self.signal})"
        else:
            how = f"QEMU exited with status {self.status}"
        tail = self.stderr_tail.strip()
        return f"{how}; stderr tail: {tail!r}" if tail else how


class GuestVM(Protocol):
    """What a campaign needs from a running guest."""

    def is_alive(self) -> bool:
        """True while the QEMU process runs (it may still be hung)."""

    def login(self, timeout: float) -> aexpect.ShellSession:
        """A fresh shell session on the guest's serial console."""

    def reset(self) -> None:
        """Hard-reset the guest (QMP ``system_reset``), resuming it if paused."""

    def restart(self) -> None:
        """Stop QEMU and start it again with the same command line: a fresh
        machine, for when a reset does not bring the guest back."""

    def exit_info(self) -> QemuExit | None:
        """None while QEMU runs; how it ended once it is gone."""

    def qemu_cmdline(self) -> str:
        """The command line QEMU was started with, recorded in traces for replay."""

    @property
    def pid(self) -> int | None:
        """QEMU's process id."""
