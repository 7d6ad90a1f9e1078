"""What every avocado-iofuzz VT test runs inside: a time limit and a QEMU that cannot outlive it.

``tests/*.py`` call :func:`install_guard` when avocado-vt imports them (before
its preprocess starts tcpdump and QEMU) and run their body in
:func:`guarded_run`. See :mod:`avocado_iofuzz.vm.process_guard` for why.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from avocado_iofuzz.vm.process_guard import TimeUp, install_guard, limit_test_time, tell_reaper_where_to_log
from avocado_iofuzz.vm.vt import stop_if_unresponsive

LOG = logging.getLogger("avocado.test.iofuzz")

TIMEOUT_PARAM = "iofuzz_test_timeout"

__all__ = ["guarded_run", "install_guard", "test_timeout_param"]


def test_timeout_param(params: Any) -> float:
    """Seconds the test may take (0: no limit); ValueError with the param's name if it is no number."""
    raw = str(params.get(TIMEOUT_PARAM, "") or "0").strip()
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{TIMEOUT_PARAM} must be a number of seconds (0: no limit), not {raw!r}") from None
    if seconds < 0:
        raise ValueError(f"{TIMEOUT_PARAM} must be a number of seconds (0: no limit), not {raw!r}")
    return seconds


@contextlib.contextmanager
def guarded_run(test: Any, params: Any, env: Any) -> Iterator[None]:
    """Run the body within ``iofuzz_test_timeout``; leave no QEMU behind that would wedge avocado-vt's postprocess."""
    try:
        seconds = test_timeout_param(params)
    except ValueError as err:
        test.error(str(err))
    tell_reaper_where_to_log(test.logdir)
    try:
        with limit_test_time(seconds):
            yield
    except TimeUp as up:
        from avocado.core import exceptions

        raise exceptions.TestInterrupt(str(up)) from None
    finally:
        for vm in env.get_all_vms():
            stop_if_unresponsive(vm)
