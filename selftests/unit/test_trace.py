"""The write-ahead trace: round trip, windows, compact and listed ops, thinned marks, truncated and garbage files."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avocado_iofuzz.campaign.trace import TraceError, TraceWriter, read_trace
from avocado_iofuzz.model.program import RangePlan, plan_ranges

PLANS = plan_ranges(31337, [(0x60, 0x64, "keyboard"), (0x70, 0x71, "rtc"), (0x3F8, 0x3FF, "serial port")], 6)
HEADER = {"qemu": "qemu-system-x86_64 -M pc -nodefaults", "machine": {"type": "pc", "mem": 256}}


def write_full_run(path: Path, listed: bool = False) -> None:
    with TraceWriter(path, HEADER, PLANS, mark_interval=0) as writer:
        for plan in PLANS:
            writer.write_ops(plan, 0, plan.op_count, listed=listed)
            for done in range(0, plan.op_count, 16):
                writer.progress(plan.index, done)
            writer.progress(plan.index, plan.op_count)
        writer.event("done", total=sum(p.op_count for p in PLANS))


@pytest.mark.parametrize("listed", [False, True], ids=["compact", "listed"])
def test_round_trip(tmp_path, listed):
    path = tmp_path / "trace"
    write_full_run(path, listed)
    trace = read_trace(path)
    assert trace.header["qemu"] == HEADER["qemu"]
    assert trace.header["machine"] == HEADER["machine"]
    assert trace.header["seed"] == 31337 and trace.header["fuzz_count"] == 6
    assert [r[:3] for r in trace.header["ranges"]] == [[p.index, p.start, p.end] for p in PLANS]
    assert trace.plans == {p.index: p for p in PLANS}
    for plan in PLANS:
        assert trace.ops[plan.index] == list(enumerate(plan.ops()))
        assert trace.last_done(plan.index) == plan.op_count
        assert trace.window(plan.index) == (plan.op_count, plan.op_count)
    assert [e.kind for e in trace.events] == ["done"]
    assert trace.events[0].data["total"] == sum(p.op_count for p in PLANS)
    assert trace.last_progress.range_index == 2
    assert trace.truncated_tail is None and trace.incomplete_batch is None


def test_listed_ops_cost_about_eight_bytes_each(tmp_path):
    plan = RangePlan(0, 0x0, 0xFFF, "big", 5, 50)
    path = tmp_path / "trace"
    with TraceWriter(path, {}) as writer:
        writer.write_ops(plan, 0, plan.op_count, listed=True)
    assert path.stat().st_size / plan.op_count < 9


def test_compact_size_does_not_grow_with_the_op_count(tmp_path):
    sizes = []
    for fuzz_count in (1, 10**6):
        plan = RangePlan(0, 0x0, 0xFFF, "big", 5, fuzz_count)
        path = tmp_path / f"trace{fuzz_count}"
        with TraceWriter(path, {}) as writer:
            writer.write_ops(plan, 0, plan.op_count)
        sizes.append(path.stat().st_size)
        trace = read_trace(path)
        assert len(trace.ops[0]) == plan.op_count
        assert trace.ops[0][-1] == (plan.op_count - 1, plan.op(plan.op_count - 1))
    assert sizes[1] - sizes[0] <= 12  # only the digits of fuzz_count and of the op count grow


def test_window_is_written_but_unconfirmed(tmp_path):
    path = tmp_path / "trace"
    plan = PLANS[2]  # 64 ops
    with TraceWriter(path, HEADER, PLANS, mark_interval=0) as writer:
        writer.write_ops(plan, 0, 40)
        writer.progress(2, 0)
        writer.progress(2, 16)
        assert read_trace(path).window(2) == (16, 40)
        writer.event("hang", range=2, window=[16, 32])
        writer.event("reset")
        writer.write_ops(plan, 32, 64)  # resume after the hung window
        assert read_trace(path).window(2) == (32, 64)
        writer.progress(2, 32)
        writer.progress(2, 48)
    trace = read_trace(path)
    assert trace.window(2) == (48, 64)
    assert trace.last_done(2) == 48
    assert trace.last_done(0) is None
    assert [i for i, _ in trace.ops[2]] == list(range(64))  # overlapping batches kept once
    assert [(e.kind, e.data.get("window")) for e in trace.events] == [("hang", [16, 32]), ("reset", None)]
    with pytest.raises(ValueError, match="no ops of range 0 were written"):
        trace.window(0)


def test_ops_are_durable_before_write_ops_returns(tmp_path):
    path = tmp_path / "trace"
    writer = TraceWriter(path, HEADER)
    writer.write_ops(PLANS[0], 0, 10)
    # read by another reader while the writer is still open (as if the host died now)
    assert [i for i, _ in read_trace(path).ops[0]] == list(range(10))
    writer.close()


def test_truncated_final_line(tmp_path):
    path = tmp_path / "trace"
    write_full_run(path, listed=True)
    text = path.read_text()
    cut = text.index("\nw", text.index("B 2 ")) + 3  # inside an op line of the last batch
    path.write_text(text[:cut])
    line = text[:cut].count("\n") + 1
    with pytest.raises(TraceError, match=rf"^{re.escape(str(path))}:{line}: truncated final line"):
        read_trace(path)
    trace = read_trace(path, allow_truncated_tail=True)
    assert trace.truncated_tail == text[cut - 2 : cut]
    assert trace.incomplete_batch is not None and trace.incomplete_batch.range_index == 2
    written = len(trace.ops[2])
    assert 0 < written < PLANS[2].op_count
    assert trace.window(2) == (0, written)
    assert trace.window(0) == (PLANS[0].op_count,) * 2


def test_batch_cut_at_line_boundary(tmp_path):
    path = tmp_path / "trace"
    write_full_run(path, listed=True)
    lines = path.read_text().splitlines(keepends=True)
    batch_line = next(i for i, line in enumerate(lines) if line.startswith("B 1 "))
    path.write_text("".join(lines[: batch_line + 3]))  # the batch and two of its ops
    with pytest.raises(TraceError, match=r":\d+: file ends inside the batch of line \d+.*ops from 2 on are missing"):
        read_trace(path)
    assert read_trace(path, allow_truncated_tail=True).window(1) == (0, 2)


def garbage_cases(path: Path) -> list[tuple[str, int, str]]:
    """(file text, line of the error, message) for malformed traces."""
    good = path.read_text().splitlines(keepends=True)
    header, r0 = good[0], good[1]
    batch = "B 0 0 3\nr60\nr61\nr62\n"
    return [
        ("hello\n", 1, "not an iofuzz trace"),
        ("#IOFUZZ-TRACE {bad json\n", 1, "header: bad JSON"),
        ('#IOFUZZ-TRACE {"format": 9}\n', 1, "trace format 9 is not supported"),
        ('#IOFUZZ-TRACE {"format": 2, "generator": "0123"}\n' + r0, 2, "range 0 needs the op generator's ops"),
        (header.replace('"format": 2', '"format": 1') + r0 + "G 0 0 3\n", 3, "unknown record 'G 0 0 3'"),
        (header + r0 + "G 0 x 3\n", 3, "batch record must be 'G <range_index>"),
        (header + r0 + "G 0 0 999\n", 3, "not within range 0's ops"),
        ("#IOFUZZ-TRACE [1]\n", 1, "expected a JSON object"),
        (header + "X 1 2\n", 2, "unknown record 'X 1 2'"),
        (header + "\n", 2, "unknown record"),
        (header + "B 0 0 3\n", 2, "range 0 has no range record"),
        (header + r0 + "r60\n", 3, "outside a batch"),
        (header + r0 + "B 0 0 3\nr60\nP 0 1\n", 5, "announced ops 0..2 of range 0, but op 1 is followed by 'P 0 1'"),
        (header + r0 + "B 0 0 3\nr60\nr6g\n", 5, "bad op record 'r6g'"),
        (header + r0 + "B 0 0 3\nr60\nr62\n", 5, "op 1 of range 0 is 'r62', but the generator gives 'r61'"),
        (header + r0 + "B 0 0 999\n", 3, "not within range 0's ops"),
        (header + r0 + "B 0 x 3\n", 3, "batch record must be"),
        (header + r0 + batch + "P 0 99\n", 7, f"exceeds its {PLANS[0].op_count} ops"),
        (header + r0 + batch + "P 1 0\n", 7, "range 1 has no range record"),
        (header + r0 + batch + "P 0\n", 7, "progress record must be"),
        (header + r0 + batch + 'E {"t": 1}\n', 7, "lacks a string 'kind'"),
        (header + 'R {"index": 0}\n', 2, "missing fields"),
        (header + r0.replace('"end": 100', '"end": 90'), 2, "start 0x60 is greater than end 0x5a"),
        (header + r0 + r0.replace("keyboard", "kbd"), 3, "contradicts the earlier one"),
    ]


def test_garbage_is_reported_with_path_and_line(tmp_path):
    good = tmp_path / "good"
    write_full_run(good, listed=True)
    for n, (text, line, message) in enumerate(garbage_cases(good)):
        path = tmp_path / f"bad{n}"
        path.write_text(text)
        with pytest.raises(TraceError) as info:
            read_trace(path)
        assert str(info.value).startswith(f"{path}:{line}: "), (text, str(info.value))
        assert message in str(info.value), (text, str(info.value))


def test_binary_and_empty_files(tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(TraceError, match=rf"^{re.escape(str(empty))}:1: empty file"):
        read_trace(empty)
    binary = tmp_path / "binary"
    binary.write_bytes(b"#IOFUZZ-TRACE {}\n\xff\xfe\x00garbage\n")
    with pytest.raises(TraceError, match=rf"^{re.escape(str(binary))}:2: not UTF-8"):
        read_trace(binary)
    with pytest.raises(TraceError, match=r":0: cannot read trace"):
        read_trace(tmp_path / "missing")


def test_verify_can_be_skipped_for_speed(tmp_path):
    good = tmp_path / "good"
    write_full_run(good, listed=True)
    lines = good.read_text().splitlines(keepends=True)
    first_write = next(i for i, line in enumerate(lines) if line.startswith("w6"))
    lines[first_write] = "w60 ff\n" if lines[first_write] != "w60 ff\n" else "w60 fe\n"
    good.write_text("".join(lines))
    with pytest.raises(TraceError, match="but the generator gives"):
        read_trace(good)
    assert read_trace(good, verify=False).plans == {p.index: p for p in PLANS}


def test_writer_rejects_bad_input(tmp_path):
    path = tmp_path / "trace"
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        TraceWriter(path, {"qemu": object()})
    with pytest.raises(ValueError, match="'generator' is reserved"):
        TraceWriter(path, {"generator": "mine"})
    with pytest.raises(ValueError, match="mark_interval must be >= 0"):
        TraceWriter(path, {}, mark_interval=-1)
    with pytest.raises(ValueError, match="contradicts the plans"):
        TraceWriter(tmp_path / "t2", {"seed": 1}, PLANS)
    with TraceWriter(path, HEADER) as writer:
        with pytest.raises(ValueError, match=r"op slice 0\.\.999"):
            writer.write_ops(PLANS[0], 0, 999)
        with pytest.raises(ValueError, match="range 1, which has no ops"):
            writer.progress(1, 0)
        with pytest.raises(ValueError, match="lowercase word"):
            writer.event("Hang!")
        with pytest.raises(ValueError, match="reserved keys"):
            writer.event("hang", kind="x")
        writer.write_ops(PLANS[0], 0, 1)
        with pytest.raises(ValueError, match="was recorded as"):
            writer.write_ops(RangePlan(0, 0x70, 0x71, "other", 1, 1), 0, 1)
    with pytest.raises(FileExistsError):
        TraceWriter(path, HEADER)  # never clobber an earlier trace
    assert read_trace(path).header["qemu"] == HEADER["qemu"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**64 - 1),
    fuzz_count=st.integers(0, 4),
    bounds=st.lists(st.tuples(st.integers(0, 0xFF00), st.integers(0, 30)), min_size=1, max_size=3),
    cuts=st.lists(st.floats(0, 1), max_size=3),
    name=st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), max_size=12),
)
def test_round_trip_random(tmp_path_factory, seed, fuzz_count, bounds, cuts, name):
    plans = plan_ranges(seed, [(s, s + n, name) for s, n in bounds], fuzz_count)
    path = tmp_path_factory.mktemp("trace") / "t"
    header = {"note": name, "nested": {"list": [1, 2.5, None, name]}}
    with TraceWriter(path, header, plans) as writer:
        for plan in plans:
            points = sorted({0, plan.op_count, *(int(c * plan.op_count) for c in cuts)})
            for n, (first, stop) in enumerate(itertools.pairwise(points)):
                writer.write_ops(plan, first, stop, listed=bool(n % 2))
                writer.progress(plan.index, stop)
            writer.event("range_done", index=plan.index, name=name)
    trace = read_trace(path)
    assert {k: trace.header[k] for k in header} == json.loads(json.dumps(header))
    assert trace.plans == {p.index: p for p in plans}
    for plan in plans:
        assert trace.ops[plan.index] == list(enumerate(plan.ops()))
    assert [e.data["name"] for e in trace.events] == [name] * len(plans)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def marks_on_disk(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.startswith("P ")]


def test_marks_are_thinned_but_never_reordered_or_lost_on_close(tmp_path):
    path = tmp_path / "trace"
    clock = FakeClock()
    plan = PLANS[2]  # 64 ops
    writer = TraceWriter(path, HEADER, PLANS, mark_interval=1.0, clock=clock)
    writer.write_batches([(p, 0, p.op_count) for p in PLANS])
    writer.progress(2, 0)  # the first mark is written at once
    for done in (8, 16, 24):
        clock.now += 0.1
        writer.progress(2, done)  # within the interval: held, each replacing the last
    assert marks_on_disk(path) == ["P 2 0"]
    clock.now += 1.0
    writer.progress(2, 32)  # due
    assert marks_on_disk(path) == ["P 2 0", "P 2 32"]
    writer.progress(2, 40)  # held ...
    writer.event("hang", range=2, window=[40, 48])  # ... and written before the event
    lines = path.read_text().splitlines()
    assert lines[-2:] == ["P 2 40", lines[-1]] and lines[-1].startswith("E ")
    writer.progress(2, 48)
    writer.progress(2, plan.op_count)  # a range's last mark is never held
    assert marks_on_disk(path)[-1] == f"P 2 {plan.op_count}"
    writer.progress(0, 1)
    writer.close()  # a held mark goes out on close
    assert marks_on_disk(path)[-1] == "P 0 1"
    trace = read_trace(path)
    assert trace.last_done(2) == plan.op_count and trace.last_done(0) == 1


def test_a_held_mark_of_another_range_goes_out_first(tmp_path):
    path = tmp_path / "trace"
    clock = FakeClock()
    with TraceWriter(path, HEADER, PLANS, mark_interval=5.0, clock=clock) as writer:
        writer.write_batches([(p, 0, p.op_count) for p in PLANS])
        writer.progress(0, 0)
        writer.progress(0, 4)  # held
        writer.progress(1, 0)  # another range: range 0's held mark is written first
        assert marks_on_disk(path) == ["P 0 0", "P 0 4"]
    assert marks_on_disk(path) == ["P 0 0", "P 0 4", "P 1 0"]


def test_host_death_loses_only_held_marks_and_the_window_still_holds_the_op_in_flight(tmp_path):
    path = tmp_path / "trace"
    clock = FakeClock()
    plan = PLANS[0]
    writer = TraceWriter(path, HEADER, PLANS, mark_interval=1.0, clock=clock)
    writer.write_ops(plan, 0, plan.op_count)
    writer.progress(0, 0)
    clock.now += 0.5
    writer.progress(0, 16)  # held: lost when the host dies now (the writer is never closed)
    in_flight = 20
    first, stop = read_trace(path).window(0)
    assert (first, stop) == (0, plan.op_count) and first <= in_flight < stop
    writer.close()


def test_write_batches_is_one_durable_write(tmp_path):
    path = tmp_path / "trace"
    writer = TraceWriter(path, HEADER)
    writer.write_batches([(PLANS[0], 0, 5), (PLANS[1], 0, PLANS[1].op_count)])
    trace = read_trace(path)  # read while the writer is open, as if the host died now
    assert [(b.range_index, b.first, b.stop) for b in trace.batches] == [(0, 0, 5), (1, 0, PLANS[1].op_count)]
    assert [i for i, _ in trace.ops[0]] == list(range(5))
    with pytest.raises(ValueError, match=r"op slice 3\.\.99"):
        writer.write_batches([(PLANS[2], 0, 1), (PLANS[0], 3, 99)])
    writer.close()
    assert 2 not in read_trace(path).plans  # nothing of a rejected call was written


def test_generator_fingerprint_guards_compact_batches(tmp_path):
    path = tmp_path / "trace"
    write_full_run(path)
    text = path.read_text()
    fingerprint = read_trace(path).header["generator"]
    assert re.fullmatch(r"[0-9a-f]{16}", fingerprint)
    header = json.loads(text.split("\n", 1)[0].removeprefix("#IOFUZZ-TRACE "))
    header.update(generator="feedfacefeedface", generator_parts={"ops": "feedfacefeedface"})
    path.write_text("#IOFUZZ-TRACE " + json.dumps(header) + "\n" + text.split("\n", 1)[1])
    with pytest.raises(TraceError, match=r":2: range 0 needs the op generator.s ops, which this avocado-iofuzz"):
        read_trace(path)
    trace = read_trace(path, verify=False)  # plans, marks and events stay readable
    assert trace.plans == {p.index: p for p in PLANS}


def test_format_1_traces_stay_readable(tmp_path):
    path = tmp_path / "trace"
    plan = PLANS[1]
    record = json.dumps({name: getattr(plan, name) for name in ("index", "start", "end", "name", "seed",
                                                                "fuzz_count", "width", "space")})  # fmt: skip
    ops = "".join(f"r{op.port:x}\n" if op.kind == "r" else f"w{op.port:x} {op.value:x}\n" for op in plan.ops())
    path.write_text(f'#IOFUZZ-TRACE {{"format": 1}}\nR {record}\nB 1 0 {plan.op_count}\n{ops}P 1 {plan.op_count}\n')
    trace = read_trace(path)
    assert trace.ops[1] == list(enumerate(plan.ops()))
    assert trace.batches[0].listed and trace.last_done(1) == plan.op_count
