"""Stage extract: the finding of a trace, the ops that led to it, and clear errors for bad traces."""

from __future__ import annotations

from pathlib import Path

import pytest

from avocado_iofuzz.campaign.trace import TraceWriter
from avocado_iofuzz.model.program import RangePlan
from avocado_iofuzz.repro.extract import (
    PCI_LISTING_KEY,
    ExtractError,
    executed_spans,
    extract,
    find_finding,
    load_trace,
    pci_setup_ops,
)
from avocado_iofuzz.repro.pipeline import signature_matches
from avocado_iofuzz.repro.qtest_ops import format_script
from avocado_iofuzz.repro.signature import HANG, NO_CRASH, crash_signature
from avocado_iofuzz.repro.vt_triage import TriageParams
from avocado_iofuzz.vt.iofuzz_params import read_triage
from avocado_iofuzz.vt.params import ParamError

CMDLINE = "/usr/bin/qemu-system-x86_64 -nodefaults -machine pc -kernel /k -device hyperv-testdev"
ABORT = "qemu-system-x86_64: ../hw/x.c:9: f: Assertion `n' failed.\n"
DATA = Path(__file__).with_name("data")


def plans() -> list[RangePlan]:
    return [RangePlan(0, 0x70, 0x71, "rtc0", 5, 50), RangePlan(1, 0x80, 0x8F, "dma page reg", 5, 50)]


def write(path: Path, events: list[tuple[str, dict]], header: dict | None = None) -> Path:
    with TraceWriter(path, {"qemu_cmdline": CMDLINE, **(header or {})}, plans(), mark_interval=0) as trace:
        for plan in plans():
            trace.write_ops(plan, 0, plan.op_count)
        for kind, data in events:
            trace.event(kind, **data)
    return path


def crash_event(range_index: int, window: list[int]) -> tuple[str, dict]:
    return (
        "crash",
        {"range": range_index, "window": window, "qemu_exit": {"status": None, "signal": 6, "stderr_tail": ABORT}},
    )


def test_a_crash_gives_window_range_and_since_reset_candidates(tmp_path):
    path = write(tmp_path / "t", [("start", {"range": 0, "op": 0}), crash_event(1, [256, 512])])
    extracted = extract(path)
    finding = extracted.finding
    assert (finding.kind, finding.range_index, finding.window) == ("crash", 1, (256, 512))
    assert finding.expected.message == "hw/x.c: f: Assertion `n' failed." and finding.expected.signal == 6
    by_name = {c.name: c.ops for c in extracted.candidates}
    assert by_name["window"] == list(plans()[1].ops(256, 512))
    assert by_name["range"] == list(plans()[1].ops(0, 512))
    assert by_name["since-reset"] == list(plans()[0].ops()) + list(plans()[1].ops(0, 512))
    assert extracted.qtest_target is not None and "-device" in extracted.qtest_target.args


def test_ops_before_a_reset_do_not_count_but_a_hang_without_one_does(tmp_path):
    events = [
        ("start", {"range": 0, "op": 0}),
        ("hang", {"range": 0, "window": [0, 64], "detail": "x"}),
        ("resume", {"range": 0, "op": 64}),
        ("start", {"range": 0, "op": 64}),
        ("hang", {"range": 1, "window": [64, 128], "detail": "y"}),
        ("reset", {}),
        ("resume", {"range": 1, "op": 128}),
        ("start", {"range": 1, "op": 128}),
        crash_event(1, [256, 300]),
    ]
    trace = load_trace(write(tmp_path / "t", events))
    _, crash = find_finding(trace, "crash")
    assert executed_spans(trace, crash) == [(1, 128, 300)]
    _, hang = find_finding(trace, "hang")  # the last hang: everything since the start counts
    assert executed_spans(trace, hang) == [(0, 0, 64), (0, 64, plans()[0].op_count), (1, 0, 128)]
    _, first_hang = find_finding(trace, "hang", occurrence=0)
    assert executed_spans(trace, first_hang) == [(0, 0, 64)]


def test_a_large_history_is_capped_to_its_most_recent_ops(tmp_path):
    path = write(tmp_path / "t", [("start", {"range": 0, "op": 0}), crash_event(1, [256, 512])])
    candidates = extract(path, max_prefix_ops=300).candidates
    assert all(len(c.ops) <= 300 for c in candidates)
    assert candidates[-1].ops == list(plans()[1].ops(212, 512))


def test_the_recorded_pci_listing_becomes_the_bar_setup(tmp_path):
    listing = (DATA / "pci-resources-pc-devices.txt").read_text()
    path = write(
        tmp_path / "t", [("start", {"range": 0, "op": 0}), crash_event(0, [0, 10])], {PCI_LISTING_KEY: listing}
    )
    setup = format_script(extract(path).setup)
    assert setup.startswith("outl 0xcf8 0x800")
    assert setup == format_script(pci_setup_ops(listing))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"garbage\n", "not an iofuzz trace"),
        (b'#IOFUZZ-TRACE {"format": 2, "qemu_cmd', "truncated header"),
        (b"\x00\xff\xfe\n", "not UTF-8"),
    ],
)
def test_garbage_and_truncated_traces_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "trace.iofuzz"
    path.write_bytes(content)
    with pytest.raises(ExtractError, match=message) as error:
        extract(path)
    assert str(path) in str(error.value)


def test_a_trace_cut_before_its_finding_has_nothing_to_reproduce(tmp_path):
    path = write(tmp_path / "t", [("start", {"range": 0, "op": 0}), crash_event(1, [256, 512])])
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b'"window"')])  # the writer died while writing the crash event
    with pytest.raises(ExtractError, match="nothing to reproduce"):
        extract(path)


def test_missing_file_directory_and_bad_finding_choice(tmp_path):
    with pytest.raises(ExtractError, match="no such trace file"):
        extract(tmp_path / "nope")
    with pytest.raises(ExtractError, match="is a directory"):
        extract(tmp_path)
    path = write(tmp_path / "t", [("start", {"range": 0, "op": 0}), crash_event(1, [0, 10])])
    with pytest.raises(ExtractError, match="no hang event"):
        extract(path, kind="hang")
    with pytest.raises(ExtractError, match="not one of"):
        extract(path, kind="explosion")


def test_a_trace_without_command_line_still_extracts_but_cannot_replay_under_qtest(tmp_path):
    path = tmp_path / "t"
    with TraceWriter(path, {}, plans(), mark_interval=0) as trace:
        trace.write_ops(plans()[0], 0, 10)
        trace.event("start", range=0, op=0)
        trace.event("hang", range=0, window=[0, 10], detail="x")
    extracted = extract(path)
    assert extracted.qtest_target is None and "qemu_cmdline" in extracted.qtest_problem


def test_signature_matching_is_as_strict_as_the_finding_allows():
    abort = crash_signature(None, 6, ABORT)
    assert signature_matches(abort, crash_signature(None, 6, "noise\n" + ABORT))
    assert not signature_matches(abort, crash_signature(None, 11, ABORT))
    assert not signature_matches(abort, crash_signature(None, 6, ""))
    unknown_text = crash_signature(None, 6, "")  # stderr lost: kind and signal must do
    assert signature_matches(unknown_text, abort)
    assert signature_matches(HANG, HANG) and not signature_matches(HANG, NO_CRASH)
    assert not signature_matches(abort, HANG)


def test_triage_params_are_checked(tmp_path):
    assert read_triage({}) == TriageParams()
    with pytest.raises(ParamError, match="minimize"):
        read_triage({"minimize": "maybe"})
    with pytest.raises(ParamError, match="minimize_budget"):
        read_triage({"minimize_budget": "-1"})
    with pytest.raises(ParamError, match="iofuzz_replay"):
        read_triage({"iofuzz_replay": str(tmp_path / "missing")})


def test_the_cli_reaches_every_finding_of_a_trace_not_only_the_last(tmp_path):
    # a run that survives hangs records each one (lsi53c895a's row: 8); the CLI reached only the last
    from avocado_iofuzz.repro import cli

    events = [
        ("start", {"range": 0, "op": 0}),
        ("hang", {"range": 0, "window": [0, 64], "detail": "x"}),
        ("resume", {"range": 0, "op": 64}),
        ("start", {"range": 0, "op": 64}),
        ("hang", {"range": 1, "window": [64, 128], "detail": "y"}),
    ]
    path = write(tmp_path / "t", events)
    windows = {
        n: cli._extract(path, {"iofuzz_finding": "hang", "iofuzz_occurrence": n}).finding.window for n in (1, 2, -1)
    }
    assert windows == {1: (0, 64), 2: (64, 128), -1: (64, 128)}
    assert cli._extract(path, {"iofuzz_finding": "hang"}).finding.window == (64, 128)
    assert cli._options({"iofuzz_finding": "hang", "iofuzz_occurrence": 1}).occurrence == 0
    with pytest.raises(cli.CliError, match="counts from 1"):
        cli._extract(path, {"iofuzz_occurrence": 0})
    with pytest.raises(cli.CliError, match="finding #2 asked for, the trace has 2"):
        cli._extract(path, {"iofuzz_finding": "hang", "iofuzz_occurrence": 3})
