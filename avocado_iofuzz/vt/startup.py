"""Turn avocado-vt 113's fixed waits at VM start into waits for what they wait for.

Profiling ``avocado run iofuzz`` (py-spy on the test process) shows three
one-second sleeps between the test's start and the guest's first instruction,
a third of the time to the first fuzz op:

* the IP sniffer: ``aexpect.run_tail("tcpdump ...")`` returns after 1 s, so
  that a sniffer dying at once would be dead by then; nothing looks at it.
  Here it returns at once (the sniffer runs on; its log shows if it died).
* QEMU: ``run_tail(qemu ...)`` waits 1 s, so that QEMU has created the sockets
  avocado-vt connects to next (or has died of a bad command line). Here it
  waits until every socket QEMU listens on exists, or QEMU has exited.
* the consoles: ``time.sleep(1)`` in ``VM.create`` after starting ``nc`` on
  the serial console ("wait for IO channels setting up completely"), before
  the guest runs. Here it waits until QEMU reports those chardevs connected,
  so the console log still sees the whole boot.

Every replacement is bounded by the original wait, and where avocado-vt's
layout is not 113's nothing is changed. Call :func:`wait_for_events_not_time`
before avocado-vt's preprocess runs: the sniffer starts there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from types import FrameType, ModuleType
from typing import Any

from avocado_iofuzz.vm.qemu_output import QEMU_OUTPUT_LOG, QEMU_OUTPUT_PARAM, QemuOutputLog, output_log_path

LOG = logging.getLogger("avocado.test.iofuzz")

ORIGINAL_WAIT = 1.0  # what avocado-vt 113 sleeps in each of the three places
POLL_INTERVAL = 0.01
# -chardev socket,id=...,path=/var/tmp/...,server=on,wait=off: a socket QEMU listens on
_LISTENING_SOCKET = re.compile(r"-chardev\s+socket,(?=\S*\bserver=(?:on|yes)\b)\S*?\bpath=([^,\s]+)")
_DISCONNECTED = "disconnected:"


def listening_socket_paths(qemu_command: str) -> list[str]:
    """The unix socket paths a QEMU command line creates as servers (monitors, consoles)."""
    return [path.strip("'\"") for path in _LISTENING_SOCKET.findall(qemu_command)]


def wait_until(done: Callable[[], bool], timeout: float, clock: Callable[[], float] = time.monotonic) -> bool:
    """Poll ``done`` until it holds or ``timeout`` seconds pass; whether it held."""
    deadline = clock() + timeout
    while not done():
        if clock() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True


def unconnected_chardevs(chardevs: Iterable[dict[str, Any]], paths: Iterable[str]) -> list[str]:
    """Of the chardevs serving ``paths`` (QMP query-chardev entries), the paths nobody is connected to yet."""
    waiting = []
    for path in paths:
        entry = next((c for c in chardevs if path in str(c.get("filename", ""))), None)
        if entry is None or str(entry.get("filename", "")).startswith(_DISCONNECTED):
            waiting.append(path)
    return waiting


class _ModuleProxy:
    """Stands in for a module inside one avocado-vt module; everything but the overrides passes through."""

    def __init__(self, real: ModuleType) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _SnifferAexpect(_ModuleProxy):
    def run_tail(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) < 5:  # timeout is run_tail's fifth parameter
            kwargs["timeout"] = 0
        return self._real.run_tail(*args, **kwargs)


class _QemuAexpect(_ModuleProxy):
    def run_tail(self, command: str, *args: Any, **kwargs: Any) -> Any:
        paths = listening_socket_paths(command) if isinstance(command, str) else []
        if not paths or len(args) >= 4:
            return self._real.run_tail(command, *args, **kwargs)
        args = _output_to_file(args, _calling_vm(sys._getframe(1)))
        process = self._real.run_tail(command, *args, **{**kwargs, "timeout": 0})
        ready = wait_until(lambda: not process.is_alive() or all(os.path.exists(p) for p in paths), ORIGINAL_WAIT)
        if not ready:
            LOG.debug("QEMU created not all of %s within %.0f s", paths, ORIGINAL_WAIT)
        return process


def _output_to_file(args: tuple[Any, ...], vm: Any) -> tuple[Any, ...]:
    """qemu_vm's (termination_func, output_func, output_prefix) with QEMU's output going to a file.

    Each line of QEMU's output would otherwise be a logging call in the test
    (:mod:`avocado_iofuzz.vm.qemu_output`): every line goes to
    ``qemu-output-<vm>.log`` in the test's log dir instead, a throttled share
    still to avocado-vt's logger.
    """
    from virttest import utils_logfile

    log_dir = utils_logfile.get_log_file_dir()
    if len(args) != 3 or not callable(args[1]) or not log_dir:
        return args
    if str(getattr(vm, "params", {}).get(QEMU_OUTPUT_PARAM, "") or "") == QEMU_OUTPUT_LOG:
        return args  # asked for avocado-vt's way (read_iofuzz_run checked the value before QEMU started)
    termination, log, prefix = args
    sink = QemuOutputLog(output_log_path(log_dir, getattr(vm, "name", None)), log, str(prefix or ""))
    return (termination, sink, "")


class _ConsoleAwareTime(_ModuleProxy):
    """``time`` for qemu_vm: its one sleep in ``VM.create`` waits for the consoles instead."""

    def sleep(self, seconds: float) -> None:
        vm = _calling_vm(sys._getframe(1))
        if vm is None or seconds != ORIGINAL_WAIT:
            self._real.sleep(seconds)
            return
        started = self._real.monotonic()
        try:
            paths = _console_paths(vm)
            connected = wait_until(
                lambda: not unconnected_chardevs(vm.monitor.cmd("query-chardev", debug=False), paths), seconds
            )
        except Exception as error:  # a monitor hiccup must not fail VM creation: fall back to the plain wait
            LOG.debug("waiting for the consoles over QMP failed (%s): sleeping instead", error)
            connected = False
        if not connected:
            self._real.sleep(max(0.0, seconds - (self._real.monotonic() - started)))


def _calling_vm(frame: FrameType) -> Any:
    """The qemu_vm.VM whose ``create`` made this call, else None."""
    if frame.f_code.co_name != "create":
        return None
    vm = frame.f_locals.get("self")
    return vm if hasattr(vm, "serial_session_device") and hasattr(vm, "logs") else None


def _console_paths(vm: Any) -> list[str]:
    """The sockets avocado-vt has just started ``nc`` on: the serial console and the log sessions."""
    paths = [str(path) for path in vm.logs.values()]
    if vm.serial_session_device is not None:
        paths.append(vm.get_serial_console_filename(vm.serial_session_device))
    return paths


def wait_for_events_not_time() -> None:
    """Install the three replacements; idempotent, a no-op where avocado-vt's layout differs."""
    with contextlib.suppress(ImportError):
        from virttest import ip_sniffing, qemu_vm

        for module, name, proxy in (
            (ip_sniffing, "aexpect", _SnifferAexpect),
            (qemu_vm, "aexpect", _QemuAexpect),
            (qemu_vm, "time", _ConsoleAwareTime),
        ):
            current = getattr(module, name, None)
            if isinstance(current, ModuleType):
                setattr(module, name, proxy(current))
