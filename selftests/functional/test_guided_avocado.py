"""Guided fuzzing through real avocado runs: the corpus one run saves is the next run's start, and the trace replays.

Two ``avocado run`` of the virtio-blk row, guided as every device row is by
default (no ``fuzz_strategy`` given; about a minute each under TCG): its recipes
reach the device's request paths and trip no known QEMU bug, where the EHCI
row's guided runs now find the known EHCI and usb-storage aborts
(docs/results/findings.rst) often enough to end a run. The events are checked
against QEMU's own list (``-trace help``); the ops against the trace, read back
with the trace reader, and the rounds against the schedule derived again from
the corpus each run started with.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess

import pytest
from avocado_jobs import run_avocado

from avocado_iofuzz.campaign.trace import read_trace
from avocado_iofuzz.guided.corpus import Corpus, load_corpus
from avocado_iofuzz.guided.features import BUCKET_FLOORS, event_of
from avocado_iofuzz.guided.rebuild import (
    bases_from,
    rebuild_rounds,
    recipes_from,
    recipes_from_trace,
    recorded_batches,
    rounds_from_trace,
)

pytestmark = pytest.mark.guest

QEMU = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
ROW = "iofuzz.quick.storage.virtio_blk"
ROW_RECIPES = ["virtio-legacy-queue0", "virtio-blk-requests", "virtio-blk-requests-writethrough"]


def qemu_events() -> set[str]:
    out = subprocess.run([QEMU, "-trace", "help"], capture_output=True, text=True, check=True, timeout=60).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def guided_run(tmp_path, name, corpus_dir, **extra):
    (tmp_path / name).mkdir()
    params = {  # no fuzz_strategy: a device row's default is guided
        "fuzz_seed": "21",
        "fuzz_count": "200",
        "guided_round_ops": "10000",
        "guided_corpus_dir": str(corpus_dir),
        "fuzz_values": "uniform",  # the default: the recipes' pointer steps alone fill the scratch
        # a mutated queue address (a page frame nudged out of the scratch memory) lets the device write
        # into the guest's own memory, which may reboot it: counted in the summary, not this test's subject
        "hang_status": "pass",
        **extra,
    }
    job = run_avocado(ROW, tmp_path / name, params, timeout=900)
    assert job.tests[0]["status"] == "PASS", job.output
    return job


def check_trace_replays(summary):
    """Every batch of every round is a range of the trace, and the reader rebuilds its ops from the record."""
    trace = read_trace(summary["trace"])
    assert trace.header["fuzz_strategy"] == "guided"
    rounds = summary["guided"]["rounds"]
    assert [e.data["round"] for e in trace.events if e.kind == "guided_round"] == [r["round"] for r in rounds]
    for record in rounds:
        for i, batch in enumerate(recorded_batches(record)):
            index = record["first_range"] + i
            plan = batch.plan(index)
            assert trace.plans[index] == plan
            assert list(trace.ops[index]) == list(enumerate(plan.ops()))


def check_rounds_rebuild(summary, start: Corpus, saved: dict | None = None):
    """The rounds derived again from the corpus the run started with: from summary.json, and from the trace alone."""
    guided = summary["guided"]
    bases = bases_from(guided["ranges"])
    from_trace = copy.deepcopy(start)  # the rebuild credits entries: each its own
    rebuilt = rebuild_rounds(summary["seed"], bases, start, guided["rounds"], recipes_from(guided["recipes"]))
    assert [r.batches for r in rebuilt] == [recorded_batches(r) for r in guided["rounds"]]
    events = read_trace(summary["trace"]).events
    again = rebuild_rounds(summary["seed"], bases, from_trace, rounds_from_trace(events), recipes_from_trace(events))
    assert [r.batches for r in again] == [r.batches for r in rebuilt]
    if saved is not None:  # the corpus the run saved is the one its record grows
        assert [e.as_dict() for e in from_trace.entries] == saved["entries"]


def check_recipes_ran(summary, names=ROW_RECIPES):
    """Round 0 ran the row's bring-up recipes (fixed-value steps, four scratch fills each) before its sweeps,
    each pointer step with its recipe's layout: the family's, or one only recipes name."""
    guided = summary["guided"]
    assert [r["name"] for r in guided["recipes"]] == names
    batches = guided["rounds"][0]["batches"]
    assert batches[0]["origin"] == f"recipe:{names[0]}"  # the recipes before the sweeps
    layouts = {"virtio-legacy-queue0": "virtio"}  # the family's; the others name virtio_blk_req
    for recipe in guided["recipes"]:
        steps = [b for b in batches if b["origin"] == f"recipe:{recipe['name']}"]
        assert len(steps) == 4 * len(recipe["writes"])
        assert [b["fixed"] for b in steps[: len(recipe["writes"])]] == [w["value"] for w in recipe["writes"]]
        assert [b["values"] == "dma" for b in steps] == [w["points"] for w in recipe["writes"]] * 4
        layout = layouts.get(recipe["name"], "virtio_blk_req")
        assert {b.get("layout") for b in steps if b["values"] == "dma"} == {layout}


def check_batches_have_their_own_seeds_and_features(summary, events: set[str]):
    """Each batch of a round its own seed; the hit-count features name real events of this QEMU, in AFL buckets."""
    rounds = summary["guided"]["rounds"]
    assert any(len({b["seed"] for b in r["batches"]}) > 1 for r in rounds[1:])
    features = [f for r in rounds for b in r["batches"] for f in b["new_features"]]
    assert features  # round 0's sweeps alone fire events some number of times
    for spelled in features:  # event#floor, or event(arg=value)#floor for an event of the [arguments] table
        floor = spelled.rpartition("#")[2]
        assert event_of(spelled) in events and int(floor) in BUCKET_FLOORS, spelled


def test_a_second_guided_run_starts_from_the_corpus_the_first_saved(tmp_path):
    corpus_dir = tmp_path / "corpora"
    events = qemu_events()
    first = guided_run(tmp_path, "first", corpus_dir)
    one = first.summary()
    assert one["fuzz_strategy"] == "guided"
    rounds = [(r["ops_asked"], r["ops_done"]) for r in one["guided"]["rounds"]]
    assert one["guided"]["corpus_loaded"] == 0 and len(rounds) >= 3, (one["guided"]["ops_budget"], rounds)
    assert one["coverage"]["enabled"] and one["coverage"]["events_reached"] > 0
    assert set(one["coverage"]["events"]) <= events  # real events of this QEMU
    corpus_file = next(corpus_dir.glob("corpus/qemu-*/*.json"))
    saved = json.loads(corpus_file.read_text())
    assert saved["key"] == "pc-virtio-blk-pci"  # per machine and devices
    assert 0 < len(saved["entries"]) == one["guided"]["corpus_entries"]
    reached = {e for entry in saved["entries"] for e in entry["events"]}
    assert reached <= set(one["coverage"]["events"])
    check_trace_replays(one)
    check_recipes_ran(one)
    check_batches_have_their_own_seeds_and_features(one, events)
    check_rounds_rebuild(one, Corpus(saved["qemu_version"], saved["key"]), saved)
    start_of_second = corpus_file.read_bytes()

    # the second run leaves a recipe out, as QE does with one that trips a bug already reported: its
    # corpus, loaded, still holds the first run's programs of that recipe
    second = guided_run(tmp_path, "second", corpus_dir, guided_recipes_skip="virtio-blk-requests-writethrough")
    two = second.summary()
    assert two["guided"]["corpus_loaded"] == len(saved["entries"])
    log = (second.test_dir() / "debug.log").read_text()
    assert "guided: bring-up recipes left out (guided_recipes_skip): virtio-blk-requests-writethrough" in log
    assert [r["name"] for r in two["guided"]["recipes"]] == ROW_RECIPES[:2]
    assert f"guided: loaded {len(saved['entries'])} program(s)" in log
    assert set(two["coverage"]["events"]) <= events
    assert any(r["parent"] is not None for r in two["guided"]["rounds"])  # it grew from the loaded corpus
    check_trace_replays(two)
    (tmp_path / "start.json").write_bytes(start_of_second)
    start, _ = load_corpus(tmp_path / "start.json", saved["qemu_version"], saved["key"])
    check_rounds_rebuild(two, start)


# requests the device took from a queue in memory we filled: which a device whose queue address is a
# uniform value (a page of the guest's own RAM, or nothing) does not report
VIRTIO_BLK_DEEP_EVENTS = ("virtio_blk_handle_read", "virtio_blk_handle_write", "virtio_blk_req_complete",
                          "virtio_blk_submit_multireq")  # fmt: skip


def qemu_trace_events(job) -> set[str]:
    """The event names in the QEMU's own trace log (``-trace file=``), the coverage's raw input."""
    log = job.data_file("qemu-trace.log")
    names = set()
    for line in log.read_text(errors="replace").splitlines():
        match = re.match(r"^(?:\d+@\d+\.\d+:)?([a-z0-9_]+) ", line)
        if match:
            names.add(match.group(1))
    return names


def test_a_uniform_guided_run_runs_the_recipes_and_qemu_traces_their_deep_events(tmp_path):
    """fuzz_values = uniform (the default): round 0 still runs the recipes, their pointer steps alone fill."""
    job = guided_run(tmp_path, "uniform", tmp_path / "corpora")
    summary = job.summary()
    guided = summary["guided"]
    assert {r["values"] for r in guided["ranges"]} == {"uniform"}, guided["ranges"]
    check_recipes_ran(summary)
    sweeps = [b for r in guided["rounds"] for b in r["batches"] if b["origin"] in ("sweep", "fresh")]
    assert sweeps and all(b["values"] == "uniform" and "layout" not in b for b in sweeps)
    check_trace_replays(summary)  # the pointer steps' plans in the trace carry dma and their layout
    trace = read_trace(summary["trace"])
    assert trace.header["scratch"]["kernel_param"] in trace.header["qemu_cmdline"]
    dma_plans = [p for p in trace.plans.values() if p.values == "dma"]
    assert dma_plans and {p.layout for p in dma_plans} == {"virtio", "virtio_blk_req"}
    # QEMU's own trace: the device took requests from the queue the recipes pointed it at
    reached = qemu_trace_events(job)
    assert reached & set(VIRTIO_BLK_DEEP_EVENTS), sorted(e for e in reached if e.startswith("virtio"))
    # ... and the run credits them to a program that carries a recipe's scratch fill (round 0's recipe
    # programs, or one grown from them)
    credited = []
    for record in guided["rounds"]:
        batches, first_index = record["batches"], 0
        for length in record["programs"]:
            program = batches[first_index : first_index + length]
            first_index += length
            if any(set(b["new_events"]) & set(VIRTIO_BLK_DEEP_EVENTS) for b in program):
                credited.append(any(b["values"] == "dma" and b.get("layout") for b in program))
    assert credited and all(credited), credited
    log = (job.test_dir() / "debug.log").read_text()
    assert "guided: bring-up recipes: virtio-legacy-queue0 on" in log


def test_a_recipe_name_the_table_lacks_is_refused_before_qemu_starts(tmp_path):
    params = {"guided_recipes_skip": "virtio-blk-requests virtio-blk-reqs"}
    job = run_avocado(ROW, tmp_path, params, timeout=300)
    assert job.tests[0]["status"] == "ERROR", job.output
    reason = job.tests[0]["fail_reason"]
    assert "param guided_recipes_skip: no recipe named virtio-blk-reqs (recipes: virtio-legacy-queue0," in reason
    assert not (job.test_dir() / "qemu-output-vm1.log").exists()  # no QEMU was started (it writes there)


def test_guided_without_coverage_says_so_and_fuzzes_blind(tmp_path):
    params = {"iofuzz_coverage": "no", "fuzz_seed": "21",
              "guided_corpus_dir": str(tmp_path / "corpora")}  # fmt: skip
    job = run_avocado(ROW, tmp_path, params, timeout=600)
    assert job.tests[0]["status"] == "PASS", job.output
    summary = job.summary()
    assert summary["fuzz_strategy"] == "blind" and "guided" not in summary
    assert summary["coverage"]["enabled"] is False
    log = (job.test_dir() / "debug.log").read_text()
    assert "fuzz_strategy = guided needs device coverage, which is off (switched off (iofuzz_coverage))" in log
    assert not (tmp_path / "corpora").exists()  # a blind run keeps no corpus
