"""GuestVM on top of avocado-vt's ``qemu_vm.VM``: what the VT tests fuzz through."""

from __future__ import annotations

import logging
import re
import signal
import time
from typing import Any

import aexpect
from aexpect import remote

from avocado_iofuzz.vm.interface import HW_ERROR_LINE, QemuExit
from avocado_iofuzz.vm.process_guard import stop_processes, wait_gone
from avocado_iofuzz.vm.qemu_output import first_line_with, read_tail

LOG = logging.getLogger("avocado.test.iofuzz")

STDERR_TAIL_LINES = 20
PROMPT_WAIT = 2.0  # seconds to wait for a prompt after each Enter
# avocado-vt's QMP commands wait 900 s by default; a QEMU that answers at all
# answers these in milliseconds, even under TCG
QMP_TIMEOUT = 10.0
LOGIN_LOG_INTERVAL = 15.0  # seconds between "still waiting for a login" lines


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


def settle(console: Any, prompt: str, timeout: float = 10.0) -> None:
    """Read past every prompt still owed for lines sent before; return at the shell's last prompt.

    A slow boot (the Debian guest takes ~10 s) sees several Enters; their
    prompts may come after the one that ended the login and would open the
    next command's output. Lines typed ahead (an executor upload) do the
    same, and bash then prints their prompts run together on one line. The
    guest answers in order, so once the output of a unique echo is read,
    nothing stale is left.
    """
    number = time.monotonic_ns()
    # The command line reads iofuzz-sync''-N and prints iofuzz-sync-N: only the output matches, wherever the
    # shell puts it (right after a prompt when the line was typed ahead, which bash then does not echo).
    echoed = re.compile(rf"(?m)iofuzz-sync-{number}\r?$")
    console.sendline(f"echo iofuzz-sync''-{number}")
    seen = ""
    deadline = time.monotonic() + timeout
    while not echoed.search(seen):
        # ends at a prompt: the token's own once its output has been seen
        _, output = console.read_until_last_line_matches([prompt], timeout=max(0.1, deadline - time.monotonic()))
        seen += output


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

    def credentials(self) -> tuple[str, str]:
        """(username, password) for a login prompt; an empty username: the console has a shell already."""
        params = self.vm.params
        return params.get("username", ""), params.get("password", "")

    def login(self, timeout: float | None = None) -> Any:
        """A shell on avocado-vt's serial console session, found by its prompt.

        avocado-vt's own serial login first waits for 500 characters of
        console output (or 10 s), then for a prompt nobody asked for: a quiet
        serial-only guest costs ~20 s per login. Pressing Enter and waiting for
        the prompt (or a login question, answered by aexpect's handle_prompts)
        takes one round trip once the guest is up.
        """
        timeout = timeout or self.login_timeout
        # a fresh console: leftovers of an interrupted executor stay behind
        self.vm.cleanup_serial_console()
        self.vm.create_serial_console()
        console = self.vm.serial_console
        params = self.vm.params
        prompt = params.get("shell_prompt", r"[\#\$]\s*$")
        username, password = self.credentials()
        started = next_log = time.monotonic()
        deadline = started + timeout
        while True:
            if time.monotonic() - next_log >= LOGIN_LOG_INTERVAL:
                next_log = time.monotonic()
                waited = next_log - started
                LOG.info("waiting for a shell prompt on the serial console: %.0f of %.0f s", waited, timeout)
            console.sendline("")
            wait = max(0.5, min(PROMPT_WAIT, deadline - time.monotonic()))
            try:
                if username:
                    remote.handle_prompts(console, username, password, prompt, timeout=wait)
                else:
                    # a shell without login questions: handle_prompts would
                    # still wait for 0.5 s of silence after the prompt
                    console.read_until_last_line_matches([prompt], timeout=wait, internal_timeout=0.02)
                settle(console, prompt)
                return console
            except (remote.LoginTimeoutError, aexpect.ExpectTimeoutError):
                if time.monotonic() >= deadline:
                    raise

    def query_status(self, timeout: float) -> str:
        """The run state QMP reports; avocado-vt's monitor raises when no answer came within ``timeout`` s."""
        return str(self.vm.monitor.cmd("query-status", timeout=timeout, debug=False).get("status"))

    def reset(self) -> None:
        qmp = self.vm.monitor
        qmp.cmd("system_reset", timeout=QMP_TIMEOUT)
        if qmp.cmd("query-status", timeout=QMP_TIMEOUT).get("status") == "paused":
            qmp.cmd("cont", timeout=QMP_TIMEOUT)

    def restart(self) -> None:
        # avocado-vt's destroy() would first send QMP quit and wait up to
        # 900 s for a QEMU that may be the reason for the restart: stop it by
        # PID, so destroy() finds it dead and only tidies up
        stop_qemu(self.vm, self._pid)
        self.vm.destroy(gracefully=False)
        LOG.info("starting QEMU again")
        self.vm.create()
        self.vm.verify_alive()
        self._pid = self.vm.get_pid()

    def qemu_cmdline(self) -> str:
        return getattr(self.vm, "qemu_command", "") or ""

    def exit_info(self) -> QemuExit | None:
        if not self.vm.is_dead():
            return None
        status, sig = decode_shell_status(self.vm.process.get_status())
        # aexpect's server writes QEMU's whole output to this file before anything reads it: complete once
        # QEMU is dead, where the tail thread's copy (qemu-output-<vm>.log) may still be catching up. It can
        # be large (a line per fuzz op), so only its end is read, and the one line hw_error's dump hides.
        path = self.vm.process.output_filename
        tail = read_tail(path, STDERR_TAIL_LINES)
        hw_error = "" if HW_ERROR_LINE in tail else first_line_with(path, HW_ERROR_LINE)
        return QemuExit(status=status, signal=sig, stderr_tail=f"{hw_error}\n{tail}" if hw_error else tail)


def stop_qemu(vm: Any, pid: int | None = None) -> None:
    """Stop a VM's QEMU by PID within bounded time: SIGTERM, then SIGKILL."""
    pid = pid or vm.get_pid()
    if pid is None or vm.is_dead():
        return
    LOG.warning("stopping QEMU (PID %d): SIGTERM, SIGKILL if it does not go", pid)
    left = stop_processes([pid])
    if left:
        LOG.error("QEMU (PID %d) is still there after SIGKILL", pid)
    # QEMU's shell and aexpect helper follow it; avocado-vt's is_dead() looks at them
    shell = vm.process.get_pid() if vm.process else None
    if shell:
        wait_gone([shell], 5.0)


def stop_if_unresponsive(vm: Any) -> bool:
    """Stop QEMU by PID if it does not answer QMP within bounds; whether it had to.

    Run before avocado-vt's postprocess, whose destroy() sends QMP quit and
    waits up to 900 s for an answer from a QEMU that may never give one.
    """
    if vm.is_dead():
        return False
    try:
        vm.monitor.cmd("query-status", timeout=QMP_TIMEOUT, debug=False)
        return False
    except Exception as err:  # avocado-vt's monitor errors have many classes: all mean "no answer"
        LOG.warning("QEMU does not answer QMP within %.0f s (%s)", QMP_TIMEOUT, err)
    stop_qemu(vm)
    return True
