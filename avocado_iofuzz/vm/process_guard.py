"""Nothing a test starts outlives it: QEMU, aexpect helpers, nc, tcpdump.

avocado's runner stops a test on ``--job-timeout``, a task timeout or an
interrupt by killing the runner process (SIGTERM, later SIGKILL; a SIGTERM to
avocado SIGKILLs the runner's process tree). The avocado-vt test runs in a
child of the runner, and everything it starts goes through aexpect helpers,
which detach into sessions of their own: QEMU, the serial console's ``nc``
and the IP sniffer's tcpdump are no descendants of the test, and nothing
stops them when the test dies. A QEMU whose main loop spins (HPET fuzzing)
also ignores SIGTERM.

So, installed when avocado-vt imports the test module (before its preprocess
starts tcpdump and QEMU):

* every process the test starts from then on inherits ``AVOCADO_IOFUZZ_OWNER``
  with a token unique to this test process;
* the test process dies with the runner (``PR_SET_PDEATHSIG``);
* a detached reaper process waits for the test process to end, however it
  ends, then stops every process of ours that carries the token: SIGTERM,
  then SIGKILL by PID. It also enforces the test's hard deadline.

The test's own timeout (:func:`arm_test_timeout`) interrupts the test with a
clear reason first, so avocado-vt's postprocess still runs and the results
are written; the reaper's deadline, a little later, only backs it up.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

LOG = logging.getLogger("avocado.test.iofuzz")

OWNER_VAR = "AVOCADO_IOFUZZ_OWNER"
TERM_GRACE = 3.0  # seconds between SIGTERM and SIGKILL
KILL_WAIT = 5.0  # seconds a SIGKILLed process may take to disappear
HARD_GRACE = 120.0  # seconds the test gets after its own timeout fired, to clean up and report
POLL = 0.2
_PR_SET_PDEATHSIG = 1
DEADLINE_FILE = "deadline"
LOG_TARGET_FILE = "log-target"
GUARD_LOG_NAME = "process-guard.log"

_state_dir: Path | None = None


# -- processes by PID ------------------------------------------------------------
def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a dead QEMU its shell has not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # the state letter follows the command name, which is in parentheses and may hold spaces
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait up to ``timeout`` s for ``pids`` to end; those still alive."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if process_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if process_alive(p)]
    return alive


def stop_processes(pids: list[int], grace: float = TERM_GRACE, log: Callable[[str], None] = LOG.warning) -> list[int]:
    """SIGTERM ``pids``, SIGKILL what is left after ``grace`` s; the PIDs that still would not go."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    stubborn = wait_gone(pids, grace)
    for pid in stubborn:
        # a QEMU whose main loop never returns (a device model spinning) never handles SIGTERM
        log(f"PID {pid} ({_comm(pid)}) ignored SIGTERM for {grace:.0f} s: SIGKILL")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return wait_gone(stubborn, KILL_WAIT)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "gone"


def owned_pids(token: str) -> list[int]:
    """Our user's processes whose environment carries ``token`` (other users' cannot be read)."""
    entry_wanted = f"{OWNER_VAR}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if entry_wanted in environ.split(b"\0") and process_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


# -- in the test process ---------------------------------------------------------
def install_guard() -> str:
    """Mark what this test process starts, die with the runner, start the reaper; the token.

    Idempotent within a process (avocado-vt may import the test module twice).
    """
    global _state_dir
    token = os.environ.get(OWNER_VAR, "")
    if token.startswith(f"{os.getpid()}-"):
        return token
    token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    os.environ[OWNER_VAR] = token
    _die_with_parent()
    _state_dir = Path(tempfile.mkdtemp(prefix="iofuzz-guard-"))
    _start_reaper(token, _state_dir)
    return token


def _die_with_parent() -> None:
    """Let the kernel SIGKILL this process when the avocado runner that forked it dies."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return  # not Linux: the reaper still cleans up once this process is gone
    if os.getppid() != parent:  # the runner died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


def _start_reaper(token: str, state_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != OWNER_VAR}  # the reaper must not match itself
    command = [sys.executable, "-m", "avocado_iofuzz.vm.process_guard"]
    command += ["--watch", str(os.getpid()), "--token", token, "--state", str(state_dir)]
    # it double-forks: the reaper must be no descendant of the runner, whose tree avocado SIGKILLs
    subprocess.run(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        timeout=30,
        check=True,
    )


def tell_reaper_where_to_log(outdir: str | Path) -> None:
    """The reaper writes what it had to stop into ``<outdir>/process-guard.log``."""
    if _state_dir is not None:
        (_state_dir / LOG_TARGET_FILE).write_text(str(Path(outdir) / GUARD_LOG_NAME))


class TimeUp(BaseException):
    """The test's time is up.

    A BaseException on purpose: the campaign's recovery treats any Exception
    from a reset or login as "did not work" and goes on; this must reach the
    test's entry point, which turns it into the verdict.
    """


@contextlib.contextmanager
def limit_test_time(seconds: float) -> Iterator[None]:
    """Raise :class:`TimeUp` in the body after ``seconds``; 0 = no limit.

    The reaper SIGKILLs the test ``HARD_GRACE`` s later if cleaning up takes that long.
    """
    if seconds <= 0:
        yield
        return
    reason = f"test timeout of {seconds:.0f} s reached (param iofuzz_test_timeout)"

    def on_alarm(signum: int, frame: Any) -> None:
        LOG.error("%s: stopping the test", reason)
        raise TimeUp(reason)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    if _state_dir is not None:
        (_state_dir / DEADLINE_FILE).write_text(f"{time.time() + seconds + HARD_GRACE:.3f}\n")
    LOG.info("test timeout: %.0f s (param iofuzz_test_timeout)", seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- the reaper --------------------------------------------------------------------
class _Reaper:
    def __init__(self, watched: int, token: str, state_dir: Path) -> None:
        self.watched = watched
        self.token = token
        self.state_dir = state_dir
        self.start_time = _start_time(watched)

    def watched_alive(self) -> bool:
        return process_alive(self.watched) and _start_time(self.watched) == self.start_time

    def deadline(self) -> float | None:
        try:
            return float((self.state_dir / DEADLINE_FILE).read_text())
        except (OSError, ValueError):
            return None

    def log(self, message: str) -> None:
        try:
            target = Path((self.state_dir / LOG_TARGET_FILE).read_text().strip())
            with target.open("a", encoding="utf-8") as out:
                out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        except OSError:
            pass  # no test output dir known (or gone): nobody to tell

    def run(self) -> None:
        while self.watched_alive():
            deadline = self.deadline()
            if deadline is not None and time.time() > deadline:
                self.log(f"test process {self.watched} still running {HARD_GRACE:.0f} s after its timeout: SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.watched, signal.SIGKILL)
            time.sleep(POLL)
        self.sweep()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def sweep(self) -> None:
        # twice: an aexpect helper may start its child's shell while the first round runs
        for _ in range(2):
            pids = owned_pids(self.token)
            if not pids:
                return
            self.log("test process ended; stopping what it left: " + ", ".join(f"{p} ({_comm(p)})" for p in pids))
            left = stop_processes(pids, log=self.log)
            if left:
                self.log(f"could not stop PIDs {left}")


def _start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Stops what an avocado-iofuzz test left running once it ends")
    parser.add_argument("--watch", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--state", type=Path, required=True)
    args = parser.parse_args(argv)
    if os.fork() > 0:
        return  # the caller waits only for this first process
    reaper = _Reaper(args.watch, args.token, args.state)
    reaper.run()
    os._exit(0)


if __name__ == "__main__":
    main()
