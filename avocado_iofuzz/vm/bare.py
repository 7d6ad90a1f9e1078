"""GuestVM on a QEMU we start ourselves, without avocado-vt: for selftests, benchmarks and replays.

The serial console is a unix-socket chardev with ``wait=on``: QEMU does not
run the guest until we are connected, so no boot output is lost. The first
:meth:`BareQemu.login` reuses that connection; later logins reconnect, as the
campaign closes a session whose shell may hold a half-read line. Everything a
console connection sees goes to ``serial.log`` in the run directory.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TextIO

import aexpect
from aexpect.remote import LoginProcessTerminatedError, LoginTimeoutError

from avocado_iofuzz.guest.artifacts import GuestArtifacts
from avocado_iofuzz.vm.interface import QemuExit, stderr_tail
from avocado_iofuzz.vm.qmp import QmpClient, QmpError

LOG = logging.getLogger("avocado.test.iofuzz")

STDERR_TAIL_CHARS = 2000
STOP_GRACE_SECONDS = 3.0
CONNECT_TIMEOUT = 10.0
PROMPT_WAIT_STEP = 1.0  # how long to wait for a prompt before nudging the shell with a newline
SYNC_WAIT = 3.0  # how long one sync echo may take before we go back to looking for a prompt
_sync_counter = itertools.count(1)


class BareQemuError(RuntimeError):
    """The bare VM cannot be started or driven."""


class SerialShellSession(aexpect.ShellSession):
    """A ShellSession that waits only 10 ms of silence per read unless told otherwise.

    aexpect's default (100 ms) would dominate every short command on the
    serial console; callers that pass ``internal_timeout`` still get theirs.
    """

    default_internal_timeout = 0.01

    def _read_nonblocking(self, internal_timeout: float | None = None, timeout: float | None = None):
        if internal_timeout is None:
            internal_timeout = self.default_internal_timeout
        return super()._read_nonblocking(internal_timeout, timeout)


def ensure_aexpect_helper_on_path() -> None:
    """aexpect starts ``aexpect_helper`` through the shell; in a venv it sits beside the interpreter."""
    if shutil.which("aexpect_helper") is None:
        os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
        if shutil.which("aexpect_helper") is None:
            raise BareQemuError("aexpect_helper not found on PATH nor beside the Python interpreter")


def last_nonempty_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def synced_output(buffer: str, token: str, prompt: str) -> bool:
    """True once ``buffer`` holds ``token`` alone on a line followed by a prompt."""
    match = re.search(rf"^{re.escape(token)}\r?$", buffer, re.MULTILINE)
    return match is not None and re.search(prompt, last_nonempty_line(buffer[match.end() :])) is not None


class BareQemu:
    """A QEMU running one embedded guest, reached through the GuestVM protocol.

    ``accel`` None means: ask :func:`probe_accelerator`. ``trace_events`` are
    QEMU trace event names or patterns (``-trace``), logged to
    ``trace_log`` (``qemu-trace.log`` in the run directory) so tests can
    observe device accesses. ``extra_args`` are appended to the command line
    (devices, ``-cpu``, ...). Without ``run_dir`` a temporary one is used and
    removed by :meth:`stop`.
    """

    def __init__(
        self,
        guest: GuestArtifacts,
        run_dir: Path | None = None,
        *,
        qemu_binary: str = "qemu-system-x86_64",
        accel: str | None = None,
        memory_mb: int = 256,
        machine: str = "pc",
        extra_args: Sequence[str] = (),
        trace_events: Sequence[str] = (),
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        if memory_mb < 32:
            raise ValueError(f"memory_mb must be at least 32, got {memory_mb}")
        if accel is not None and accel not in ("kvm", "tcg"):
            raise ValueError(f"accel must be 'kvm', 'tcg' or None (probe), got {accel!r}")
        binary = shutil.which(qemu_binary)
        if binary is None:
            raise BareQemuError(f"QEMU binary {qemu_binary!r} not found")
        self.guest = guest
        self.qemu_binary = binary
        self.accel = accel
        self.accel_reason = "given by the caller" if accel else ""
        self.memory_mb = memory_mb
        self.machine = machine
        self.extra_args = list(extra_args)
        self.trace_events = list(trace_events)
        self.connect_timeout = connect_timeout
        self._own_run_dir = run_dir is None
        self.run_dir = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="iofuzz-vm-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = self.run_dir / "qemu-stderr.log"
        self.serial_log_path = self.run_dir / "serial.log"
        self.trace_log_path = self.run_dir / "qemu-trace.log"
        # unix socket paths are limited to 108 bytes: keep them in a short private dir
        self._socket_dir: Path | None = None
        self._argv: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._qmp: QmpClient | None = None
        self._console: SerialShellSession | None = None
        self._console_handed_out = False
        self._exit: QemuExit | None = None
        self._serial_log: TextIO | None = None

    # -- lifecycle -----------------------------------------------------------
    # chardev ids of our monitor and console; a subclass whose machine args
    # may already use these names picks others
    qmp_chardev = "qmp"
    console_chardev = "serial0"

    def machine_args(self) -> list[str]:
        """The machine, its memory and devices; the kernel, console and monitor come from build_argv."""
        return ["-nodefaults", "-machine", self.machine, "-m", str(self.memory_mb)]

    def console_device_args(self) -> list[str]:
        """What connects the console chardev to the guest's first serial port."""
        return ["-serial", f"chardev:{self.console_chardev}"]

    def build_argv(self, serial_socket: Path, qmp_socket: Path) -> list[str]:
        if self.accel is None:
            raise BareQemuError("accelerator not chosen yet")
        argv = [
            self.qemu_binary,
            "-display",
            "none",
            *self.machine_args(),
            "-accel",
            self.accel,
            "-kernel",
            str(self.guest.kernel),
            "-initrd",
            str(self.guest.initrd),
            "-append",
            self.guest.kernel_params,
            # QMP first: it must be usable while the serial chardev waits for us
            "-chardev",
            f"socket,id={self.qmp_chardev},path={qmp_socket},server=on,wait=off",
            "-mon",
            f"chardev={self.qmp_chardev},mode=control",
            "-chardev",
            f"socket,id={self.console_chardev},path={serial_socket},server=on,wait=on",
            *self.console_device_args(),
        ]
        for event in self.trace_events:
            argv += ["-trace", event]
        if self.trace_events:
            argv += ["-D", str(self.trace_log_path)]
        return argv + self.extra_args

    def start(self) -> BareQemu:
        if self._proc is not None:
            raise BareQemuError("this BareQemu was already started")
        ensure_aexpect_helper_on_path()
        if shutil.which("socat") is None:
            raise BareQemuError("socat not found on PATH: it connects to the serial console (apt-get install socat)")
        if self.accel is None:
            from avocado_iofuzz.guest.accel import probe_accelerator

            choice = probe_accelerator(self.qemu_binary)
            self.accel, self.accel_reason = choice.name, choice.reason
            LOG.info("accelerator %s: %s", self.accel, self.accel_reason)
        self._socket_dir = Path(tempfile.mkdtemp(prefix="iofuzz-sock-", dir="/tmp"))
        serial_socket = self._socket_dir / "serial.sock"
        qmp_socket = self._socket_dir / "qmp.sock"
        self._argv = self.build_argv(serial_socket, qmp_socket)
        LOG.debug("starting %s", shlex.join(self._argv))
        with open(self.stderr_path, "wb") as stderr:
            self._proc = subprocess.Popen(
                self._argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, start_new_session=True
            )
        self._serial_log = open(self.serial_log_path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        try:
            deadline = time.monotonic() + self.connect_timeout
            self._wait_for_socket(serial_socket, deadline)
            self._console = self._connect_console(serial_socket)
            self._console_handed_out = False
            self._qmp = QmpClient(qmp_socket)
            self._qmp.connect(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_socket(self, path: Path, deadline: float) -> None:
        while not path.exists():
            if self._proc is not None and self._proc.poll() is not None:
                raise BareQemuError(f"QEMU failed to start: {self._finish_exit().describe()}")
            if time.monotonic() > deadline:
                raise BareQemuError(f"QEMU created no serial socket {path} within {self.connect_timeout} s")
            time.sleep(0.02)

    def _connect_console(self, serial_socket: Path) -> SerialShellSession:
        command = f"socat -,raw,echo=0 UNIX-CONNECT:{shlex.quote(str(serial_socket))},retry=50,interval=0.1"
        log = self._serial_log

        def write_line(line: str) -> None:
            if log is not None and not log.closed:
                log.write(line + "\n")
                log.flush()

        session = SerialShellSession(
            command,
            auto_close=False,
            output_func=write_line,
            prompt=self.guest.shell_prompt,
            status_test_command="echo $?",
        )
        return session

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Quit QEMU (QMP quit, then SIGKILL by PID after ``grace`` seconds) and release everything."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            if self._qmp is not None:
                with contextlib.suppress(QmpError, OSError):
                    self._qmp.execute("quit")
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None:
            self._finish_exit()
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        if self._console is not None:
            with contextlib.suppress(Exception):
                self._console.close()
            self._console = None
        if self._serial_log is not None:
            self._serial_log.close()
            self._serial_log = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
        if self._own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def restart(self) -> None:
        """Stop QEMU and start it again with the same arguments: a fresh machine.

        The run directory (serial log, stderr, trace log) is kept across it.
        """
        own_run_dir, self._own_run_dir = self._own_run_dir, False
        try:
            self.stop(grace=0)
        finally:
            self._own_run_dir = own_run_dir
        self._proc = None
        self._exit = None
        self.start()

    def __enter__(self) -> BareQemu:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- GuestVM -------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def qemu_cmdline(self) -> str:
        return shlex.join(self._argv)

    def exit_info(self) -> QemuExit | None:
        if self._proc is None or self._proc.poll() is None:
            return None
        return self._finish_exit()

    def _finish_exit(self) -> QemuExit:
        if self._exit is None:
            assert self._proc is not None
            code = self._proc.wait()
            try:
                output = self.stderr_path.read_text(errors="replace")
                tail = stderr_tail(output, output[-STDERR_TAIL_CHARS:])
            except OSError:
                tail = ""
            if code < 0:
                self._exit = QemuExit(status=None, signal=-code, stderr_tail=tail)
            else:
                self._exit = QemuExit(status=code, signal=None, stderr_tail=tail)
        return self._exit

    def reset(self) -> None:
        qmp = self._require_qmp()
        # A new connection, made before the reset so that it sees the whole
        # reboot (serial.log keeps it); the caller's old session is closed.
        self._reconnect_console()
        self._console_handed_out = False
        qmp.execute("system_reset")
        if qmp.execute("query-status").get("status") != "running":
            qmp.execute("cont")

    def login(self, timeout: float = 60.0) -> SerialShellSession:
        """A shell on the serial console, synchronised: the next read sees only new output."""
        if not self.is_alive():
            raise LoginProcessTerminatedError(None, f"QEMU is not running: {self._describe_exit()}")
        deadline = time.monotonic() + timeout
        session, nudge_first = self._take_console()
        self._await_shell(session, deadline, nudge_first)
        return session

    def query_status(self, timeout: float) -> str:
        """The run state QMP reports, or QmpError when the monitor does not answer within ``timeout`` s."""
        return str(self._require_qmp().execute_within(timeout, "query-status").get("status"))

    # -- helpers ----------------------------------------------------------------
    def qmp(self, command: str, **arguments: object) -> object:
        """Run a QMP command on this VM's monitor."""
        return self._require_qmp().execute(command, **arguments)

    def _require_qmp(self) -> QmpClient:
        if self._qmp is None or not self.is_alive():
            raise BareQemuError(f"QEMU is not running: {self._describe_exit()}")
        return self._qmp

    def _describe_exit(self) -> str:
        info = self.exit_info()
        return info.describe() if info is not None else "not started"

    def _take_console(self) -> tuple[SerialShellSession, bool]:
        """The connection that saw the boot, the first time; a new connection afterwards.

        The second value says whether the shell needs a newline to show a
        prompt (it printed the last one while nobody was listening).
        """
        if self._console is not None and not self._console_handed_out and self._console.is_alive():
            self._console_handed_out = True
            return self._console, False
        console = self._reconnect_console()
        self._console_handed_out = True
        return console, True

    def _reconnect_console(self) -> SerialShellSession:
        """Replace the console connection, returning once QEMU has accepted the new one.

        The chardev serves one client at a time, so the old connection must be
        gone (as QEMU sees it) before the new one can be accepted; and output
        QEMU writes before it accepts is lost, which matters right before a reset.
        """
        if self._console is not None:
            with contextlib.suppress(Exception):
                self._console.close()
            self._wait_serial_connection(connected=False)
        assert self._socket_dir is not None
        self._console = self._connect_console(self._socket_dir / "serial.sock")
        self._wait_serial_connection(connected=True)
        return self._console

    def _wait_serial_connection(self, connected: bool, timeout: float = 5.0) -> None:
        """Poll QMP until the serial chardev is (dis)connected; best effort, a miss is only logged."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chardevs = self._require_qmp().execute("query-chardev")
            except (QmpError, BareQemuError):
                return  # QEMU is gone: the login that follows reports it
            serial: dict[str, str] = next((c for c in chardevs if c.get("label") == "serial0"), {})
            if serial.get("filename", "").startswith("disconnected:") != connected:
                return
            time.sleep(0.01)
        LOG.warning("serial console still %s after %.0f s", "disconnected" if connected else "connected", timeout)

    def _await_shell(self, session: SerialShellSession, deadline: float, nudge_first: bool) -> None:
        prompt = self.guest.shell_prompt
        output = ""
        if nudge_first:
            session.sendline()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LoginTimeoutError(output[-2000:])
            try:
                _, text = session.read_until_last_line_matches(
                    [prompt], timeout=min(remaining, PROMPT_WAIT_STEP), internal_timeout=0.01
                )
                output += text
            except aexpect.ExpectTimeoutError as error:
                output += error.output
                session.sendline()  # the prompt may have scrolled by, or a key press is pending
                continue
            except aexpect.ExpectProcessTerminatedError as error:
                raise LoginProcessTerminatedError(error.status, output + error.output) from error
            if self._sync(session, min(deadline - time.monotonic(), SYNC_WAIT)):
                return

    def _sync(self, session: SerialShellSession, timeout: float) -> bool:
        """Echo a fresh token and read up to the prompt after it, discarding older output."""
        number = next(_sync_counter)
        # the command line reads iofuzz""sync-N, the output iofuzzsync-N: only the output matches
        session.sendline(f'echo iofuzz""sync-{number}')
        token = f"iofuzzsync-{number}"
        buffer = ""
        end = time.monotonic() + max(timeout, 0.0)
        while time.monotonic() < end:
            try:
                buffer += session.read_nonblocking(internal_timeout=0.01, timeout=max(end - time.monotonic(), 0.01))
            except aexpect.ExpectError:
                return False
            if synced_output(buffer, token, self.guest.shell_prompt):
                return True
            if not session.is_alive():
                return False
        return False
