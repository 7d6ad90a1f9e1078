"""The tiny QMP client against a scripted fake QEMU monitor on a unix socket."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from avocado_iofuzz.vm.qmp import QmpClient, QmpError


class FakeMonitor:
    """Greets, accepts qmp_capabilities, then answers from ``replies`` (command -> list of messages)."""

    def __init__(self, path: Path, replies: dict[str, list[dict]], greeting: dict | None = None) -> None:
        self.received: list[dict] = []
        self.connections = 0
        self._replies = replies
        self._greeting = greeting or {"QMP": {"version": {}, "capabilities": []}}
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return  # closed
            self.connections += 1
            with conn:
                self._converse(conn)

    def _converse(self, conn: socket.socket) -> None:
        conn.sendall(json.dumps(self._greeting).encode() + b"\n")
        for line in conn.makefile("rb"):
            request = json.loads(line)
            self.received.append(request)
            command = request["execute"]
            if command == "qmp_capabilities":
                answers = [{"return": {}}]
            else:
                answers = self._replies.get(command, [{"error": {"class": "CommandNotFound", "desc": command}}])
            for answer in answers:
                if "sleep" in answer:  # a busy QEMU: answer late
                    time.sleep(answer["sleep"])
                    continue
                payload = json.dumps(answer).encode() + b"\r\n"
                # split the reply to exercise reassembly of partial reads
                try:
                    conn.sendall(payload[:5])
                    time.sleep(0.01)
                    conn.sendall(payload[5:])
                except OSError:
                    return  # the client gave up on us

    def close(self) -> None:
        self._server.close()


@pytest.fixture
def socket_path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "qmp.sock"


def test_commands_return_values_and_events_are_kept(socket_path: Path):
    reset_event = {"event": "RESET", "data": {"guest": False}}
    monitor = FakeMonitor(
        socket_path,
        {
            "system_reset": [reset_event, {"return": {}}],
            "query-status": [{"return": {"status": "running", "running": True}}],
        },
    )
    client = QmpClient(socket_path, timeout=5)
    try:
        client.connect(time.monotonic() + 5)
        assert client.execute("system_reset") == {}
        assert client.execute("query-status")["status"] == "running"
        assert client.events == [reset_event]
        assert [r["execute"] for r in monitor.received] == ["qmp_capabilities", "system_reset", "query-status"]
    finally:
        client.close()
        monitor.close()


def test_arguments_are_sent(socket_path: Path):
    monitor = FakeMonitor(socket_path, {"trace-event-set-state": [{"return": {}}]})
    client = QmpClient(socket_path, timeout=5)
    try:
        client.connect(time.monotonic() + 5)
        client.execute("trace-event-set-state", name="serial_write", enable=True)
        assert monitor.received[-1] == {
            "execute": "trace-event-set-state",
            "arguments": {"name": "serial_write", "enable": True},
        }
    finally:
        client.close()
        monitor.close()


def test_error_reply_raises_with_class_and_description(socket_path: Path):
    monitor = FakeMonitor(socket_path, {})
    client = QmpClient(socket_path, timeout=5)
    try:
        client.connect(time.monotonic() + 5)
        with pytest.raises(QmpError, match="QMP bogus failed: CommandNotFound: bogus"):
            client.execute("bogus")
    finally:
        client.close()
        monitor.close()


def test_wrong_greeting_is_refused(socket_path: Path):
    monitor = FakeMonitor(socket_path, {}, greeting={"hello": "not qemu"})
    client = QmpClient(socket_path, timeout=5)
    try:
        with pytest.raises(QmpError, match="unexpected QMP greeting"):
            client.connect(time.monotonic() + 5)
    finally:
        client.close()
        monitor.close()


def test_no_socket_times_out_naming_the_path(socket_path: Path):
    client = QmpClient(socket_path)
    started = time.monotonic()
    with pytest.raises(QmpError, match=r"cannot connect to QMP socket .*qmp\.sock"):
        client.connect(time.monotonic() + 0.3)
    assert time.monotonic() - started < 2


def test_execute_without_connection_is_an_error(socket_path: Path):
    with pytest.raises(QmpError, match="not connected"):
        QmpClient(socket_path).execute("quit")


def test_a_late_reply_is_never_taken_for_the_next_answer(socket_path: Path):
    monitor = FakeMonitor(
        socket_path,
        {
            "slow": [{"sleep": 0.6}, {"return": "late"}],
            "query-status": [{"return": {"status": "running"}}],
        },
    )
    client = QmpClient(socket_path, timeout=0.3)
    try:
        client.connect(time.monotonic() + 5)
        with pytest.raises(QmpError, match="timed out"):
            client.execute("slow")
        time.sleep(0.5)  # the late reply is sent meanwhile, to the dropped connection
        assert client.execute("query-status") == {"status": "running"}
        assert monitor.connections == 2
    finally:
        client.close()
        monitor.close()
