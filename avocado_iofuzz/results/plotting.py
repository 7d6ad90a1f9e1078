"""The coverage picture: what the run reached (trace events) and, second, how many ops each range got.

With coverage (summary ``coverage``, see :mod:`avocado_iofuzz.coverage.summary`):

* top left: per device, events reached out of events available (the outline);
* top right: the growth curve, events reached over the run's ops;
* bottom left: per range, the events first reached while it ran;
* bottom right: ops per range on a linear axis, split by phase, the plan as
  the outline and the count written next to each bar -- stacked phases on a
  log axis made 32 reads look like 70 % of a 3.2 M-op bar, so no log axis.

Findings are markers on the ops panel at the op where their window starts.
Without coverage (a QEMU without the log backend, an older summary) only the
ops panel is drawn, and the title says why.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from avocado_iofuzz.coverage.summary import coverage_line
from avocado_iofuzz.results.report import PHASES

PHASE_COLOURS = {"read": "#4c72b0", "zero": "#8c8c8c", "fuzz": "#55a868"}
REACHED_COLOUR = "#c47a2c"
FINDING_STYLE = {  # marker, colour, label
    "hang": ("v", "#dd8452", "hang"),
    "reboot": ("D", "#8172b3", "reboot"),
    "crash": ("X", "#c44e52", "QEMU crash"),
}


# More ranges than this are drawn one row per range name: a guided run's rounds
# plan thousands of batches (stretches of the device's ranges), and a row each
# made a picture tens of thousands of pixels tall that took a minute to draw.
MAX_ROWS = 48


def _row_key(entry: dict[str, Any]) -> tuple[Any, Any, Any]:
    return (entry.get("span"), entry.get("name"), entry.get("source"))


def picture_rows(ranges: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[tuple[Any, Any, Any], int]]:
    """The rows to draw and the row of each range's key: one per range, or per name when there are too many.

    A folded row sums its ranges' ops (planned, done, per phase) and says how
    many ranges it holds; findings and new events land on their range's row.
    """
    by_name: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for r in ranges:
        by_name.setdefault((r["name"], r.get("source")), []).append(r)
    if len(ranges) <= MAX_ROWS or len(by_name) == len(ranges):
        return ranges, {_row_key(r): i for i, r in enumerate(ranges)}
    drawn: list[dict[str, Any]] = []
    rows: dict[tuple[Any, Any, Any], int] = {}
    for members in by_name.values():
        for r in members:
            rows[_row_key(r)] = len(drawn)
        drawn.append(members[0] if len(members) == 1 else _folded(members))
    return drawn, rows


def _folded(members: list[dict[str, Any]]) -> dict[str, Any]:
    """One row for ranges of one name: their ops summed, the count of ranges where the span was."""
    phases: dict[str, int] = {}
    for r in members:
        for phase, count in (r.get("ops_by_phase") or {"fuzz": r.get("ops_done", 0)}).items():
            phases[phase] = phases.get(phase, 0) + count
    first = members[0]
    return {
        "span": f"{len(members)} ranges:",
        "name": first["name"],
        "source": first.get("source"),
        "shard": first.get("shard"),
        "ops_planned": sum(r["ops_planned"] for r in members),
        "ops_done": sum(r.get("ops_done", 0) for r in members),
        "ops_by_phase": phases,
    }


def render_coverage(summary: dict[str, Any], path: Path) -> Path:
    """Draw ``summary`` (one run's or a merged one) into ``path``; returns it."""
    # matplotlib and Pillow log every font they score at DEBUG: thousands of
    # lines that avocado's runner forwards at ~100 lines/s (measured: 22 s)
    for noisy in ("matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")  # no display: CI, Jenkins agents, avocado's runner
    from matplotlib import pyplot as plt

    if not summary["ranges"]:
        raise ValueError("render_coverage: the summary has no ranges to draw")
    ranges, rows = picture_rows(summary["ranges"])
    coverage = summary.get("coverage") or {}
    with_events = bool(coverage.get("enabled"))
    rows_height = max(2.5, 0.32 * len(ranges) + 1.2)
    if with_events:
        fig = plt.figure(figsize=(14, rows_height + 3.6), dpi=100)
        grid = fig.add_gridspec(2, 2, height_ratios=[3.0, rows_height], width_ratios=[1, 1.3])
        devices_ax, growth_ax = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
        events_ax = fig.add_subplot(grid[1, 0])
        ops_ax = fig.add_subplot(grid[1, 1], sharey=events_ax)
    else:
        fig, ops_ax = plt.subplots(figsize=(10, rows_height), dpi=100)
    try:
        labels = [f"{r['span']} {r['name']}" + (f"  [{r['shard']}]" if r.get("shard") else "") for r in ranges]
        _draw_ops(ops_ax, ranges, summary["findings"], rows)
        if with_events:
            _draw_devices(devices_ax, coverage)
            _draw_growth(growth_ax, coverage)
            _draw_range_events(events_ax, coverage, rows, len(ranges))
            events_ax.set_yticks(range(len(ranges)), labels, fontsize=8, family="monospace")
            events_ax.invert_yaxis()
            ops_ax.tick_params(axis="y", labelleft=False)
        else:
            ops_ax.set_yticks(range(len(ranges)), labels, fontsize=8, family="monospace")
            ops_ax.invert_yaxis()
        crashes = len(summary.get("crashes", []))
        line = coverage_line(coverage) or "coverage: not in this summary"
        fig.suptitle(
            f"iofuzz - seed {summary['seed']}, {summary.get('ops_done_total', 0)} ops, "
            f"{summary.get('hangs', 0)} hangs, {summary.get('reboots', 0)} reboots, {crashes} crashes\n{line}",
            fontsize=10,
        )
        fig.tight_layout()
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.png")
        fig.savefig(tmp, format="png")
        tmp.replace(path)  # a reader never sees half a picture
    finally:
        plt.close(fig)
    return path


def _draw_ops(ax: Any, ranges: list[dict[str, Any]], findings: list[dict[str, Any]], rows: dict) -> None:
    """Ops per range on a linear axis: phases side by side in one bar, the plan as outline, the count as text."""
    from matplotlib.patches import Patch

    most = max(max(r["ops_planned"], r.get("ops_done", 0)) for r in ranges) or 1
    for i, r in enumerate(ranges):
        phases = r.get("ops_by_phase") or {"fuzz": r["ops_done"]}
        left = 0
        for phase in PHASES:
            count = phases.get(phase, 0)
            if count:
                ax.barh(i, count, left=left, color=PHASE_COLOURS[phase], height=0.7)
            left += count
        ax.barh(i, r["ops_planned"], left=0, fill=False, edgecolor="#333333", linewidth=0.6, height=0.7)
        ax.text(max(left, r["ops_planned"]) + most * 0.01, i, f"{left:,}", va="center", fontsize=7)
    marked = set()
    for finding in findings:
        row = rows.get((finding.get("range_span"), finding["range_name"], finding.get("source")))
        if row is None:
            continue
        marker, colour, label = FINDING_STYLE.get(finding["kind"], ("o", "black", finding["kind"]))
        ax.plot(
            finding["window"][0],
            row,
            marker=marker,
            color=colour,
            markersize=11,
            markeredgecolor="black",
            linestyle="none",
            label=None if finding["kind"] in marked else label,
        )
        marked.add(finding["kind"])
    ax.set_xlim(0, most * 1.18)  # room for the counts
    ax.set_xlabel("ops (linear); outline = planned")
    ax.grid(axis="x", alpha=0.3)
    handles = [Patch(color=PHASE_COLOURS[p], label=f"{p} ops") for p in PHASES]
    finding_handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + finding_handles, loc="lower right", fontsize=7)
    ax.set_title("ops per range", fontsize=9)


def _draw_devices(ax: Any, coverage: dict[str, Any]) -> None:
    """Reached out of available, per device and for the bus events."""
    entries = [(d["device"], d["events_reached"], d["events_available"]) for d in coverage["devices"]]
    entries.append(("bus/DMA/IRQ", coverage["bus"]["events_reached"], coverage["bus"]["events_available"]))
    for i, (_, got, available) in enumerate(entries):
        ax.barh(i, available, color="none", edgecolor="#333333", linewidth=0.6, height=0.6)
        ax.barh(i, got, color=REACHED_COLOUR, height=0.6)
        ax.text(available, i, f" {got}/{available}", va="center", fontsize=8)
    ax.set_yticks(range(len(entries)), [e[0] for e in entries], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max([e[2] for e in entries] + [1]) * 1.2)
    ax.set_xlabel("trace events reached (outline = available in this QEMU)")
    ax.set_title("events per device", fontsize=9)


def _draw_growth(ax: Any, coverage: dict[str, Any]) -> None:
    """Events reached over the run's ops: a step per first sighting (merged parts: each part's own op count)."""
    sightings = sorted(seen["ops_total"] for seen in coverage["events"].values())
    if sightings:
        xs = [0, *sightings]
        ys = list(range(len(xs)))
        ax.step(xs, ys, where="post", color=REACHED_COLOUR)
        ax.plot(sightings, range(1, len(sightings) + 1), ".", color=REACHED_COLOUR, markersize=3)
    ax.axhline(coverage["events_available"], color="#333333", linewidth=0.6, linestyle="--")
    ax.set_ylim(0, coverage["events_available"] * 1.05 + 1)
    ax.set_xlabel("ops of the run (first sighting at or before)")
    ax.set_ylabel("events reached")
    reached, available = coverage["events_reached"], coverage["events_available"]
    ax.set_title(f"growth ({reached}/{available}; dashed = available)", fontsize=9)
    ax.grid(alpha=0.3)


def _draw_range_events(ax: Any, coverage: dict[str, Any], rows: dict, count: int) -> None:
    """New events per range: the ones first seen while that range ran."""
    new = [0] * count
    for entry in coverage["by_range"]:
        row = rows.get(_row_key(entry))
        if row is not None:
            new[row] += len(entry["events"])
    ax.barh(range(count), new, color=REACHED_COLOUR, height=0.7)
    for i, n in enumerate(new):
        if n:
            ax.text(n, i, f" {n}", va="center", fontsize=7)
    ax.set_xlim(0, max([*new, 1]) * 1.2)
    ax.set_xlabel("events first reached in the range")
    ax.set_title("new events per range", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
