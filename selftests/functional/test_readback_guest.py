"""Read-backs in a real guest: the digest the executor reports for a range is what QEMU's trace of its reads gives.

One busybox guest on ``pc`` with ``-device pc-testdev``: ports 0xe0-0xe3 are
one register that keeps what was written to it, takes 1-, 2- and 4-byte
accesses whole, and that no guest driver touches, so every access QEMU logs
there (``memory_region_ops_read`` and ``_write``, into the ``-trace file=``
log the coverage observer reads and is told to leave alone) is one of the
executor's. A piix3-usb-uhci gives the observer a device with trace events
(a guided run needs coverage on); no op goes to it.

Guided rounds grow programs of fuzz-only steps from a corpus program
(round 0 sweeps the register: reads first). QEMU's accesses are walked in
the order of the rounds' records: each batch's ops, and after a fuzz-only
step its read-backs of the slots it wrote; the round's writes so far give
what the executor remembers writing (``w``). The values QEMU says it returned
give, through the host's copy of the classification
(:mod:`avocado_iofuzz.guided.readback`), a digest per batch: it must equal
what the executor printed in its ``@RB`` line. And the read-back features
the corpus took must come back from the trace alone.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from avocado_iofuzz.campaign.runner import CampaignConfig
from avocado_iofuzz.campaign.trace import TraceWriter, read_trace
from avocado_iofuzz.coverage.backend import probe_backend
from avocado_iofuzz.coverage.catalog import Catalog
from avocado_iofuzz.coverage.run import RunCoverage, trace_args
from avocado_iofuzz.guest.build import default_guest
from avocado_iofuzz.guided import readback
from avocado_iofuzz.guided.batch import Base
from avocado_iofuzz.guided.corpus import Corpus
from avocado_iofuzz.guided.program import step
from avocado_iofuzz.guided.rebuild import rebuild_rounds, rounds_from_trace
from avocado_iofuzz.guided.rounds import GuidedRun, RoundRecord
from avocado_iofuzz.guided.schedule import GuidedSchedule
from avocado_iofuzz.vm.bare import BareQemu

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]

TESTDEV = Base("pio", 0xE0, 0xE3, 1, "pc-testdev 0xe0-0xe3")
SEED = 0x2B0
ROUNDS = 3
ROUND_OPS = 2000
ACCESS = re.compile(
    r"memory_region_ops_(?P<kind>read|write) .*?addr 0x(?P<addr>[0-9a-f]+) value 0x(?P<value>[0-9a-f]+) "
    r"size (?P<size>\d)"
)
Access = tuple[str, int, int, int]  # r|w, port, size, value


def start_corpus() -> Corpus:
    corpus = Corpus("guest-test", "pc-testdev")
    program = (step(TESTDEV, 0xE0, 4, 21, 2, "uniform"), step(TESTDEV, 0xE2, 2, 22, 1, "uniform"),
               step(TESTDEV, 0xE1, 1, 23, 3, "uniform"))  # fmt: skip
    corpus.add(program, ["usb_uhci_reset"])
    return corpus


def qemu_accesses(log: Path, skip_bytes: int) -> list[Access]:
    """The accesses QEMU logged to ports 0xe0-0xe3 after the first ``skip_bytes`` of the log, in order."""
    with log.open("rb") as stream:
        stream.seek(skip_bytes)
        text = stream.read().decode("utf-8", errors="replace")
    seen = []
    for line in text.splitlines():
        match = ACCESS.search(line)
        if match and 0xE0 <= int(match["addr"], 16) <= 0xE3:
            kind = "r" if match["kind"] == "read" else "w"
            seen.append((kind, int(match["addr"], 16), int(match["size"]), int(match["value"], 16)))
    return seen


def digests_from_qemu(records: list[RoundRecord], accesses: list[Access]) -> Iterator[tuple[int, int, tuple]]:
    """Per batch (round, batch index, digest), from QEMU's accesses walked in the records' order.

    Each round is one executor invocation: its memory of writes (``w``) starts empty.
    """
    stream = iter(accesses)
    for record in records:
        latches = readback.Latches()
        for index, plan in enumerate(record.plans):
            reads, written = [], {}
            for number, op in enumerate(plan.ops()):
                kind, port, size, value = next(stream)
                assert (kind, port, size) == (op.kind, op.port, op.width), f"batch {plan.index} op {number}"
                if op.kind == "w":
                    assert value == op.value
                    latches.store(plan.space, op.port, op.width, op.value)
                    written[op.port - plan.start] = op.value
                else:  # only the read phase reads: before the batch's own writes
                    known = latches.last(plan.space, op.port, op.width)
                    reads.append((op.port - plan.start, value, known))
            if plan.fuzz_only:
                for offset in readback.read_back_slots(written):
                    kind, port, size, value = next(stream)
                    assert (kind, port, size) == ("r", plan.start + offset, plan.width), f"read-back of {plan.index}"
                    reads.append((offset, value, latches.last(plan.space, port, size)))
            pairs = readback.digest(
                [(offset, value) for offset, value, _ in reads],
                plan.width,
                {offset: known for offset, _, known in reads if known is not None},
            )
            yield record.round.number, index, pairs
    assert next(stream, None) is None, "QEMU logged accesses no batch made"


@pytest.fixture(scope="module")
def guided(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("readback")
    log = run_dir / "qemu-trace.log"
    extra = [
        "-device", "pc-testdev", "-device", "piix3-usb-uhci",
        "-trace", "memory_region_ops_read", "-trace", "memory_region_ops_write",
        *trace_args(log),  # last: each -trace sets the log file, one without file= back to stderr
    ]  # fmt: skip
    vm = BareQemu(default_guest(), run_dir / "vm", accel="tcg", extra_args=extra)
    start = start_corpus()
    with vm:
        vm.login(120)
        booted = log.stat().st_size  # what the firmware and the kernel did before the run
        catalog = Catalog.load()
        catalog = dataclasses.replace(catalog, bus=tuple(e for e in catalog.bus if not e.startswith("memory_region")))
        qmp = lambda c, a: vm.qmp(c, **a)  # noqa: E731
        coverage = RunCoverage(probe_backend(vm.qemu_binary), ["piix3-usb-uhci"], log, qmp, catalog=catalog)
        trace = TraceWriter(run_dir / "trace.iofuzz", {"test": "read-backs", "seed": SEED})
        config = CampaignConfig(hang_timeout=60.0, login_timeout=120.0)
        run = GuidedRun(vm, GuidedSchedule([TESTDEV], SEED), copy.deepcopy(start), coverage, config, trace,
                        read_backs="all")  # fmt: skip
        try:
            for number in range(ROUNDS):
                run.run_round(ROUND_OPS, last=number == ROUNDS - 1)
        finally:
            run.close()
            trace.close()
    return {"run": run, "log": log, "booted": booted, "trace": run_dir / "trace.iofuzz", "start": start}


def test_the_executors_digests_are_the_ones_qemus_reads_give(guided):
    records: list[RoundRecord] = guided["run"].rounds
    assert len(records) == ROUNDS and all(not r.result.findings for r in records)
    expected = {(number, index): pairs for number, index, pairs in
                digests_from_qemu(records, qemu_accesses(guided["log"], guided["booted"]))}  # fmt: skip
    reported = {(r.round.number, index): pairs for r in records for index, pairs in r.result.readbacks.items()}
    classes = {cls for pairs in reported.values() for _, cls in pairs}
    steps = sum(b.fuzz_only for r in records for b in r.round.batches)
    print(f"{len(reported)} digests ({steps} of fuzz-only steps), classes {sorted(classes)}")
    assert reported == expected
    assert steps and "w" in classes and any(c.startswith("b") for c in classes)  # both kinds of read ran


def test_read_back_features_feed_the_corpus_and_come_back_from_the_trace(guided):
    records: list[RoundRecord] = guided["run"].rounds
    taken = [f for r in records for found in r.new_features.values() for f in found if readback.is_feature(f)]
    assert taken and all(f.startswith(f"rb:{TESTDEV.key()}+0x") for f in taken)
    rounds = rounds_from_trace(read_trace(guided["trace"]).events)
    rebuilt_corpus = copy.deepcopy(guided["start"])
    rebuilt = rebuild_rounds(SEED, [TESTDEV], rebuilt_corpus, rounds)
    assert rebuilt == [r.round for r in records]
    assert rebuilt_corpus.entries == guided["run"].corpus.entries
