"""Guided programs in a real guest: QEMU's own trace shows each program's register writes in the order recorded.

One busybox guest on ``pc`` with ``-device pc-testdev``: ports 0xe0-0xe3 are
one register that takes 1-, 2- and 4-byte accesses whole and that no guest
driver touches, so every access QEMU logs there (``memory_region_ops_write``,
enabled from the start into the same ``-trace file=`` log the coverage
observer reads, which is told to leave it alone) is one of the executor's. A piix3-usb-uhci gives the coverage
observer a device with trace events (a guided run needs coverage on); no op
goes to it.

The guided round driver runs rounds whose programs grow from a corpus
program of steps on the testdev register at widths 1, 2 and 4 (fuzz-only:
no read or zero write between them). The writes QEMU logged must be the
rounds' batches' writes, in the order of the rounds' records -- every program
element by element, every step's values as the model computes them -- and the
trace the run wrote must rebuild the same rounds.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import shutil
from pathlib import Path

import pytest

from avocado_iofuzz.campaign.runner import CampaignConfig
from avocado_iofuzz.campaign.trace import TraceWriter, read_trace
from avocado_iofuzz.coverage.backend import probe_backend
from avocado_iofuzz.coverage.catalog import Catalog
from avocado_iofuzz.coverage.run import RunCoverage, trace_args
from avocado_iofuzz.guest.build import default_guest
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
SEED = 0x9A0
ROUNDS = 4
ROUND_OPS = 3000
WRITE = re.compile(
    r"memory_region_ops_write .*?addr 0x(?P<addr>[0-9a-f]+) value 0x(?P<value>[0-9a-f]+) size (?P<size>\d)"
)
Write = tuple[int, int, int]  # port, size, value


def start_corpus() -> Corpus:
    corpus = Corpus("guest-test", "pc-testdev")
    program = (step(TESTDEV, 0xE0, 1, 11, 2, "uniform"), step(TESTDEV, 0xE2, 2, 12, 1, "uniform"),
               step(TESTDEV, 0xE0, 4, 13, 3, "uniform"), step(TESTDEV, 0xE1, 1, 14, 1, "uniform"))  # fmt: skip
    corpus.add(program, ["usb_uhci_reset"])
    return corpus


def qemu_writes(log: Path) -> list[Write]:
    """The writes QEMU logged to ports 0xe0-0xe3, in order."""
    seen = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        match = WRITE.search(line)
        if match and 0xE0 <= int(match["addr"], 16) <= 0xE3:
            seen.append((int(match["addr"], 16), int(match["size"]), int(match["value"], 16)))
    return seen


def recorded_writes(records: list[RoundRecord]) -> list[Write]:
    return [
        (op.port, op.width, op.value)
        for record in records
        for plan in record.plans
        for op in plan.ops()
        if op.kind == "w"
    ]


@pytest.fixture(scope="module")
def guided(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("guided-programs")
    log = run_dir / "qemu-trace.log"
    extra = [
        "-device",
        "pc-testdev",
        "-device",
        "piix3-usb-uhci",
        "-trace",
        "memory_region_ops_write",
        *trace_args(log),  # last: each -trace sets the log file, one without file= back to stderr
    ]
    vm = BareQemu(default_guest(), run_dir / "vm", accel="tcg", extra_args=extra)
    start = start_corpus()
    with vm:
        vm.login(120)
        # the observer leaves memory_region_ops_* alone: as bus events it would switch them off as background
        catalog = Catalog.load()
        catalog = dataclasses.replace(catalog, bus=tuple(e for e in catalog.bus if not e.startswith("memory_region")))
        qmp = lambda c, a: vm.qmp(c, **a)  # noqa: E731
        coverage = RunCoverage(probe_backend(vm.qemu_binary), ["piix3-usb-uhci"], log, qmp, catalog=catalog)
        trace = TraceWriter(run_dir / "trace.iofuzz", {"test": "guided programs", "seed": SEED})
        config = CampaignConfig(hang_timeout=60.0, login_timeout=120.0)
        run = GuidedRun(vm, GuidedSchedule([TESTDEV], SEED), copy.deepcopy(start), coverage, config, trace)
        logins: list[float] = []
        login = vm.login
        vm.login = lambda timeout: logins.append(timeout) or login(timeout)  # type: ignore[method-assign]
        try:
            for number in range(ROUNDS):
                run.run_round(ROUND_OPS, last=number == ROUNDS - 1)
        finally:
            run.close()
            trace.close()
    return {"run": run, "log": log, "trace": run_dir / "trace.iofuzz", "start": start, "logins": len(logins)}


def test_qemu_saw_every_programs_writes_in_the_recorded_order(guided):
    records: list[RoundRecord] = guided["run"].rounds
    assert len(records) == ROUNDS and all(not r.result.findings for r in records)
    programs = [program for record in records[1:] for _, program in record.round.spans()]
    steps = [p for p in programs if len(p) > 2 and all(e.fuzz_only for e in p)]
    # programs of several fuzz-only steps at more than one register and width ran: order is visible
    assert steps and any(len({(e.start, e.width) for e in p}) > 2 for p in steps)
    seen, wanted = qemu_writes(guided["log"]), recorded_writes(records)
    print(f"{len(programs)} programs, {len(steps)} of steps only; QEMU logged {len(seen)} testdev writes")
    assert seen == wanted
    assert guided["logins"] == 1  # round 0 logged in; each later round went on in the shell the last handed back


def test_the_trace_rebuilds_the_rounds_with_their_programs(guided):
    records: list[RoundRecord] = guided["run"].rounds
    events = read_trace(guided["trace"]).events
    rounds = rounds_from_trace(events)
    assert [r["programs"] for r in rounds] == [list(r.round.program_lengths) for r in records]
    rebuilt = rebuild_rounds(SEED, [TESTDEV], guided["start"], rounds)
    assert rebuilt == [r.round for r in records]
