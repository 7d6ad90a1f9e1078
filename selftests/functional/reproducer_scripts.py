"""Running a hand-over reproducer as a QEMU developer does (``sh FILE``), and editing one for a control run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

REPRODUCERS = Path(__file__).resolve().parents[2] / "docs" / "results" / "reproducers"
SIGABRT_STATUS = 128 + signal.SIGABRT  # what sh reports for a child killed by SIGABRT
SHELL_TIMEOUT = 40.0  # the reproducers stop QEMU themselves after 10 s; this bounds the shell too
NOT_HAPPENED = "the crash did NOT happen"  # what a reproducer prints when QEMU lived


def run_script(path: Path, timeout: float = SHELL_TIMEOUT, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """``sh path`` in its own session (``env``: its environment, e.g. a ``QEMU=`` override); its exit status and
    stderr. Killed by PID if it outlives ``timeout``."""
    proc = subprocess.Popen(
        ["sh", str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True, env=env,
    )  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the shell and the QEMU it started
        proc.communicate()
        pytest.fail(f"{path.name} still running after {timeout:.0f} s")
    return proc.returncode, stderr.decode(errors="replace")


def run_with_trace(path: Path, tmp_path: Path, events: Sequence[str]) -> tuple[int, str, str]:
    """:func:`run_script` with QEMU logging ``events``: a ``QEMU=`` wrapper adds the ``-trace`` options and
    ``-D``. Its exit status, stderr, and QEMU's trace log (the outside observer of the path)."""
    log = tmp_path / "trace.log"
    wrapper = tmp_path / "qemu-traced"
    traces = " ".join(f"-trace {event}" for event in events)
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("qemu-system-x86_64")} "$@" {traces} -D {log}\n')
    wrapper.chmod(0o755)
    status, stderr = run_script(path, env={**os.environ, "QEMU": str(wrapper)})
    return status, stderr, log.read_text()


def script_variant(source: Path, tmp_path: Path, name: str, old: str, new: str) -> Path:
    """``source`` with its text ``old`` (exactly once in it) made ``new``, written to ``tmp_path / name``."""
    text = source.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {source.name}"
    path = tmp_path / name
    path.write_text(text.replace(old, new))
    return path


def whole_line(text: str) -> str:
    """A whole script line, so a comment that quotes it is never the one replaced."""
    return f"\n{text.rstrip()}\n"
