"""GuestVM on top of avocado-vt's ``qemu_vm.VM``: what the VT tests fuzz through."""

from __future__ import annotations

import signal
from typing import Any

from avocado_iofuzz.vm.interface import QemuExit

STDERR_TAIL_LINES = 20


def decode_shell_status(status: int | None) -> tuple[int | None, int | None]:
    """Turn the status aexpect reports for QEMU's shell into (exit status, signal).

    avocado-vt runs QEMU under ``/bin/sh -c``; the shell reports a child
    killed by signal N as exit status 128+N, and aexpect passes only that
    number on, so this is the one place where a signal can still be seen.
    """
    if status is None:
        return None, None
    if 128 < status < 128 + signal.NSIG:
        return None, status - 128
    return status, None


class VtGuest:
    """Adapter from an avocado-vt VM to the campaign's GuestVM protocol."""

    def __init__(self, vm: Any, login_timeout: float) -> None:
        self.vm = vm
        self.login_timeout = login_timeout
        self._pid = vm.get_pid()

    @property
    def pid(self) -> int | None:
        return self._pid

    def is_alive(self) -> bool:
        return not self.vm.is_dead()

    def login(self, timeout: float | None = None) -> Any:
        # recreate the console so that output of a crashed session (an
        # executor that was interrupted mid-line) cannot confuse the login
        return self.vm.wait_for_serial_login(
            timeout=timeout or self.login_timeout, status_check=False, recreate_serial_console=True
        )

    def reset(self) -> None:
        self.vm.monitor.cmd("system_reset")
        if self.vm.is_paused():
            self.vm.resume()

    def qemu_cmdline(self) -> str:
        return getattr(self.vm, "qemu_command", "") or ""

    def exit_info(self) -> QemuExit | None:
        if not self.vm.is_dead():
            return None
        status, sig = decode_shell_status(self.vm.process.get_status())
        output = self.vm.process.get_output() or ""
        tail = "\n".join(output.strip().splitlines()[-STDERR_TAIL_LINES:])
        return QemuExit(status=status, signal=sig, stderr_tail=tail)
