"""A minimal synchronous QMP client over a unix socket.

The bare VM only needs a handful of commands (system_reset, cont, quit,
query-status), so a few lines of JSON-over-socket beat an asyncio dependency.
Events QEMU sends between replies are kept in ``events`` for callers that care.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any


class QmpError(RuntimeError):
    """QMP answered with an error, or the conversation broke."""


class QmpClient:
    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._was_connected = False

    def connect(self, deadline: float) -> None:
        """Connect (retrying until ``deadline``, a time.monotonic() value) and negotiate capabilities."""
        last_error: OSError | None = None
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
                break
            except OSError as error:
                sock.close()
                last_error = error
                if time.monotonic() >= deadline:
                    raise QmpError(f"cannot connect to QMP socket {self.path}: {last_error}") from error
                time.sleep(0.05)
        sock.settimeout(self.timeout)
        self._sock = sock
        self._was_connected = True
        greeting = self._read_message()
        if "QMP" not in greeting:
            raise QmpError(f"unexpected QMP greeting: {greeting}")
        self.execute("qmp_capabilities")

    def _read_message(self) -> dict[str, Any]:
        if self._sock is None:
            raise QmpError("QMP is not connected")
        while b"\n" not in self._buffer:
            try:
                chunk = self._sock.recv(65536)
            except OSError as error:
                # A reply may still come after a timeout and would then be taken
                # for the answer to the next command: drop the connection instead.
                self.close()
                raise QmpError(f"reading from QMP socket {self.path} failed: {error!r}") from error
            if not chunk:
                self.close()
                raise QmpError(f"QMP socket {self.path} closed by QEMU")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError as error:
            raise QmpError(f"QMP sent invalid JSON: {line[:200]!r}") from error

    def execute(self, command: str, **arguments: Any) -> Any:
        """Run ``command`` and return its ``return`` value; raises QmpError on an ``error`` reply."""
        if self._sock is None:
            if not self._was_connected:
                raise QmpError("QMP is not connected")
            # the last conversation broke (e.g. QEMU was busy past our timeout): start a new one
            self.connect(time.monotonic() + self.timeout)
            assert self._sock is not None
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as error:
            self.close()
            raise QmpError(f"sending {command} to QMP failed: {error}") from error
        while True:
            reply = self._read_message()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                failure = reply["error"]
                raise QmpError(f"QMP {command} failed: {failure.get('class')}: {failure.get('desc')}")
            if "return" in reply:
                return reply["return"]
            raise QmpError(f"unexpected QMP reply to {command}: {reply}")

    def execute_within(self, seconds: float, command: str, **arguments: Any) -> Any:
        """:meth:`execute` with a reply limit of its own; QmpError when no reply came within ``seconds``.

        A reply that comes later would be taken for the next command's: the
        connection is dropped then (see _read_message), and the next command reconnects.
        """
        saved = self.timeout
        self.timeout = seconds  # also the limit of a reconnection
        try:
            if self._sock is not None:
                self._sock.settimeout(seconds)
            return self.execute(command, **arguments)
        finally:
            self.timeout = saved
            if self._sock is not None:
                self._sock.settimeout(saved)

    def close(self) -> None:
        """Drop the connection; a later ``execute`` reconnects if one was ever made."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._buffer = b""
