"""What a run leaves for people: ``summary.json`` and a short table in the log."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from avocado_iofuzz.campaign import CampaignResult
from avocado_iofuzz.program import RangePlan


def build_summary(
    *,
    seed: int,
    fuzz_count: int,
    accel: str,
    accel_reason: str,
    plans: Sequence[RangePlan],
    result: CampaignResult,
    trace_path: Path,
    qemu_cmdline: str,
) -> dict[str, Any]:
    ranges = [
        {
            "index": plan.index,
            "name": plan.name,
            "span": f"{plan.start:#06x}-{plan.end:#06x}",
            "ops_planned": plan.op_count,
            "ops_done": result.ops_done.get(plan.index, 0),
            "ops_skipped": result.ops_skipped.get(plan.index, 0),
        }
        for plan in plans
    ]
    return {
        "seed": seed,
        "fuzz_count": fuzz_count,
        "accelerator": accel,
        "accelerator_reason": accel_reason,
        "ranges": ranges,
        "trace": str(trace_path),
        "qemu_cmdline": qemu_cmdline,
        **result.as_dict(),
    }


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Write atomically, so a reader never sees half a summary."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def summary_table(summary: dict[str, Any]) -> str:
    """A few lines a person reads at a glance in the test log."""
    findings = summary["findings"]
    by_range: dict[int, list[str]] = {}
    for finding in findings:
        by_range.setdefault(finding["range_index"], []).append(finding["kind"])
    name_width = max([len(r["name"]) for r in summary["ranges"]] + [5])
    lines = [
        f"seed {summary['seed']}  accel {summary['accelerator']}  "
        f"{sum(r['ops_done'] for r in summary['ranges'])} ops in {summary['elapsed_s']} s "
        f"({summary['ops_per_s']} ops/s)  findings: {len(findings)}",
        f"{'span':<13} {'range':<{name_width}} {'done':>10} {'planned':>10}  findings",
    ]
    for r in summary["ranges"]:
        kinds = ", ".join(by_range.get(r["index"], [])) or "-"
        lines.append(f"{r['span']:<13} {r['name']:<{name_width}} {r['ops_done']:>10} {r['ops_planned']:>10}  {kinds}")
    return "\n".join(lines)
