"""Feed a qtest script to a QEMU started under ``-qtest stdio`` with ``-trace``, and stop it once all is answered.

The tests that hold our qtest export to QEMU's own trace use it: QEMU writes
the trace, we only feed the script and count the answers. Every wait is
bounded (a reader thread, so a silent QEMU cannot block a readline forever)
and QEMU is stopped by PID, also when an answer is a FAIL or the time is up.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path


def feed_qtest(script: str, log: Path, devices: Sequence[str], traces: Sequence[str], timeout: float = 60) -> None:
    """``script`` on ``-machine pc`` with ``devices`` (QEMU args), tracing ``traces`` into ``log``."""
    commands = script.count("\n")
    trace_args = [arg for pattern in traces for arg in ("-trace", pattern)]
    qemu = subprocess.Popen(
        ["qemu-system-x86_64", "-machine", "pc", "-S", "-display", "none", "-nodefaults", *devices,
         "-qtest", "stdio", *trace_args, "-D", str(log)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert qemu.stdin is not None and qemu.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    answers_out = qemu.stdout

    def read_answers() -> None:
        for line in answers_out:
            lines.put(line)

    threading.Thread(target=read_answers, daemon=True).start()
    try:
        qemu.stdin.write(script)
        qemu.stdin.flush()
        deadline = time.monotonic() + timeout
        answers = 0
        while answers < commands:
            left = deadline - time.monotonic()
            assert left > 0, f"QEMU answered {answers} of {commands} qtest commands in {timeout} s"
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                continue
            assert not line.startswith(("FAIL", "ERR")), line
            answers += line.startswith("OK")
    finally:
        qemu.terminate()  # qtest never quits by itself; terminate flushes the trace log
        try:
            qemu.wait(10)
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu.wait(10)
