"""Every command a reader can copy from README.rst and docs/**/*.rst works when pasted in the checkout root.

Quick commands run for real (``avocado list``/``config``, ``sockstates`` sweeps
short of CRIU); ``avocado run`` commands run with ``--dry-run``, which parses
the whole command line and resolves every reference without booting
anything; other CLIs are asked for ``--help``, and every option the command
uses must be one they offer; ``pytest`` commands must collect. What needs a
guest, root or files a run leaves behind is named in RUN_ELSEWHERE with the
test that runs it. A new command in the docs is checked without editing
this file; a shell block line starting with an unknown program fails.
"""

from __future__ import annotations

import glob
import re
import subprocess
import sys
from pathlib import Path

import pytest
from avocado_jobs import REPO, avocado_env
from doc_commands import DocCommand, all_doc_commands

BINDIR = Path(sys.executable).parent
# command prefix -> the selftest (or CI step) that runs it for real
RUN_ELSEWHERE = {
    ("./bootstrap.sh",): ".ci/run (CI starts with it) and test_fresh_install.py (the pip install it does)",
    ("python3", "/tmp/sweep/repro/"): "test_sockstates_criu_guest.py (a reproducer a sweep wrote)",
    # the reproducer published beside each CRIU finding page, run with the CRIU the page names
    ("python3", "unix-"): "test_sockstates_finding_classes.py (every page's reproducer, as root)",
    ("python3", "inet-"): "test_sockstates_finding_classes.py (every page's reproducer, as root)",
}
COMMANDS, UNKNOWN = all_doc_commands(REPO)


def _executable(argv: tuple[str, ...]) -> list[str]:
    """The docs' argv with its program as the venv provides it (what .venv/bin/ or an activated venv gives)."""
    program = argv[0]
    if program in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    if program.startswith("./"):
        return [str(REPO / program), *argv[1:]]
    return [str(BINDIR / program), *argv[1:]]


def _run(argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, env=avocado_env(), capture_output=True, text=True, timeout=timeout)


def _assert_ok(proc: subprocess.CompletedProcess[str], command: DocCommand) -> None:
    output = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, f"{command.source}: {command.text}\nexit {proc.returncode}\n{output}"


def _program_words(argv: tuple[str, ...]) -> int:
    """How many leading words name the program (`python -m sockstates`, `python benchmarks/x.py`, `sockstates`)."""
    if argv[0] in ("python", "python3"):
        return 3 if argv[1] == "-m" else 2
    return 1


def _check_options_against_help(argv: tuple[str, ...], command: DocCommand) -> None:
    words = _program_words(argv)
    proc = _run([*_executable(argv[:words]), "--help"], timeout=120)
    _assert_ok(proc, command)
    offered = set(re.findall(r"(?<![\w-])(--?[\w][\w-]*)", proc.stdout))
    used = [w.split("=", 1)[0] for w in argv[words:] if w.startswith("-")]
    missing = [option for option in used if option not in offered]
    assert not missing, f"{command.source}: {command.text}\noptions not in --help: {missing}"


def _is_sockstates(argv: tuple[str, ...]) -> bool:
    return argv[0] == "sockstates" or argv[1:3] == ("-m", "sockstates")


def _check_avocado(command: DocCommand, results: Path) -> None:
    argv = _executable(command.argv)
    subcommand = command.argv[1] if len(command.argv) > 1 else ""
    if subcommand == "run":
        # the whole command line parsed and every reference resolved; --dry-run cancels each test unstarted
        argv[2:2] = ["--dry-run", "--disable-sysinfo", "--job-results-dir", str(results)]
        proc = _run(argv)
        _assert_ok(proc, command)
        assert "CANCEL: Test cancelled due to --dry-run" in proc.stdout, proc.stdout
    elif subcommand in ("list", "config"):
        _assert_ok(_run(argv), command)
    else:
        _check_options_against_help(command.argv, command)


def _check_pytest(command: DocCommand) -> None:
    paths = [p for word in command.argv[1:] for p in (sorted(glob.glob(word, root_dir=REPO)) or [word])]
    proc = _run([str(BINDIR / "pytest"), "--collect-only", "-q", "-p", "no:cacheprovider", *paths])
    _assert_ok(proc, command)


def _check(command: DocCommand, results: Path) -> None:
    argv = command.argv
    if argv[0] == "avocado":
        _check_avocado(command, results)
    elif argv[0] == "pytest":
        _check_pytest(command)
    elif _is_sockstates(argv) and "--criu" not in argv:
        _assert_ok(_run(_executable(argv), timeout=300), command)  # a sweep without CRIU: seconds
    else:
        _check_options_against_help(argv, command)


def _elsewhere(command: DocCommand) -> str | None:
    for prefix, where in RUN_ELSEWHERE.items():
        head = command.argv[: len(prefix)]
        if len(head) == len(prefix) and all(word.startswith(p) for word, p in zip(head, prefix, strict=True)):
            return where
    return None


def test_the_docs_hold_commands_and_no_unknown_program():
    assert len(COMMANDS) > 20  # README.rst has them; an extraction that finds none proves nothing
    assert not UNKNOWN, "shell block lines starting with no known program: " + repr(UNKNOWN)


@pytest.mark.parametrize("command", COMMANDS, ids=[c.source for c in COMMANDS])
def test_doc_command_works(command, tmp_path):
    where = _elsewhere(command)
    if where:
        pytest.skip(f"needs a guest, root or a sweep's files; run by {where}")
    _check(command, tmp_path)
    for inner in command.substitutions:
        # `$(helper)` passes the helper's output: the helper must exist and take no unknown option
        _check_options_against_help(_inner_argv(inner), command)


def _inner_argv(inner: str) -> tuple[str, ...]:
    words = inner.split()
    return (words[0].removeprefix(".venv/bin/"), *words[1:])
