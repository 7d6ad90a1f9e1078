"""coverage.png and iofuzz-merge on real files (matplotlib, no QEMU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from avocado_iofuzz.campaign.runner import CampaignResult, Finding
from avocado_iofuzz.model.program import plan_ranges
from avocado_iofuzz.results.merge import main as merge_main
from avocado_iofuzz.results.plotting import FINDING_STYLE, picture_rows, render_coverage
from avocado_iofuzz.results.report import build_summary, write_summary

CRASH_RGB = tuple(int(FINDING_STYLE["crash"][1][i : i + 2], 16) for i in (1, 3, 5))


def _summary(shard, ranges, findings=()):
    plans = plan_ranges(3, ranges, 2)
    result = CampaignResult(
        ops_done={p.index: p.op_count for p in plans}, ops_skipped={p.index: 0 for p in plans}, elapsed=1.0
    )
    result.findings.extend(findings)
    return build_summary(
        seed=3,
        fuzz_count=2,
        accel="tcg",
        accel_reason="",
        plans=plans,
        result=result,
        trace_path=Path("t"),
        qemu_cmdline="",
        guest="busybox",
        shard=shard,
    )


def _has_colour(path: Path, rgb) -> bool:
    with Image.open(path) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
    return any(all(abs(a - b) <= 3 for a, b in zip(colour, rgb, strict=True)) for _, colour in colours)


def test_picture_is_a_png_with_crash_markers_only_when_there_is_a_crash(tmp_path):
    clean = render_coverage(_summary("1/1", [(0, 0x1F, "dma1"), (0x70, 0x77, "rtc0")]), tmp_path / "clean.png")
    exit_info = {"status": 1, "signal": None, "stderr_tail": ""}
    crash = Finding("crash", 1, "rtc0", "0x0070-0x0077", (10, 20), "boom", exit_info)
    crashed = render_coverage(
        _summary("1/1", [(0, 0x1F, "dma1"), (0x70, 0x77, "rtc0")], [crash]), tmp_path / "crash.png"
    )
    for path in (clean, crashed):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 800
    assert _has_colour(crashed, CRASH_RGB)
    assert not _has_colour(clean, CRASH_RGB)


def test_picture_refuses_a_summary_without_ranges(tmp_path):
    with pytest.raises(ValueError, match="no ranges"):
        render_coverage({"ranges": [], "findings": [], "seed": 1}, tmp_path / "x.png")


def test_merge_cli_finds_shard_summaries_below_folders(tmp_path, capsys):
    for shard, ranges in (("1/2", [(0, 0x1F, "dma1")]), ("2/2", [(0x70, 0x77, "rtc0")])):
        folder = tmp_path / "results" / shard.replace("/", "of") / "data"
        folder.mkdir(parents=True)
        write_summary(folder / "summary.json", _summary(shard, ranges))
    out = tmp_path / "merged"
    assert merge_main([str(tmp_path / "results"), "-o", str(out)]) == 0
    merged = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in merged["ranges"]] == ["dma1", "rtc0"] and merged["shards"] == ["1/2", "2/2"]
    assert (out / "coverage.png").stat().st_size > 0
    assert "merged 2 summaries" in capsys.readouterr().out
    # merging again over a tree that now also holds the merged summary does not count it twice
    assert merge_main([str(tmp_path), "-o", str(tmp_path / "again"), "--no-plot"]) == 0
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert len(again["ranges"]) == 2


def test_merge_cli_names_what_is_wrong(tmp_path, capsys):
    (tmp_path / "summary.json").write_text("{not json")
    assert merge_main([str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such file or directory" in capsys.readouterr().err
    assert merge_main([str(tmp_path)]) == 2
    assert "not a readable iofuzz summary" in capsys.readouterr().err


def test_picture_draws_events_panels_only_when_the_summary_has_coverage(tmp_path):
    from avocado_iofuzz.results.plotting import REACHED_COLOUR

    reached_rgb = tuple(int(REACHED_COLOUR[i : i + 2], 16) for i in (1, 3, 5))
    summary = _summary("1/1", [(0, 0x1F, "dma1"), (0x70, 0x77, "rtc0")])
    plain = render_coverage(summary, tmp_path / "plain.png")
    summary["coverage"] = {
        "enabled": True,
        "events_available": 5,
        "events_reached": 2,
        "devices": [{"device": "i8257", "prefixes": ["i8257_"], "events_available": 1, "events_reached": 1}],
        "bus": {"events_available": 4, "events_reached": 1},
        "by_range": [
            {"index": 0, "name": "dma1", "span": "0x0000-0x001f", "events": ["i8257_unregistered_dma", "cpu_out"]},
            {"index": 1, "name": "rtc0", "span": "0x0070-0x0077", "events": []},
        ],
        "events": {
            "i8257_unregistered_dma": {"range_index": 0, "op": 64, "ops_total": 64, "time_s": 0.1},
            "cpu_out": {"range_index": 0, "op": 64, "ops_total": 64, "time_s": 0.1},
        },
    }
    with_events = render_coverage(summary, tmp_path / "events.png")
    assert _has_colour(with_events, reached_rgb)
    assert not _has_colour(plain, reached_rgb)


def test_a_guided_runs_thousand_batches_are_drawn_one_row_per_range_name(tmp_path):
    """Batches are stretches of a few device ranges: a row each made a picture ~60 000 px tall."""
    stretches = [(0x60, 0x60, "keyboard")] * 700 + [(0x70, 0x77, "rtc0")] * 300 + [(0x3F0, 0x3F5, "floppy")]
    summary = _summary("1/1", stretches)
    rows, row_of = picture_rows(summary["ranges"])
    assert [(r["span"], r["name"]) for r in rows] == [
        ("700 ranges:", "keyboard"),
        ("300 ranges:", "rtc0"),
        ("0x03f0-0x03f5", "floppy"),  # a name with one range keeps its own row
    ]
    assert rows[0]["ops_done"] == sum(r["ops_done"] for r in summary["ranges"][:700])
    assert sorted(set(row_of.values())) == [0, 1, 2]
    few = _summary("1/1", [(0x60, 0x60, "keyboard")] * 3)["ranges"]
    assert picture_rows(few)[0] == few  # a blind run's ranges: one row each, as before
    with Image.open(render_coverage(summary, tmp_path / "guided.png")) as image:
        assert image.height < 1000
