"""The coverage picture: ops per device range, findings marked, as a PNG.

One horizontal bar per range (lowest port at the top), split by phase (reads,
zero writes, fuzz writes), on a log scale because a 4096-port PCI window gets
a thousand times the ops of a 4-port device. The bar's outline is the plan, so
a range the run did not finish shows as a partly empty box. A finding is a
marker at the op where its window starts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from avocado_iofuzz.report import PHASES

PHASE_COLOURS = {"read": "#4c72b0", "zero": "#8c8c8c", "fuzz": "#55a868"}
FINDING_STYLE = {  # marker, colour, label
    "hang": ("v", "#dd8452", "hang"),
    "reboot": ("D", "#8172b3", "reboot"),
    "crash": ("X", "#c44e52", "QEMU crash"),
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
    from matplotlib.patches import Patch

    ranges = summary["ranges"]
    if not ranges:
        raise ValueError("render_coverage: the summary has no ranges to draw")
    labels = [f"{r['span']} {r['name']}" + (f"  [{r['shard']}]" if r.get("shard") else "") for r in ranges]
    rows = {(r["span"], r["name"], r.get("source")): i for i, r in enumerate(ranges)}
    height = max(2.5, 0.32 * len(ranges) + 1.6)
    fig, ax = plt.subplots(figsize=(10, height), dpi=100)
    try:
        for i, r in enumerate(ranges):
            phases = r.get("ops_by_phase") or {"fuzz": r["ops_done"]}
            left = 0.0
            for phase in PHASES:
                count = phases.get(phase, 0)
                if count:
                    # x = 1 + op index: a log axis has no 0
                    ax.barh(i, count, left=1 + left, color=PHASE_COLOURS[phase], height=0.7)
                left += count
            ax.barh(i, r["ops_planned"], left=1.0, fill=False, edgecolor="#333333", linewidth=0.6, height=0.7)
        marked = set()
        for finding in summary["findings"]:
            row = rows.get((finding.get("range_span"), finding["range_name"], finding.get("source")))
            if row is None:
                continue
            marker, colour, label = FINDING_STYLE.get(finding["kind"], ("o", "black", finding["kind"]))
            ax.plot(
                1 + finding["window"][0],
                row,
                marker=marker,
                color=colour,
                markersize=11,
                markeredgecolor="black",
                linestyle="none",
                label=None if finding["kind"] in marked else label,
            )
            marked.add(finding["kind"])
        ax.set_xscale("log")
        ax.set_xlim(left=1.0, right=(1 + max(r["ops_planned"] for r in ranges)) * 1.5)
        ax.set_yticks(range(len(ranges)), labels, fontsize=8, family="monospace")
        ax.invert_yaxis()
        ax.set_xlabel("1 + ops (log scale); outline = planned")
        ax.grid(axis="x", which="major", alpha=0.3)
        handles = [Patch(color=PHASE_COLOURS[p], label=f"{p} ops") for p in PHASES]
        finding_handles, _ = ax.get_legend_handles_labels()
        # outside the axes, so it never hides a bar
        ax.legend(handles=handles + finding_handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        seed = summary["seed"]
        crashes = len(summary.get("crashes", []))
        ax.set_title(
            f"iofuzz coverage - seed {seed}, {summary.get('ops_done_total', 0)} ops, "
            f"{summary.get('hangs', 0)} hangs, {summary.get('reboots', 0)} reboots, {crashes} crashes",
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
