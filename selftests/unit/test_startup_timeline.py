"""The startup benchmark's clocks: console text from QEMU's serial_write events, avocado log stamps, phases."""

from __future__ import annotations

from datetime import datetime

import pytest

from benchmarks._common import BenchmarkError
from benchmarks.console_timeline import parse_serial_trace
from benchmarks.startup import debug_log_times, log_line_time, phase_seconds


def serial_events(text: str, start: float, step: float = 0.001, register: int = 0) -> list[str]:
    return [
        f"4242@{start + n * step:.6f}:serial_write write addr 0x{register:02x} val 0x{ord(c):02x}"
        for n, c in enumerate(text)
    ]


def test_console_text_keeps_each_bytes_time_and_skips_the_divisor_latch():
    lines = [
        "4242@100.000000:serial_write write addr 0x03 val 0x83",  # DLAB on: offset 0 is the divisor
        "4242@100.000100:serial_write write addr 0x00 val 0x01",
        "4242@100.000200:serial_write write addr 0x03 val 0x03",  # DLAB off
        *serial_events("boot\niofuzz-guest# ", 101.0),
        "4242@102.000000:serial_update_parameters baudrate=115200",  # another event: ignored
        *serial_events("@IOFUZZ READY 1 2\n", 103.0),
    ]
    console = parse_serial_trace("\n".join(lines))
    assert console.text == "boot\niofuzz-guest# @IOFUZZ READY 1 2\n"
    assert console.first("iofuzz-guest# ") == pytest.approx(101.0 + 18 * 0.001)
    assert console.first("@IOFUZZ READY") == pytest.approx(103.0 + 12 * 0.001)
    assert console.first("boot", after=101.5) is None
    assert console.first("missing") is None


def test_avocado_log_stamps_are_local_time_with_milliseconds():
    stamp = log_line_time("[stdlog] 2026-11-25 01:45:58,221 avocado.test test L0232 INFO | Avocado-VT")
    assert stamp == datetime(2026, 11, 25, 1, 45, 58, 221000).timestamp()
    assert log_line_time("    -nographic") is None


def test_debug_log_gives_test_start_and_guest_release():
    log = (
        "[stdlog] 2026-11-25 01:45:58,221 avocado.test test L0232 INFO | start\n"
        "[stdlog]     -nographic\n"
        "[stdlog] 2026-11-25 01:46:02,405 qemu_monitor L0448 DEBUG| (monitor vm1.qmpmonitor1) Sending command 'cont' \n"
    )
    started, released = debug_log_times(log)
    assert released - started == pytest.approx(4.184)
    with pytest.raises(BenchmarkError, match="lacks a timestamped line or \"Sending command 'cont'\""):
        debug_log_times(log.splitlines()[0])


def test_phases_add_up_to_the_first_op_and_name_a_missing_marker():
    console = parse_serial_trace(
        "\n".join(
            serial_events("iofuzz-guest# ", 13.0)
            + serial_events("cat /proc/ioports\n", 13.5)
            + serial_events("@IOFUZZ READY 1 22\n", 13.8)
        )
    )
    phases = phase_seconds(10.0, 11.5, 12.0, console)
    assert list(phases) == ["avocado", "qemu_start", "boot", "login", "executor_ready"]
    assert phases["avocado"] == 1.5 and phases["qemu_start"] == 0.5
    assert sum(phases.values()) == pytest.approx(13.8 + 12 * 0.001 - 10.0)
    with pytest.raises(BenchmarkError, match="never showed '@IOFUZZ READY' after the login phase"):
        phase_seconds(
            10.0, 11.5, 12.0, parse_serial_trace("\n".join(serial_events("iofuzz-guest# cat /proc/ioports", 13)))
        )
