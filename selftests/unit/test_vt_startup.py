"""avocado-vt's fixed waits at VM start become waits for their events (fakes for aexpect, QMP, time)."""

from __future__ import annotations

import threading
import time
import types

import pytest

from avocado_iofuzz.vt import startup as vt_startup

QEMU_COMMAND = (
    "/usr/bin/qemu-system-x86_64 -S -name 'vm1' "
    "-chardev socket,id=qmp_id_qmpmonitor1,path=/var/tmp/a/monitor-qmp,server=on,wait=off "
    "-mon chardev=qmp_id_qmpmonitor1,mode=control "
    "-chardev socket,id=chardev_serial0,path=/var/tmp/a/serial-serial0,server=on,wait=off "
    "-chardev socket,id=client,path=/var/tmp/a/elsewhere "
    "-device isa-serial,id=serial0,chardev=chardev_serial0"
)


def test_listening_socket_paths_are_the_server_chardevs():
    assert vt_startup.listening_socket_paths(QEMU_COMMAND) == ["/var/tmp/a/monitor-qmp", "/var/tmp/a/serial-serial0"]
    assert vt_startup.listening_socket_paths("qemu -serial stdio") == []


def test_unconnected_chardevs_names_the_paths_nobody_holds():
    chardevs = [
        {"label": "qmp", "filename": "unix:/var/tmp/a/monitor-qmp,server=on"},
        {"label": "chardev_serial0", "filename": "disconnected:unix:/var/tmp/a/serial-serial0,server=on"},
    ]
    paths = ["/var/tmp/a/monitor-qmp", "/var/tmp/a/serial-serial0", "/var/tmp/a/unknown"]
    assert vt_startup.unconnected_chardevs(chardevs, paths) == paths[1:]


class FakeTail:
    """A QEMU process that dies after ``lives`` liveness checks (never, if None)."""

    def __init__(self, lives: int | None = None) -> None:
        self.lives = lives
        self.checks = 0

    def is_alive(self) -> bool:
        self.checks += 1
        return self.lives is None or self.checks <= self.lives


class FakeAexpect(types.ModuleType):
    def __init__(self, process: FakeTail) -> None:
        super().__init__("aexpect")
        self.calls: list[tuple[tuple, dict]] = []
        self.process = process
        self.ShellSession = object

    def run_tail(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.process


def test_sniffer_start_does_not_wait():
    real = FakeAexpect(FakeTail())
    vt_startup._SnifferAexpect(real).run_tail(command="tcpdump -l", output_func=print)
    assert real.calls == [((), {"command": "tcpdump -l", "output_func": print, "timeout": 0})]
    assert vt_startup._SnifferAexpect(real).ShellSession is object  # everything else passes through


def test_qemu_start_returns_once_its_sockets_exist(tmp_path):
    sockets = [tmp_path / "monitor", tmp_path / "serial"]
    command = " ".join(f"-chardev socket,id=c{n},path={p},server=on,wait=off" for n, p in enumerate(sockets))
    process = FakeTail()
    real = FakeAexpect(process)
    threading.Timer(0.05, sockets[0].touch).start()
    threading.Timer(0.10, sockets[1].touch).start()
    assert vt_startup._QemuAexpect(real).run_tail(f"qemu {command}", None, None, "[qemu output] ") is process
    assert all(p.exists() for p in sockets)
    assert real.calls[0][1]["timeout"] == 0


def test_qemu_that_dies_is_returned_for_avocado_vt_to_report():
    process = FakeTail(lives=3)
    real = FakeAexpect(process)
    command = "qemu -chardev socket,id=s,path=/nonexistent/sock,server=on"
    assert vt_startup._QemuAexpect(real).run_tail(command) is process
    assert process.checks == 4  # polled until it was found dead, no longer


def test_wait_until_gives_up_at_its_timeout():
    now = [0.0]

    def clock() -> float:
        now[0] += 0.25
        return now[0]

    assert vt_startup.wait_until(lambda: False, 1.0, clock) is False
    assert vt_startup.wait_until(lambda: True, 1.0, clock) is True


class FakeMonitor:
    def __init__(self, connect_after: int) -> None:
        self.queries = 0
        self.connect_after = connect_after

    def cmd(self, command: str, debug: bool = True):
        assert command == "query-chardev" and debug is False
        self.queries += 1
        state = "" if self.queries > self.connect_after else "disconnected:"
        return [{"label": "chardev_serial0", "filename": f"{state}unix:/tmp/serial-serial0-x,server=on"}]


class FakeVm:
    serial_session_device = "serial0"

    def __init__(self, monitor: FakeMonitor) -> None:
        self.logs: dict[str, str] = {}
        self.monitor = monitor

    def get_serial_console_filename(self, name: str) -> str:
        return f"/tmp/serial-{name}-x"

    def create(self, clock_module) -> None:  # named like VM.create, whose sleep is replaced
        clock_module.sleep(1)


class SleepRecorder(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("time")
        self.slept: list[float] = []
        self.monotonic = time.monotonic

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_console_wait_in_vm_create_ends_when_qemu_reports_the_console_connected():
    recorder = SleepRecorder()
    monitor = FakeMonitor(connect_after=2)
    FakeVm(monitor).create(vt_startup._ConsoleAwareTime(recorder))
    assert monitor.queries == 3 and recorder.slept == []


def test_console_wait_falls_back_to_the_plain_sleep_when_qmp_fails():
    recorder = SleepRecorder()
    vm = FakeVm(FakeMonitor(0))
    vm.monitor.cmd = lambda *a, **k: (_ for _ in ()).throw(OSError("monitor gone"))
    vm.create(vt_startup._ConsoleAwareTime(recorder))
    assert len(recorder.slept) == 1 and 0 < recorder.slept[0] <= 1.0  # the rest of the original wait


def test_other_sleeps_are_untouched():
    recorder = SleepRecorder()
    vt_startup._ConsoleAwareTime(recorder).sleep(1)  # not called from VM.create
    vt_startup._ConsoleAwareTime(recorder).sleep(0.25)
    assert recorder.slept == [1, 0.25]


def test_install_is_idempotent_and_keeps_the_modules_working():
    virttest = pytest.importorskip("virttest.qemu_vm")
    from virttest import ip_sniffing

    vt_startup.wait_for_events_not_time()
    vt_startup.wait_for_events_not_time()
    assert isinstance(ip_sniffing.aexpect, vt_startup._SnifferAexpect)
    assert isinstance(virttest.aexpect, vt_startup._QemuAexpect)
    assert isinstance(virttest.time, vt_startup._ConsoleAwareTime)
    assert virttest.time.time() > 0 and virttest.aexpect.ShellSession is not None
