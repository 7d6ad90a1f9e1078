"""The classic in-guest iofuzz, as a baseline: one shell command per port op through the console session.

The classic test sent each op to the guest's shell as a ``dd`` on ``/dev/port``
and waited for the command (and its status) to come back. Reproduced here with
our own faster session (10 ms of silence per read instead of aexpect's 100 ms),
so the baseline is if anything flattered.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import zip_longest
from typing import Any

from avocado_iofuzz.model.program import Op, RangePlan

COMMAND_TIMEOUT = 10.0


def classic_command(op: Op) -> str:
    """The shell command that performs ``op`` through ``/dev/port`` in the guest.

    ``skip=`` (not ``seek=``) positions a read: ``seek`` moves the output file.
    ``printf '\\ooo'`` writes the value's byte (octal: portable to busybox ash).
    """
    if op.width != 1:
        raise ValueError(f"/dev/port makes byte accesses only: a {op.width}-byte op has no classic equivalent")
    if op.kind == "r":
        return f"dd if=/dev/port of=/dev/null bs=1 count=1 skip={op.port}"
    if op.kind == "w":
        return f"printf '\\{op.value:03o}' | dd of=/dev/port bs=1 count=1 seek={op.port}"
    raise ValueError(f"unknown op kind {op.kind!r}")


def interleaved_ops(plans: Sequence[RangePlan]) -> Iterator[Op]:
    """The plans' ops taken in turn from each range, so a short run covers every range."""
    for ops in zip_longest(*(plan.ops() for plan in plans)):
        yield from (op for op in ops if op is not None)


def run_classic(session: Any, ops: Iterable[Op], max_ops: int, max_seconds: float) -> tuple[int, float]:
    """Run ops one command each until ``max_ops`` or ``max_seconds``; (ops done, seconds).

    ``session.cmd`` checks each command's exit status, as the classic test did.
    """
    done = 0
    started = time.perf_counter()
    for op in ops:
        if done >= max_ops or time.perf_counter() - started >= max_seconds:
            break
        session.cmd(classic_command(op), timeout=COMMAND_TIMEOUT)
        done += 1
    return done, time.perf_counter() - started
