"""What the C executor's ``--dry-run`` must print for a list of plans, by the Python model, and what it does print.

Shared by the tests that hold the executor to the model (uniform ops, DMA fills, device layouts, own seeds).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from avocado_iofuzz.executor.protocol import executor_command, format_dry_run_fill, format_dry_run_op
from avocado_iofuzz.model.dma import SCRATCH_EPOCH_OPS, VALUES_DMA, fill_points, scratch_fill
from avocado_iofuzz.model.program import RangePlan


def python_lines(plans: list[RangePlan], resume: tuple[int, int] | None = None) -> list[str]:
    """What --dry-run must print between its @ lines: fills before the ops they precede, then the ops."""
    lines: list[str] = []
    started = resume is None
    for plan in plans:
        first = 0
        if not started:
            if plan.index != resume[0]:
                continue
            started, first = True, resume[1]
        fills = set(fill_points(first, plan.op_count)) if plan.values == VALUES_DMA else set()
        for i in range(first, plan.op_count):
            if i in fills:
                fill = scratch_fill(plan.range_seed, i // SCRATCH_EPOCH_OPS, plan.layout)
                lines.append(format_dry_run_fill(plan.index, i, fill))
            lines.append(format_dry_run_op(plan.index, i, plan.op(i)))
    return lines


def c_lines(executor: Path, plans: list[RangePlan], **kwargs) -> list[str]:
    command = executor_command(plans, binary=str(executor), dry_run=True, **kwargs)
    result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    return [line for line in result.stdout.splitlines() if not line.startswith("@")]
