"""The VT test's coverage hook: probe QEMU's trace backend, give QEMU its trace file, reach QMP through avocado-vt.

Called before the VM starts (the trace file is a command-line option); the
QMP calls look the VM up in ``env`` each time, so a VM avocado-vt restarted
during hang recovery is the one they reach.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Any

from avocado_iofuzz.coverage.run import TRACE_LOG, RunCoverage
from avocado_iofuzz.vm.qom import parse_device_list
from avocado_iofuzz.vt.params import yes_no

COVERAGE_PARAM = "iofuzz_coverage"


def prepare_coverage(params: Any, env: Any, outdir: Path) -> RunCoverage:
    """The run's coverage observer; when the backend is usable, ``-trace file=`` is added to ``extra_params``."""
    qemu = shutil.which(params.get("qemu_binary", "qemu-system-x86_64")) or params.get("qemu_binary")
    vm_name = params["main_vm"]
    coverage = RunCoverage.for_qemu(
        str(qemu),
        parse_device_list(str(params.get("iofuzz_devices", "") or "")),
        Path(outdir) / TRACE_LOG,
        lambda command, arguments: env.get_vm(vm_name).monitor.cmd(command, arguments),
        enabled=yes_no(params, COVERAGE_PARAM, True),
    )
    args = coverage.qemu_args()
    if args:
        params["extra_params"] = f"{params.get('extra_params', '') or ''} {shlex.join(args)}".strip()
    return coverage
