"""What a run leaves for people: ``summary.json``, a short table in the log, a picture.

The summary is plain data (format ``SUMMARY_FORMAT``), written atomically at
the end of every run, also a failed one. Shards of one campaign each write
their own; :func:`merge_summaries` makes them one.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from avocado_iofuzz.campaign.runner import CampaignResult
from avocado_iofuzz.coverage.summary import coverage_line, merge_coverage
from avocado_iofuzz.model.dma import VALUES_UNIFORM
from avocado_iofuzz.model.program import PHASE_FUZZ, PHASE_READ, PHASE_ZERO, RangePlan
from avocado_iofuzz.repro.signature import group_by_signature, signature_of_exit
from avocado_iofuzz.results.rerun import Rerun, RerunContext, rerun_range

# 3: every range has its rerun command (rerun may be null, then rerun_note)
# 4: ops_confirmed / ops_unconfirmed / ops_executed per range and in total; findings name their op
SUMMARY_FORMAT = 4
SUMMARY_NAME = "summary.json"
PICTURE_NAME = "coverage.png"
PHASES = (PHASE_READ, PHASE_ZERO, PHASE_FUZZ)


# -- signatures: the same bug gives the same signature across runs and shards --
_HEX = re.compile(r"0x[0-9a-fA-F]+|\b[0-9a-fA-F]{8,}\b")
_NUMBER = re.compile(r"\b\d+\b")
_INTERESTING = re.compile(r"assert|abort|error|fault|overflow|sanitizer|panic", re.I)


def _normalise(line: str) -> str:
    line = _HEX.sub("0x?", line)
    line = _NUMBER.sub("N", line)
    return " ".join(line.split())[:160]


def finding_signature(finding: dict[str, Any], plan: RangePlan | None = None) -> str:
    """``kind:range:phase[:cause]``: what happened, where, and (for crashes) why."""
    phase = plan.phase_of(finding["window"][0]) if plan and finding["window"][0] < plan.op_count else "?"
    parts = [finding["kind"], finding["range_name"], phase]
    exit_info = finding.get("qemu_exit")
    if finding["kind"] == "crash" and exit_info:
        signal = exit_info.get("signal")
        how = f"signal {signal}" if signal is not None else f"status {exit_info['status']}"
        lines = [ln for ln in (exit_info.get("stderr_tail") or "").splitlines() if ln.strip()]
        cause = next((ln for ln in reversed(lines) if _INTERESTING.search(ln)), lines[-1] if lines else "")
        parts += [how, _normalise(cause)] if cause else [how]
    return ":".join(parts)


def replay_hint(trace_path: Path | str) -> str:
    """The exact reproducer of anything a run did, for ranges a rerun command cannot single out."""
    return f"the trace is the exact reproducer: avocado iofuzz replay {trace_path}"


def _rerun_fields(rerun: Rerun, trace_path: Path) -> dict[str, Any]:
    fields = rerun.summary_fields()
    if rerun.note:
        fields["rerun_note"] = f"{rerun.note}; {replay_hint(trace_path)}"
    return fields


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
    guest: str = "",
    shard: str = "1/1",
    rerun_context: RerunContext | None = None,
) -> dict[str, Any]:
    """The summary of a run; ``rerun_context`` (read from the test's params) names its variant and
    command-line params for each range's rerun command (without it: the plain ``iofuzz`` reference)."""
    run = result.as_dict()
    by_index = {plan.index: plan for plan in plans}
    context = rerun_context if rerun_context is not None else RerunContext(shard=shard)
    reruns = {plan.index: _rerun_fields(rerun_range(plan, context, plans), trace_path) for plan in plans}
    findings = run["findings"]
    for finding in findings:
        plan = by_index.get(finding["range_index"])
        finding["signature"] = finding_signature(finding, plan)
        lost = Rerun(context.reference, note=f"range {finding['range_index']} is not among the run's ranges")
        rerun = reruns.get(finding["range_index"]) or _rerun_fields(lost, trace_path)
        finding["reproducer"] = {
            "trace": str(trace_path),
            "range_index": finding["range_index"],
            "window": list(finding["window"]),
            "rerun": rerun["rerun"],
            **({"rerun_note": rerun["rerun_note"]} if "rerun_note" in rerun else {}),
        }
    crashes = [
        {
            "signature": f["signature"],
            "detail": f["detail"],
            "reproducer": f["reproducer"],
            "crash_signature": signature_of_exit(f["qemu_exit"]).as_dict() if f.get("qemu_exit") else None,
        }
        for f in findings
        if f["kind"] == "crash"
    ]
    ranges = [{**range_counts(plan, result), **reruns[plan.index]} for plan in plans]
    return {
        "format": SUMMARY_FORMAT,
        "seed": seed,
        "fuzz_count": fuzz_count,
        "guest": guest,
        "shard": shard,
        "accelerator": accel,
        "accelerator_reason": accel_reason,
        "ranges": ranges,
        "trace": str(trace_path),
        "qemu_cmdline": qemu_cmdline,
        **run,
        **_totals(ranges),
        "hangs": sum(f["kind"] == "hang" for f in findings),
        "reboots": sum(f["kind"] == "reboot" for f in findings),
        "crashes": crashes,
        # crashes with the same exit and fatal message (repro.signature) are one bug
        "crash_groups": group_by_signature(crashes, "crash_signature"),
    }


def range_counts(plan: RangePlan, result: CampaignResult) -> dict[str, Any]:
    """A range's entry in summary.json, without its rerun fields: what it is and what ran of it.

    ``ops_confirmed`` ran for sure (progress marks, or the op ``@HANG`` named);
    ``ops_unconfirmed`` may have run (the window in flight when the run stopped
    without the executor naming the op); ``ops_executed`` is their sum, the
    most that can have run. ``reads``/``writes``/``ops_by_phase`` count
    confirmed ops, ``ops_executed_by_phase`` the executed ones.
    """
    tally = result.tally(plan.index)
    phases = tally.by_phase(plan)
    return {
        "index": plan.index,
        "name": plan.name,
        "span": f"{plan.start:#06x}-{plan.end:#06x}",
        # what fuzz_kinds made of the range: its address space, access width, own fuzz count
        "space": plan.space,
        "width": plan.width,
        "values": plan.values,
        **({"layout": plan.layout} if plan.values != VALUES_UNIFORM else {}),  # the dma scratch memory's
        # a guided program's step: only when set, as the trace's range records have them (readers of
        # summaries written before read a range without them as the blind range it was)
        **({"fuzz_only": True} if plan.fuzz_only else {}),
        **({"fixed": plan.fixed} if plan.fixed is not None else {}),
        "range_fuzz_count": plan.fuzz_count,
        "ops_planned": plan.op_count,
        "ops_confirmed": tally.ops_confirmed,
        "ops_unconfirmed": tally.ops_unconfirmed,
        "ops_executed": tally.ops_executed,
        "ops_skipped": tally.ops_skipped,
        "ops_done": tally.ops_confirmed,  # format 3's name for ops_confirmed
        "ops_by_phase": phases,
        "ops_executed_by_phase": tally.by_phase(plan, executed=True),
        "reads": phases[PHASE_READ],
        "writes": phases[PHASE_ZERO] + phases[PHASE_FUZZ],
    }


def _totals(ranges: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Totals over ranges; a format-3 range (no ops_confirmed) counts its ops_done as confirmed and executed."""
    confirmed = sum(r.get("ops_confirmed", r["ops_done"]) for r in ranges)
    return {
        "ops_confirmed_total": confirmed,
        "ops_executed_total": sum(r.get("ops_executed", r["ops_done"]) for r in ranges),
        "ops_done_total": confirmed,
    }


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Write atomically, so a reader never sees half a summary."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_summary(path: Path) -> dict[str, Any]:
    try:
        summary = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable iofuzz summary: {err}") from None
    if not isinstance(summary, dict) or "ranges" not in summary or "findings" not in summary:
        raise ValueError(f"{path}: not an iofuzz summary (no ranges/findings)")
    return summary


def merge_summaries(summaries: Sequence[dict[str, Any]], sources: Sequence[str] = ()) -> dict[str, Any]:
    """One summary for the shards (or independent runs) given.

    Ranges and findings are concatenated, each tagged with the shard (and
    source) it came from; totals are summed. ``elapsed_s`` is the longest
    shard's (shards run side by side), ``ops_per_s`` the sum of the shards'
    rates. ``overlaps`` lists ranges fuzzed by more than one part with the
    same seed: shards of one campaign never overlap, so a non-empty list says
    the parts were not shards of one campaign.
    """
    if not summaries:
        raise ValueError("merge_summaries: no summary given")
    sources = list(sources) or [f"#{i}" for i in range(len(summaries))]
    ranges: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    seen: dict[Any, str] = {}
    overlaps: list[str] = []
    for summary, source in zip(summaries, sources, strict=True):
        tag = {"shard": summary.get("shard", "1/1"), "source": source}
        for r in summary["ranges"]:
            key = (summary["seed"], r["span"], r["name"])
            if key in seen:
                overlaps.append(f"{r['span']} {r['name']} (seed {summary['seed']}): {seen[key]} and {source}")
            seen[key] = source
            ranges.append({**r, **tag})
        findings += [{**f, **tag} for f in summary["findings"]]
    ranges.sort(key=lambda r: (r["span"], r["name"], r["source"]))
    seeds = sorted({s["seed"] for s in summaries})
    elapsed = max(float(s.get("elapsed_s", 0.0)) for s in summaries)
    return {
        "format": SUMMARY_FORMAT,
        "merged_from": sources,
        "seed": seeds[0] if len(seeds) == 1 else seeds,
        "fuzz_count": sorted({s["fuzz_count"] for s in summaries}),
        "guest": sorted({s.get("guest", "") for s in summaries}),
        "accelerator": sorted({s["accelerator"] for s in summaries}),
        "shards": sorted({s.get("shard", "1/1") for s in summaries}),
        "ranges": ranges,
        "findings": findings,
        "overlaps": overlaps,
        **_totals(ranges),
        "elapsed_s": round(elapsed, 3),
        "ops_per_s": round(sum(float(s.get("ops_per_s", 0.0)) for s in summaries), 1),
        "hangs": sum(f["kind"] == "hang" for f in findings),
        "reboots": sum(f["kind"] == "reboot" for f in findings),
        "crashes": [c for s in summaries for c in s.get("crashes", [])],
        "crash_groups": group_by_signature([c for s in summaries for c in s.get("crashes", [])], "crash_signature"),
        "stopped_early": "; ".join(s["stopped_early"] for s in summaries if s.get("stopped_early")),
        # the union of the parts' reached events (each at its earliest sighting)
        **_present("coverage", merge_coverage([s.get("coverage") for s in summaries], sources)),
    }


def _present(key: str, value: Any) -> dict[str, Any]:
    """``{key: value}``, or nothing when value is None (a summary from before that key existed)."""
    return {} if value is None else {key: value}


def _scalar(value: Any) -> str:
    """A summary value as a person writes it: a merged summary's list of values joined by commas."""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def whiteboard_line(summary: dict[str, Any]) -> str:
    """One line for avocado's whiteboard (the HTML report shows it in a hover box, whitespace collapsed)."""
    headline = summary_table(summary).splitlines()[0]
    coverage = coverage_line(summary.get("coverage"))
    findings = [
        f"{f['kind']} in {f['range_name']} ops [{f['window'][0]}, {f['window'][1]})"
        + (f" at op {f['op']}" if f.get("op") is not None else "")
        for f in summary["findings"]
    ]
    return "; ".join([headline, *([coverage] if coverage else []), *findings])


def summary_table(summary: dict[str, Any]) -> str:
    """A few lines a person reads at a glance in the test log."""
    findings = summary["findings"]
    by_range: dict[tuple[str, str], list[str]] = {}
    for finding in findings:
        span = finding.get("range_span") or ""
        by_range.setdefault((span, finding["range_name"]), []).append(finding["kind"])
    name_width = max([len(r["name"]) for r in summary["ranges"]] + [5])
    span_width = max([len(r["span"]) for r in summary["ranges"]] + [13])
    totals = _totals(summary["ranges"])
    unconfirmed = totals["ops_executed_total"] - totals["ops_confirmed_total"]
    maybe = f" (+{unconfirmed} unconfirmed)" if unconfirmed else ""
    shard = summary.get("shard", summary.get("shards", "1/1"))
    lines = [
        f"seed {_scalar(summary['seed'])}  accel {_scalar(summary['accelerator'])}  shard {_scalar(shard)}  "
        f"{totals['ops_confirmed_total']} ops{maybe} in {summary['elapsed_s']} s ({summary['ops_per_s']} ops/s)  "
        f"hangs {summary.get('hangs', 0)}  reboots {summary.get('reboots', 0)}  "
        f"crashes {len(summary.get('crashes', []))}",
        *filter(None, [coverage_line(summary.get("coverage"))]),
        f"{'span':<{span_width}} {'kind':<4} {'range':<{name_width}} {'reads':>8} {'writes':>10} "
        f"{'unconfirmed':>11} {'planned':>10}  findings",
    ]
    for r in summary["ranges"]:
        kinds = ", ".join(by_range.get((r["span"], r["name"]), [])) or "-"
        reads = r.get("reads", "?")
        writes = r.get("writes", "?")
        maybe_ran = r.get("ops_unconfirmed", 0)
        planned = r["ops_planned"]
        lines.append(
            f"{r['span']:<{span_width}} {r.get('space', 'pio'):<4} {r['name']:<{name_width}} {reads:>8} "
            f"{writes:>10} {maybe_ran:>11} {planned:>10}  {kinds}"
        )
    for crash in summary.get("crashes", []):
        lines.append(f"crash {crash['signature']}")
        reproducer = crash["reproducer"]
        lines.append(f"  rerun: {reproducer['rerun'] or reproducer.get('rerun_note', '-')}")
    return "\n".join(lines)
