"""The process guard's parts on real (tiny) processes: stopping by PID, finding by token, the reaper."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from avocado_iofuzz.vm.process_guard import (
    GUARD_LOG_NAME,
    LOG_TARGET_FILE,
    OWNER_VAR,
    TimeUp,
    limit_test_time,
    owned_pids,
    process_alive,
    stop_processes,
)
from avocado_iofuzz.vt.guard import test_timeout_param as parse_timeout

IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
)


def start_stubborn(env: dict[str, str] | None = None) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout.readline().strip() == "ready"  # its SIGTERM handler is in place
    return child


def test_a_process_that_ignores_sigterm_is_killed_within_bounds():
    child = start_stubborn()
    logged: list[str] = []
    started = time.monotonic()
    left = stop_processes([child.pid], grace=0.5, log=logged.append)
    assert left == []
    assert child.wait(timeout=5) == -signal.SIGKILL
    assert time.monotonic() - started < 5
    assert "ignored SIGTERM" in logged[0] and str(child.pid) in logged[0]


def test_processes_are_found_by_their_owner_token_only():
    token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    mine = start_stubborn({**os.environ, OWNER_VAR: token})
    other = start_stubborn({**os.environ, OWNER_VAR: token + "0"})  # a longer token is someone else's
    try:
        assert owned_pids(token) == [mine.pid]
    finally:
        for child in (mine, other):
            child.kill()
            child.wait(timeout=5)
    assert not process_alive(mine.pid)


def test_the_reaper_stops_what_the_watched_process_left_once_it_ends(tmp_path):
    token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    watched = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    leftover = start_stubborn({**os.environ, OWNER_VAR: token})
    state = tmp_path / "state"
    state.mkdir()
    (state / LOG_TARGET_FILE).write_text(str(tmp_path / GUARD_LOG_NAME))
    command = [sys.executable, "-m", "avocado_iofuzz.vm.process_guard"]
    command += ["--watch", str(watched.pid), "--token", token, "--state", str(state)]
    subprocess.run(command, timeout=30, check=True)
    try:
        watched.wait(timeout=10)
        assert leftover.wait(timeout=20) == -signal.SIGKILL  # 1 s, then SIGTERM (ignored), 3 s, SIGKILL
    finally:
        if leftover.poll() is None:
            leftover.kill()
    log = (tmp_path / GUARD_LOG_NAME).read_text()
    assert f"{leftover.pid} (python" in log and "ignored SIGTERM" in log
    deadline = time.monotonic() + 5
    while state.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not state.exists(), "the reaper leaves no state behind"


def test_the_test_time_limit_raises_past_any_except_exception():
    caught_by_recovery = False
    with pytest.raises(TimeUp, match="test timeout of 0 s reached"), limit_test_time(0.2):
        try:
            time.sleep(5)
        except Exception:  # what the campaign's recovery does with failures
            caught_by_recovery = True
    assert not caught_by_recovery
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_no_time_limit_with_zero():
    with limit_test_time(0):
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


@pytest.mark.parametrize(("raw", "seconds"), [("", 0.0), ("0", 0.0), ("3600", 3600.0), (" 90.5 ", 90.5)])
def test_timeout_param_values(raw, seconds):
    assert parse_timeout({"iofuzz_test_timeout": raw}) == seconds


@pytest.mark.parametrize("raw", ["1h", "-5"])
def test_timeout_param_errors_name_the_param(raw):
    with pytest.raises(ValueError, match=f"iofuzz_test_timeout must be a number of seconds .*{raw}"):
        parse_timeout({"iofuzz_test_timeout": raw})

