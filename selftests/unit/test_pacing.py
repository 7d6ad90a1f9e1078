"""Paced ranges (``~E:U``): pauses leave the ops alone, are recorded, replayed, and learnt by guided batches.

Only --dry-run and --limit-loop --dry-run run the executor here: on the host
it must not touch ports.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from avocado_iofuzz.campaign.trace import TraceWriter, read_trace
from avocado_iofuzz.executor.protocol import range_argument
from avocado_iofuzz.guided.batch import Base, Batch, BatchError
from avocado_iofuzz.guided.mutate import PACINGS, pace
from avocado_iofuzz.guided.rng import Stream
from avocado_iofuzz.guided.schedule import BlindSchedule
from avocado_iofuzz.model.program import RangePlan

SCRATCH = ("--scratch", "0x7000000-0x7003fff")
BAR = Base("mmio", 0xFEB80000, 0xFEB9FFFF, 4, "0000:00:02.0 8086:10d3 BAR0")


def run(executor: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(executor), *args], capture_output=True, text=True, timeout=60)


def test_a_paced_range_is_named_with_its_pacing_and_an_unpaced_one_as_before():
    plan = RangePlan(2, 0xC000, 0xC01F, "uhci", 1, 4, 2)
    assert range_argument(plan) == "2:0xc000-0xc01f/2"
    assert range_argument(replace(plan, pause_every=256, pause_us=500)) == "2:0xc000-0xc01f/2~256:500"
    assert range_argument(replace(plan, values="dma", pause_every=64, pause_us=100)).endswith("+dma~64:100")


@pytest.mark.parametrize("every, us", [(-1, 5), (8, 0), (0, 5), (8, 1_000_001)])
def test_a_bad_pacing_is_refused(every, us):
    with pytest.raises(ValueError, match="pacing"):
        RangePlan(0, 0x10, 0x13, "x", 1, 1, pause_every=every, pause_us=us)


def test_pacing_changes_no_op(executor):
    """The executor's ops of a paced range are the unpaced range's, byte for byte, resumed or not."""
    for resume in ([], ["--resume", "0:37"]):
        common = ["--dry-run", "--seed", "9", "--fuzz-count", "30", *resume, *SCRATCH]
        plain = run(executor, *common, "0:0x10-0x17/2+dma")
        paced = run(executor, *common, "0:0x10-0x17/2+dma~16:50")
        assert plain.returncode == paced.returncode == 0, paced.stdout + paced.stderr
        assert paced.stdout == plain.stdout


def test_the_executor_sleeps_as_paced(executor):
    """4000 ops paced 1 ms every 100: 39 pauses (none before op 0), so at least 39 ms; unpaced: far less."""
    args = ["--dry-run", "--limit-loop", "--seed", "1", "--fuzz-count", "998", "--scratch", "0x7000000-0x7003fff"]
    started = time.monotonic()
    assert run(executor, *args, "0:0x10-0x13~100:1000").stdout.strip() == "@DONE 4000"
    assert time.monotonic() - started >= 0.039


@pytest.mark.parametrize("bad", ["0:0x10-0x13~0:5", "0:0x10-0x13~8", "0:0x10-0x13~8:2000000"])
def test_the_executor_refuses_a_bad_pacing(executor, bad):
    result = run(executor, "--dry-run", "--seed", "1", "--fuzz-count", "1", bad)
    assert result.returncode == 2 and "@ERR" in result.stdout + result.stderr


def test_the_trace_records_pacing_and_an_unpaced_range_as_before(tmp_path):
    plans = [RangePlan(0, 0x10, 0x13, "a", 5, 3), RangePlan(1, 0x20, 0x23, "b", 5, 3, pause_every=8, pause_us=40)]
    with TraceWriter(tmp_path / "trace", {}, plans) as writer:
        writer.event("done", total=0)
    text = (tmp_path / "trace").read_text()
    assert text.count("pause_every") == 1  # only the paced range's record
    assert read_trace(tmp_path / "trace").plans == {p.index: p for p in plans}


def test_a_batch_carries_its_pacing_into_its_plan_and_its_record():
    batch = Batch(BAR, BAR.start, BAR.start + 15, 3, 2, pause_every=256, pause_us=500)
    assert (batch.plan(4).pause_every, batch.plan(4).pause_us) == (256, 500)
    assert Batch.from_dict(json.loads(json.dumps(batch.as_dict()))) == batch
    unpaced = Batch(BAR, BAR.start, BAR.start + 15, 3, 2)
    assert "pause_every" not in unpaced.as_dict()  # corpus files of unpaced batches read as before
    with pytest.raises(BatchError, match="pacing"):
        Batch(BAR, BAR.start, BAR.start + 15, 3, 2, pause_every=256)


def test_the_pace_mutation_picks_another_pacing_of_the_menu():
    batch = Batch(BAR, BAR.start, BAR.start + 15, 3, 2)
    seen = set()
    for n in range(64):
        child = pace(batch, Stream(n))
        assert (child.pause_every, child.pause_us) in PACINGS
        assert (child.pause_every, child.pause_us) != (0, 0)
        assert replace(child, pause_every=0, pause_us=0) == batch  # nothing else changes
        seen.add((child.pause_every, child.pause_us))
    assert len(seen) == len(PACINGS) - 1


def test_the_paced_blind_control_sweeps_the_same_ops_with_pauses():
    from avocado_iofuzz.guided.corpus import Corpus

    plain = BlindSchedule([BAR], 1).next_round(3, Corpus("k", "v"), 10_000)
    paced = BlindSchedule([BAR], 1, (1024, 1000)).next_round(3, Corpus("k", "v"), 10_000)
    assert [replace(b, pause_every=0, pause_us=0) for b in paced.batches] == list(plain.batches)
    assert all((b.pause_every, b.pause_us) == (1024, 1000) for b in paced.batches)
