"""Work around avocado-vt 113 traps that cost every VM start real time.

avocado-vt probes QEMU's monitor commands with ``echo -e '...' | qemu ...``
through ``/bin/sh``. On Debian ``/bin/sh`` is dash, whose ``echo`` prints
``-e`` literally: QEMU reads ``-e quit`` instead of ``quit``, never exits, and
each probe waits out its 10 s timeout (+1 s kill) -- about 11-30 s lost per VM
creation. Running those few commands under bash, as their authors assumed,
makes the probes answer in milliseconds. Nothing else is changed.
"""

from __future__ import annotations

import shlex
from types import ModuleType
from typing import Any

_BASHISM = "echo -e"


class _BashForEchoE:
    """Stands in for ``avocado.utils.process`` inside the probing modules."""

    def __init__(self, real: ModuleType) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def run(self, cmd: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("shell") and isinstance(cmd, str) and _BASHISM in cmd:
            cmd = "/bin/bash -c " + shlex.quote(cmd)
        return self._real.run(cmd, *args, **kwargs)


def run_qemu_probes_under_bash() -> None:
    """Idempotent; a no-op where avocado-vt's layout differs from 113's."""
    from virttest import utils_qemu
    from virttest.qemu_devices import qcontainer

    for module in (qcontainer, utils_qemu):
        current = getattr(module, "process", None)
        if isinstance(current, ModuleType):
            module.process = _BashForEchoE(current)
