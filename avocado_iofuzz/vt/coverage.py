"""The VT test's coverage hook: probe QEMU's trace backend, give QEMU its trace file, reach QMP through avocado-vt.

Called before the VM starts (the trace file is a command-line option); the
QMP calls look the VM up in ``env`` each time, so a VM avocado-vt restarted
during hang recovery is the one they reach.
"""

from __future__ import annotations

import logging
import shlex
import shutil
from pathlib import Path
from typing import Any

from avocado_iofuzz.coverage.run import TRACE_LOG, RunCoverage
from avocado_iofuzz.vm.qom import parse_device_list
from avocado_iofuzz.vt.params import yes_no

COVERAGE_PARAM = "iofuzz_coverage"
LOG = logging.getLogger("avocado.test.iofuzz")


def prepare_coverage(params: Any, env: Any, outdir: Path) -> RunCoverage:
    """The run's coverage observer; when the backend is usable, ``-trace file=`` is added to ``extra_params``."""
    qemu = shutil.which(params.get("qemu_binary", "qemu-system-x86_64")) or params.get("qemu_binary")
    vm_name = params["main_vm"]
    devices = parse_device_list(str(params.get("iofuzz_devices", "") or ""))
    trace_file = Path(outdir) / TRACE_LOG

    def qmp(command: str, arguments: Any) -> Any:
        return env.get_vm(vm_name).monitor.cmd(command, arguments)

    users_trace = _users_trace_option(params)
    if users_trace:
        # QEMU has one trace output: ours would take the events the user asked for away from their log
        reason = f"the QEMU arguments route trace events themselves ({users_trace})"
        LOG.warning("coverage: off for this run: %s", reason)
        return RunCoverage.switched_off(reason, devices, trace_file, qmp)
    coverage = RunCoverage.for_qemu(
        str(qemu), devices, trace_file, qmp, enabled=yes_no(params, COVERAGE_PARAM, True)
    )
    args = coverage.qemu_args()
    if args:
        params["extra_params"] = f"{params.get('extra_params', '') or ''} {shlex.join(args)}".strip()
    return coverage


def _users_trace_option(params: Any) -> str:
    """The first ``-trace`` or ``-D`` among the QEMU arguments the user gave (row or command line), or ""."""
    for key in ("extra_params", "iofuzz_extra_qemu_args"):
        for word in shlex.split(str(params.get(key, "") or "")):
            if word in ("-trace", "--trace", "-D") or word.startswith(("-trace=", "--trace=")):
                return f"{key}: {word}"
    return ""
