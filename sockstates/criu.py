"""`--criu`: every state checkpointed and restored by CRIU, and checked against the kernel's view.

For each state, one at a time:

1. a twin child performs the state's sequence and is probed exactly as
   ``--run`` does (`run.run_sequence`): that is the kernel's view of the state
   without C/R. (The probe reads queues and accepts connections, so it cannot
   run in the process that is dumped afterwards; the sequence is
   deterministic, so the twin is in the same state.)
2. a target process (`criu_target`) performs the same sequence in a session
   of its own, with no terminal, and waits;
3. ``criu dump`` (which kills it), ``criu restore -d``;
4. the restored target probes itself the same way, checks message bytes,
   order and senders, accepts what is pending and pings each connection.

The state passes when the restored description equals the twin's and every
check holds. A CRIU that refuses to dump or restore fails the state (a
finding); a CRIU that dies of a signal or times out, or a target that cannot
be started, makes it an error. Either way the sweep goes on, and each result
is appended to ``results.jsonl`` (flushed and synced) before the next state
starts, with the state, its syscalls, the CRIU commands, the relevant lines
of CRIU's logs and, for failures and errors, a standalone reproducer script.

The driver is a child subreaper, so a restored target (whose parent, CRIU,
exits after ``restore -d``) is re-parented to it and reaped by it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from sockstates import criu_log, criu_repro, findings, run
from sockstates.criu_types import CriuConfig, StateResult  # a leaf module, so criu_repro needs no import of us
from sockstates.explore import Found
from sockstates.inet import run as inet_run
from sockstates.syscall import parse_line

PR_SET_CHILD_SUBREAPER = 36
RESULTS_NAME = "results.jsonl"
SUMMARY_NAME = "summary.json"
REPRO_DIRNAME = "repro"
LOG_CONTEXT_LINES = 6  # CRIU log lines kept before the first error
MAX_LOG_LINES = 40
VERDICTS = ("intact", "failed", "error", "skipped")


class CriuSetupError(RuntimeError):
    """CRIU cannot be used at all here (missing, too old, not root)."""


def criu_version(criu: str = "criu") -> tuple[int, ...]:
    """CRIU's version as numbers, e.g. (3, 17, 1); CriuSetupError when it cannot be run."""
    try:
        proc = subprocess.run([criu, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CriuSetupError(f"cannot run {criu} --version: {e}") from e
    match = re.search(r"Version:\s*(\d+(?:\.\d+)*)", proc.stdout)
    if not match:
        raise CriuSetupError(f"{criu} --version printed no version: {proc.stdout.strip()[:200]!r}")
    return tuple(int(part) for part in match.group(1).split("."))


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise CriuSetupError(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")


def _read_log(path: Path) -> list[str] | None:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return None


def log_excerpt(path: Path, benign: frozenset[str] = frozenset()) -> list[str]:
    """The lines of a CRIU log worth reading: errors and warnings, and what led to the first one that matters.

    Errors in ``benign`` (logged by a successful run here too) get no context lines.
    """
    lines = _read_log(path)
    if lines is None:
        return [f"(no log at {path})"]
    picked: list[int] = []
    first_error = next((i for i, line in enumerate(lines) if "Error" in line
                        and criu_log.benign_messages([line]).isdisjoint(benign)), None)
    if first_error is not None:
        picked.extend(range(max(0, first_error - LOG_CONTEXT_LINES), first_error))
    picked.extend(i for i, line in enumerate(lines) if "Error" in line or "Warn" in line)
    if not picked:
        picked = list(range(max(0, len(lines) - 3), len(lines)))
    out = [lines[i] for i in sorted(set(picked))]
    if len(out) > MAX_LOG_LINES:
        out = [*out[:MAX_LOG_LINES], f"... {len(out) - MAX_LOG_LINES} more lines in {path.name}"]
    return [f"{path.name}: {line}" for line in out]


def _run_criu(argv: list[str], timeout: float) -> tuple[str, str]:
    """Run one CRIU command: ("ok" | "failed" | "killed", what to say)."""
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return "killed", f"{argv[1]} did not finish within {timeout:.0f} s"
    except OSError as e:
        return "killed", f"cannot run {argv[0]}: {e}"
    if proc.returncode == 0:
        return "ok", ""
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    if proc.returncode < 0 or proc.returncode > 128:
        number = -proc.returncode if proc.returncode < 0 else proc.returncode - 128
        return "killed", f"criu {argv[1]} killed by signal {number}: {' / '.join(tail)}"
    return "failed", f"criu {argv[1]} exited with status {proc.returncode}: {' / '.join(tail)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0): look at its state
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    return True


def _kill_and_reap(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            if not _pid_alive(pid):
                return
            done = 0
        if done:
            return
        time.sleep(0.01)


def _wait_file(path: Path, pid: int, timeout: float) -> dict | None:
    """The JSON the target writes at ``path``; None if it does not come or the target dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        if not _pid_alive(pid):
            return json.loads(path.read_text()) if path.exists() else None
        time.sleep(0.01)
    return None


def _target_env() -> dict[str, str]:
    """The target imports only sockstates and the standard library; -S skips site for a faster start."""
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = package_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def check_state(found: Found, index: int, config: CriuConfig, outdir: Path,
                benign: frozenset[str] = frozenset()) -> StateResult:
    """One state through C/R; ``benign``: CRIU errors that a successful run here logs too (`calibrate`)."""
    started = time.monotonic()
    result = StateResult(index, found.description, found.depth, [str(c) for c in found.syscalls])
    try:
        _check(found, result, config, outdir, benign)
    except Exception as e:  # a bug of ours or of the machine: this state only
        result.fail(result.stage or "driver", f"{type(e).__name__}: {e}", verdict="error")
    result.seconds = round(time.monotonic() - started, 3)
    if result.verdict in ("failed", "error"):
        result.reproducer = str(criu_repro.write_reproducer(outdir / REPRO_DIRNAME, result, config))
    return result


def _check(found: Found, result: StateResult, config: CriuConfig, outdir: Path, benign: frozenset[str]) -> None:
    twin = run.run_sequence(found.syscalls)
    if twin.error or twin.call_mismatches:
        why = twin.error or "; ".join(twin.call_mismatches)
        result.fail("reach", f"the sequence does not reach the state without C/R (see --run): {why}",
                    verdict="skipped")
        return
    result.before = sorted(twin.descriptions)
    result.strangers_before = twin.strangers
    workdir = Path(tempfile.mkdtemp(prefix="sockstates-criu-"))
    pid = None
    try:
        (workdir / "names").mkdir()
        (workdir / "images").mkdir()
        (workdir / "sequence.json").write_text(json.dumps({"syscalls": result.syscalls}))
        with open(workdir / "target.log", "wb") as log:
            target = subprocess.Popen(
                [sys.executable, "-S", "-m", _target_module(found), str(workdir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=_target_env())
        pid = target.pid
        result.stage = "reach"
        ready = _wait_file(workdir / "ready.json", pid, config.target_timeout)
        if ready is None or "error" in ready:
            why = (ready or {}).get("error") or _tail(workdir / "target.log") or "no report"
            result.fail("reach", f"the target did not reach the state: {why}", verdict="error")
            return
        if ready["mismatches"]:
            result.fail("reach", "the target's calls went otherwise than the twin's: " + "; ".join(ready["mismatches"]),
                        verdict="error")
            return
        _dump_restore_verify(result, config, workdir, pid, target, benign)
    finally:
        if pid is not None and _pid_alive(pid):
            _kill_and_reap(pid)
        with contextlib.suppress(ChildProcessError):
            if pid is not None:
                os.waitpid(pid, os.WNOHANG)
        if config.keep_images and result.verdict in ("failed", "error"):
            kept = outdir / "images" / f"{result.index:05d}"
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(workdir / "images", kept, dirs_exist_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)


def _criu_failed(result: StateResult, stage: str, status: str, why: str, log: Path, benign: frozenset[str]) -> None:
    """A dump or restore that did not succeed: its verdict and its cause as the log tells it."""
    cause = criu_log.fatal(_read_log(log) or [], benign)
    if status == "killed" or cause is None:
        # criu itself died or timed out, or its log names nothing: what the command said is all we know
        result.fail(stage, why, verdict="error" if status == "killed" else "failed")
        return
    # a BUG or a task's death is a crash; either way CRIU does it on every run of this state: a finding
    result.criu_failure, result.crashed = cause.group(), cause.crashed
    result.fail(stage, f"criu {stage} {'crashed' if cause.crashed else 'refused'}: {cause.reason}")


def _dump_restore_verify(result: StateResult, config: CriuConfig, workdir: Path, pid: int,
                         target: subprocess.Popen, benign: frozenset[str]) -> None:
    images = workdir / "images"
    tcp = inet_run.is_inet([parse_line(line) for line in result.syscalls])
    dump = config.dump_argv(pid, images, tcp)
    result.commands.append(" ".join(dump))
    result.stage = "dump"
    status, why = _run_criu(dump, config.command_timeout)
    result.log_lines += log_excerpt(images / "dump.log", benign)
    if status != "ok":
        _criu_failed(result, "dump", status, why, images / "dump.log", benign)
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        target.wait(10)  # criu dump kills the target; reap it so its pid is free for the restore
    if target.returncode is None:
        result.fail("dump", f"criu dump succeeded but left the target (pid {pid}) running", verdict="failed")
        return
    restore = config.restore_argv(images, workdir / "restored.pid", tcp)
    result.commands.append(" ".join(restore))
    result.stage = "restore"
    status, why = _run_criu(restore, config.command_timeout)
    result.log_lines += log_excerpt(images / "restore.log", benign)
    if status != "ok":
        _criu_failed(result, "restore", status, why, images / "restore.log", benign)
        return
    result.stage = "verify"
    (workdir / "go").touch()
    after = _wait_file(workdir / "result.json", pid, config.target_timeout)
    if after is None:
        result.fail("verify", f"the restored target did not report within {config.target_timeout:.0f} s "
                    f"(alive: {_pid_alive(pid)}); its log: {_tail(workdir / 'target.log')}")
        return
    if "error" in after:
        # an OSError from a restored socket is CRIU's finding; any other exception is a bug of ours
        verdict = "failed" if after.get("os_error") else "error"
        result.fail("verify", f"the restored target failed: {after['error']}", verdict=verdict)
        return
    result.after = after["descriptions"]
    if set(result.after) != set(result.before):
        result.fail("verify", f"restored as {' or '.join(result.after)}, was {' or '.join(result.before)}")
    for problem in after["messages"] + after["reachability"]:
        result.fail("verify", problem)
    result.strangers_after = after.get("strangers", [])
    for was, now in zip(result.strangers_before, result.strangers_after, strict=False):
        if was != now:  # e.g. "@1 dgram sendto: EPERM" before, "... ok" after: reachable by a stranger
            result.fail("verify", f"a stranger's {now.rsplit(':', 1)[0]} was {was.rsplit(': ', 1)[1]} without C/R, "
                        f"{now.rsplit(': ', 1)[1]} after")
    if result.verdict == "intact":
        result.stage = None


def _target_module(found: Found) -> str:
    """The unix target, or the TCP/UDP one (its own namespace with lo up, settling, inet_diag)."""
    return "sockstates.inet.criu_target" if inet_run.is_inet(found.syscalls) else "sockstates.criu_target"


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " / ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Summary:
    states: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0))
    failures_by_stage: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    criu_version: str = ""
    groups: list[dict] = field(default_factory=list)  # failures and errors by reason, most frequent first

    @property
    def verified_per_minute(self) -> float:
        checked = self.counts["intact"] + self.counts["failed"]
        return 60.0 * checked / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        c = self.counts
        stages = ", ".join(f"{stage} {n}" for stage, n in sorted(self.failures_by_stage.items()))
        return (f"criu: {self.states} states, {c['intact']} intact, {c['failed']} failed"
                f"{f' ({stages})' if stages else ''}, {c['error']} errors, {c['skipped']} skipped "
                f"in {self.seconds:.1f} s ({self.verified_per_minute:.1f} states verified/min)")


def sweep(found: Iterable[Found], config: CriuConfig, outdir: Path, out: TextIO,
          indexed: Iterable[int] | None = None) -> Summary:
    """check_state() for each state; results appended to ``outdir/results.jsonl`` as they come."""
    if os.geteuid() != 0:
        raise CriuSetupError("--criu needs root: CRIU dumps and restores other processes")
    version = criu_version(config.criu)
    become_subreaper()
    outdir.mkdir(parents=True, exist_ok=True)
    summary = Summary(criu_version=".".join(map(str, version)))
    benign = calibrate(config, outdir, out)
    started = time.monotonic()  # states/min counts the states only
    indices: Iterator[int] = iter(indexed) if indexed is not None else iter(range(1 << 62))
    problems: list[dict] = []  # failed and erroneous states, for the groups of reasons
    with open(outdir / RESULTS_NAME, "a", encoding="utf-8") as results:
        for state in found:
            result = check_state(state, next(indices), config, outdir, benign)
            record = asdict(result)
            if result.verdict in ("failed", "error"):
                problems.append(record)
            results.write(json.dumps(record) + "\n")
            results.flush()
            os.fsync(results.fileno())
            _print_result(result, out)
            summary.states += 1
            summary.counts[result.verdict] += 1
            if result.verdict == "failed":
                stage = result.stage or "?"
                summary.failures_by_stage[stage] = summary.failures_by_stage.get(stage, 0) + 1
            summary.seconds = time.monotonic() - started
    summary.seconds = time.monotonic() - started
    summary.groups = [{"group": g, "states": n, "examples": ex} for g, n, ex in findings.grouped(problems)]
    (outdir / SUMMARY_NAME).write_text(json.dumps(asdict(summary) | {"line": summary.line()}, indent=2) + "\n")
    for item in summary.groups:
        print(f"# {item['states']:4d} x {item['group']}  (e.g. {', '.join(item['examples'])})", file=out)
    print(summary.line(), file=out, flush=True)
    return summary


def calibrate(config: CriuConfig, outdir: Path, out: TextIO) -> frozenset[str]:
    """The CRIU errors this machine logs even when C/R succeeds: C/R of a process with no socket.

    Without it a failure's reason would be the first error in the log, which
    on many hosts is the same harmless complaint in every run. When the
    calibration itself fails, nothing counts as benign.
    """
    empty = Found("empty", 0, (), None)  # the model state is not needed for C/R
    result = check_state(empty, -1, config, outdir / "calibration")
    if result.verdict != "intact":
        print(f"# calibration (no socket) did not come back intact: {'; '.join(result.reasons)}", file=out)
        return frozenset()
    benign = criu_log.benign_messages(line.split(": ", 1)[-1] for line in result.log_lines)
    if benign:
        print(f"# {len(benign)} CRIU error lines logged even without sockets here: not taken as reasons", file=out)
    return benign


def _print_result(result: StateResult, out: TextIO) -> None:
    print(result.description, file=out)
    for call in result.syscalls:
        print(f"    {call}", file=out)
    if result.verdict == "intact":
        print(f"    => restored intact ({result.seconds:.1f} s)", file=out)
    else:
        first = result.reasons[0] if result.reasons else ""
        print(f"    => {result.verdict.upper()} at {result.stage}: {first}", file=out)
        for reason in result.reasons[1:]:
            print(f"       {reason}", file=out)
        if result.reproducer:
            print(f"       reproducer: {result.reproducer}", file=out)
    out.flush()
