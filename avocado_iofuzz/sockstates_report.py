"""The sockstates test's result: one per-state table (JSON) and a human summary, whatever the mode.

``--criu`` leaves a ``results.jsonl`` record per state; ``--gen`` and
``--run`` print blocks (the state's description, its syscalls indented, and
for ``--run`` a ``=>`` verdict line), which :func:`parse_cli_output` reads.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sockstates import findings

REPORT_NAME = "sockstates.json"
MAX_TABLE_ROWS = 60  # states listed in the log; the JSON has them all
PROBLEM_VERDICTS = ("failed", "error", "mismatch")


def parse_cli_output(text: str, mode: str) -> list[dict[str, Any]]:
    """Per-state rows from ``sockstates --gen`` or ``--run`` output."""
    rows: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", "run:", "sockstates:")):
            continue
        if not line.startswith(" "):
            rows.append({"index": len(rows), "description": line.strip(), "syscalls": [],
                         "verdict": "listed" if mode == "gen" else "unknown", "reasons": []})
            continue
        if not rows:
            continue
        body = line.strip()
        row = rows[-1]
        if body.startswith("=> kernel agrees"):
            row["verdict"] = "match"
        elif body.startswith("=> MODEL BUG"):
            row["verdict"] = "mismatch"
            row["reasons"].append(body[3:])
        elif body.startswith("=> ERROR"):
            row["verdict"] = "error"
            row["reasons"].append(body[3:])
        elif body.startswith(("note:", "step ")) or row["verdict"] in PROBLEM_VERDICTS:
            row["reasons"].append(body)
        else:
            row["syscalls"].append(body)
    for row in rows:
        row["depth"] = len(row["syscalls"])
    return rows


def read_results(path: Path) -> list[dict[str, Any]]:
    """The records of a ``results.jsonl``; a torn last line (a run cut short) is dropped."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def criu_rows(records: Iterable[Mapping[str, Any]], repro_root: Path | None = None) -> list[dict[str, Any]]:
    rows = []
    for record in records:
        row = {key: record.get(key) for key in ("index", "description", "depth", "verdict", "stage", "seconds")}
        row["syscalls"] = list(record.get("syscalls", []))
        row["reasons"] = list(record.get("reasons", []))
        if record.get("verdict") in ("failed", "error"):
            row["group"] = findings.group(record)
            row["commands"] = list(record.get("commands", []))
            row["log_lines"] = list(record.get("log_lines", []))
            repro = record.get("reproducer")
            if repro and repro_root is not None:
                repro = str(repro_root / Path(repro).name)
            row["reproducer"] = repro
        rows.append(row)
    return rows


def build_report(mode: str, where: str, params: Mapping[str, Any], rows: list[dict[str, Any]],
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    counts = Counter(row["verdict"] for row in rows)
    report: dict[str, Any] = {
        "mode": mode,
        "where": where,
        "params": dict(params),
        "states": len(rows),
        "counts": dict(sorted(counts.items())),
        "groups": _groups(rows),
        "table": rows,
    }
    report.update(extra or {})
    return report


def _groups(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Failed and erroneous states by reason group, most frequent first."""
    members: dict[str, list[str]] = {}
    for row in rows:
        if row.get("group"):
            members.setdefault(row["group"], []).append(row["description"])
    ordered = sorted(members.items(), key=lambda item: (-len(item[1]), item[0]))
    return [{"group": g, "states": len(d), "examples": d[:3]} for g, d in ordered]


def write_report(path: Path, report: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """The human summary for the test log and avocado's whiteboard."""
    counts = ", ".join(f"{n} {verdict}" for verdict, n in report["counts"].items()) or "nothing"
    lines = [f"sockstates --{report['mode']} ({report['where']}): {report['states']} states: {counts}"]
    if report.get("line"):
        lines.append(str(report["line"]))
    for item in report.get("groups", []):
        lines.append(f"  {item['states']:4d} x {item['group']}  (e.g. {', '.join(item['examples'])})")
    problems = [row for row in report["table"] if row["verdict"] in PROBLEM_VERDICTS]
    if problems:
        lines.append(f"{'index':>6}  {'verdict':8}  {'stage':8}  state / reason")
    for row in problems[:MAX_TABLE_ROWS]:
        reason = row["reasons"][0] if row["reasons"] else ""
        lines.append(f"{row['index']:>6}  {row['verdict']:8}  {row.get('stage') or '':8}  {row['description']}")
        lines.append(f"{'':>6}  {'':8}  {'':8}  {reason[:160]}")
        if row.get("reproducer"):
            lines.append(f"{'':>6}  {'':8}  {'':8}  reproducer: {row['reproducer']}")
    if len(problems) > MAX_TABLE_ROWS:
        lines.append(f"... and {len(problems) - MAX_TABLE_ROWS} more in {REPORT_NAME}")
    return lines
