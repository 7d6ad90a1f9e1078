"""The reproducer a QEMU developer is handed: one shell file, its QEMU arguments cut to what the crash needs.

``reproducer.sh`` holds everything in itself: the QEMU command line, the
qtest script as a here-document and, for a running-clock replay, the halting
firmware (written to a temp file by the script: 64 KiB of ``hlt``). It runs
``${QEMU:-<the binary triage used>}``, waits for QEMU to end on its own, and
exits with QEMU's status as soon as it did (134 for an abort); if QEMU is
still running after the wait, it stops it and says the crash did not happen.

:func:`verify_shell` runs that file as written, as the developer would, and
judges it by the outside observers only: QEMU's exit status and stderr.
:func:`minimize_args` drops the QEMU options (and sub-options) a reproducer
does not need, keeping the signature.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from avocado_iofuzz.model.program import Op
from avocado_iofuzz.repro.qtest_ops import format_script
from avocado_iofuzz.repro.qtest_run import CLOCK_RUNNING, HALT_FIRMWARE_SIZE, QtestTarget
from avocado_iofuzz.repro.signature import CrashSignature, crash_signature

HEREDOC_END = "IOFUZZ_QTEST_END"
DEFAULT_WAIT = 10.0  # seconds reproducer.sh gives QEMU to die after its input
# a shell's status for a child killed by signal N
SIGNAL_STATUS_BASE = 128
_RESET_VECTOR = (0xFA, 0xF4, 0xEB, 0xFD)  # cli; hlt; jmp .-3 (see qtest_run.write_halt_firmware)


def _firmware_lines() -> list[str]:
    """Shell lines that write the halting firmware to "$fw" with POSIX tools only."""
    vector = "".join(f"\\{byte:03o}" for byte in _RESET_VECTOR)
    head, tail = 0xFFF0, HALT_FIRMWARE_SIZE - 0xFFF0 - len(_RESET_VECTOR)
    return [
        "# the machine runs on a firmware that halts at once (64 KiB of hlt, cli;hlt;jmp at the reset",
        "# vector): virtual time passes and device timers fire, but no guest code touches a device",
        "fw=$(mktemp) || exit 2",
        "trap 'rm -f \"$fw\"' EXIT",
        "{",
        f"    head -c {head} /dev/zero | tr '\\000' '\\364'",
        f"    printf '{vector}'",
        f"    head -c {tail} /dev/zero | tr '\\000' '\\364'",
        '} > "$fw"',
    ]


def shell_script(target: QtestTarget, ops: Sequence[Op], comments: Sequence[str], wait: float = DEFAULT_WAIT) -> str:
    """The text of ``reproducer.sh`` for ``ops`` on ``target``."""
    words = [*target.argv_without_binary(firmware="@FIRMWARE@"), "-qtest", "stdio"]
    command = " ".join(['"$QEMU"', *(shlex.quote(w) if w != "@FIRMWARE@" else '"$fw"' for w in words)])
    ticks = max(1, round(wait * 10))
    lines = [
        "#!/bin/sh",
        *(f"# {line}" for line in comments),
        "# Run it: sh reproducer.sh  (another build: QEMU=/path/to/qemu-system-x86_64 sh reproducer.sh).",
        f"# It ends as soon as QEMU does, with QEMU's exit status; after {wait:g} s it stops QEMU",
        "# and says the crash did not happen.",
        f"QEMU=${{QEMU:-{shlex.quote(target.binary)}}}",
        *(_firmware_lines() if target.clock == CLOCK_RUNNING else []),
        f"{command} >/dev/null <<'{HEREDOC_END}' &",
        format_script(ops) + HEREDOC_END,
        "pid=$!",
        "ticks=0",
        f'while kill -0 "$pid" 2>/dev/null && [ "$ticks" -lt {ticks} ]; do sleep 0.1; ticks=$((ticks + 1)); done',
        'if kill -0 "$pid" 2>/dev/null; then',
        '    kill -9 "$pid"; wait "$pid" 2>/dev/null',
        f'    echo "reproducer: QEMU still running {wait:g} s after the script: the crash did NOT happen" >&2',
        "    exit 0",
        "fi",
        'wait "$pid"; status=$?',
        'echo "reproducer: QEMU ended with status $status" >&2',
        'exit "$status"',
        "",
    ]
    return "\n".join(lines)


def write_shell(path: Path, target: QtestTarget, ops: Sequence[Op], comments: Sequence[str]) -> Path:
    path.write_text(shell_script(target, ops, comments), encoding="utf-8")
    path.chmod(0o755)
    return path


def run_shell(path: Path, qemu: str | None = None, timeout: float = DEFAULT_WAIT + 30) -> tuple[int, str]:
    """Run ``reproducer.sh`` as written (``QEMU`` set if given): its exit status and stderr."""
    env = dict(os.environ)
    if qemu:
        env["QEMU"] = qemu
    done = subprocess.run(
        ["sh", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        timeout=timeout,
        start_new_session=True,
    )
    return done.returncode, done.stderr.decode("utf-8", "replace")


def shell_signature(status: int, stderr: str) -> CrashSignature | None:
    """What QEMU's end looks like from outside the reproducer; None: it did not crash."""
    if "the crash did NOT happen" in stderr:
        return None
    if status > SIGNAL_STATUS_BASE:
        return crash_signature(None, status - SIGNAL_STATUS_BASE, stderr)
    return crash_signature(status, None, stderr)


def verify_shell(path: Path, matches: Callable[[CrashSignature], bool], runs: int, qemu: str | None = None) -> int:
    """How many of ``runs`` runs of the file as written ended the way ``matches`` wants."""
    hits = 0
    for _ in range(runs):
        status, stderr = run_shell(path, qemu)
        signature = shell_signature(status, stderr)
        hits += signature is not None and matches(signature)
    return hits


# options a machine cannot start without, or that only bring the replay's own plumbing
_KEEP = frozenset({"-machine", "-M"})


def option_groups(args: Sequence[str]) -> list[list[str]]:
    """``["-m", "256", "-nodefaults"]`` -> ``[["-m", "256"], ["-nodefaults"]]``."""
    groups: list[list[str]] = []
    for word in args:
        if word.startswith("-") or not groups:
            groups.append([word])
        else:
            groups[-1].append(word)
    return groups


def minimize_args(args: Sequence[str], still_fails: Callable[[Sequence[str]], bool]) -> list[str]:
    """Drop the options, then the sub-options, the crash does not need (each drop kept only if it still fails).

    Options are tried last first: a user (``-serial chardev:x``, ``-device
    ...,netdev=n``) comes after what it uses, and goes before it. Both passes
    repeat until nothing more goes: a ``-object`` goes once the ``-machine``
    sub-option naming it went.
    """
    groups = option_groups(args)
    changed = True
    while changed:
        changed = _drop_options(groups, still_fails)
        changed = _drop_suboptions(groups, still_fails) or changed
    return _flat(groups)


def _flat(groups: Sequence[Sequence[str]]) -> list[str]:
    return [word for group in groups for word in group]


def _drop_options(groups: list[list[str]], still_fails: Callable[[Sequence[str]], bool]) -> bool:
    dropped = False
    for index in reversed(range(len(groups))):
        if groups[index][0] in _KEEP:
            continue
        if still_fails(_flat(groups[:index] + groups[index + 1 :])):
            del groups[index]
            dropped = True
    return dropped


def _drop_suboptions(groups: list[list[str]], still_fails: Callable[[Sequence[str]], bool]) -> bool:
    dropped = False
    for group in groups:
        if len(group) != 2 or "," not in group[1] or ",," in group[1]:  # ",," is QEMU's escaped comma
            continue
        parts = group[1].split(",")
        kept = 1  # the first part names the machine, device or backend
        while kept < len(parts):
            original, group[1] = group[1], ",".join(parts[:kept] + parts[kept + 1 :])
            if still_fails(_flat(groups)):
                parts = group[1].split(",")
                dropped = True
            else:
                group[1] = original
                kept += 1
    return dropped
