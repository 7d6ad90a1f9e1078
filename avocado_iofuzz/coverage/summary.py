"""The ``coverage`` object of summary.json: one run's, merged ones, and the line people read.

::

    "coverage": {
      "enabled": true,
      "events_available": 163,            # events of the device(s) under test and the bus, in this QEMU
      "events_reached": 41,               # of those, first seen while a fuzzing op ran
      "available": [...], "background": [...],
      "devices": [{"device": "e1000e", "events_available": 139, "events_reached": 38,
                   "prefixes": [...], "fallback": null}],
      "bus": {"events_available": 24, "events_reached": 3},
      "by_range": [{"index": 2, "name": "...", "span": "...", "space": "mmio", "device": "e1000e",
                    "events": ["e1000e_core_write", ...]}],
      "events": {"e1000e_core_write": {"range_index": 2, "op": 4096, "ops_total": 4200, "time_s": 0.8}},
    }

Without a usable trace backend: ``{"enabled": false, "reason": "..."}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from avocado_iofuzz.coverage.collector import CoverageCollector


def disabled(reason: str) -> dict[str, Any]:
    return {"enabled": False, "reason": reason}


def coverage_summary(collector: CoverageCollector) -> dict[str, Any]:
    """The ``coverage`` object of one run."""
    selection = collector.selection
    reached = set(collector.first_seen)
    devices = [
        {
            "device": d.device,
            "prefixes": list(d.prefixes),
            "fallback": d.fallback,
            "events_available": len(d.events),
            "events_reached": len(reached & set(d.events)),
        }
        for d in selection.devices
    ]
    by_range = []
    for plan in collector.plans:
        events = sorted(n for n, seen in collector.first_seen.items() if seen.range_index == plan.index)
        by_range.append(
            {
                "index": plan.index,
                "name": plan.name,
                "span": f"{plan.start:#06x}-{plan.end:#06x}",
                "space": plan.space,
                "device": selection.range_devices.get(plan.index),
                "events": events,
            }
        )
    available = list(selection.events)
    return {
        "enabled": True,
        "events_available": len(available),
        "events_reached": len(reached),
        "available": available,
        "background": sorted(collector.background),
        "devices": devices,
        "bus": {"events_available": len(selection.bus), "events_reached": len(reached & set(selection.bus))},
        "by_range": by_range,
        "events": {name: asdict(seen) for name, seen in sorted(collector.first_seen.items())},
    }


def merge_coverage(parts: Sequence[dict[str, Any] | None], sources: Sequence[str]) -> dict[str, Any] | None:
    """The union of the parts' coverage: available and reached events, each event's earliest sighting.

    ``by_range`` entries are kept per part, tagged with their source (as merged
    ranges are); a device's counts are recomputed from the union of names.
    """
    enabled = [(c, s) for c, s in zip(parts, sources, strict=True) if c and c.get("enabled")]
    if not enabled:
        reasons = sorted({c.get("reason", "") for c in parts if c})
        return disabled("; ".join(r for r in reasons if r) or "no part collected coverage") if any(parts) else None
    available: set[str] = set()
    background: set[str] = set()
    events: dict[str, dict[str, Any]] = {}
    by_range: list[dict[str, Any]] = []
    devices: dict[str, dict[str, Any]] = {}
    for cov, source in enabled:
        available |= set(cov["available"])
        background |= set(cov.get("background", []))
        for name, seen in cov["events"].items():
            if name not in events or seen["time_s"] < events[name]["time_s"]:
                events[name] = {**seen, "source": source}
        by_range += [{**r, "source": source} for r in cov["by_range"]]
        for d in cov["devices"]:
            devices.setdefault(d["device"], {k: v for k, v in d.items() if not k.startswith("events_")})
    reached = set(events)
    bus = {n for cov, _ in enabled for n in cov["available"] if _is_bus(n, cov)}
    merged_devices = []
    for d in devices.values():
        own = {n for n in available if any(n.startswith(p) for p in d["prefixes"])}
        merged_devices.append({**d, "events_available": len(own), "events_reached": len(own & reached)})
    return {
        "enabled": True,
        "events_available": len(available),
        "events_reached": len(reached),
        "available": sorted(available),
        "background": sorted(background - reached),
        "devices": merged_devices,
        "bus": {"events_available": len(bus), "events_reached": len(bus & reached)},
        "by_range": by_range,
        "events": dict(sorted(events.items())),
    }


def _is_bus(name: str, cov: dict[str, Any]) -> bool:
    """An available event that no device of ``cov`` claims by prefix."""
    return not any(name.startswith(p) for d in cov["devices"] for p in d["prefixes"])


def coverage_line(coverage: dict[str, Any] | None) -> str:
    """``e1000e: 41/139 events, bus: 3/24 events`` -- or why there is no coverage."""
    if not coverage:
        return ""
    if not coverage.get("enabled"):
        return f"coverage: off ({coverage.get('reason', 'not collected')})"
    parts = [f"{d['device']}: {d['events_reached']}/{d['events_available']} events" for d in coverage["devices"]]
    parts.append(f"bus: {coverage['bus']['events_reached']}/{coverage['bus']['events_available']} events")
    return ", ".join(parts)
