"""summary.json's rerun command, run for real: it fuzzes exactly its range again, op for op.

One avocado job fuzzes the e1000 row (``iofuzz.quick.nic.e1000``: the NIC's
I/O BAR, its memory BAR and its config space) with weighted kinds, so each
kind has its own fuzz count, ports at three widths (the default
``pio_widths``) and MMIO at two, so ranges of one kind cover the same BAR,
and a config hole, so the NIC's config space is two ranges of one name.
From its summary, one range of each kind is picked, the ports at 4 bytes,
the MMIO one at the narrower width and the config range after the hole; each one's printed
rerun command is parsed and run as a job of its own. Each rerun must fuzz
that one range and nothing else, in the same variant, with the trace's range
record (bounds, width, kind, seed, fuzz count) and every op it lists equal to
the first run's for that range.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
from avocado_jobs import JobResult, run_avocado

from avocado_iofuzz.campaign.trace import Trace, read_trace

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]

VARIANT = "iofuzz.quick.nic.e1000"
RUN_PARAMS = {
    "fuzz_seed": "20261125",
    "fuzz_strategy": "blind",  # every range planned up front, whole (the row's default, guided, plans batches)
    # weights: pio, mmio and pci ranges each get another fuzz count than quick's 2
    "fuzz_kinds": "pio:2 mmio:1 pci:3",
    "mmio_widths": "2 4",
    # the BAR's first 256 bytes (CTRL to IMC): a few hundred ops per range keep the jobs short
    "mmio_max_size": "0x100",
    # the BARs: the config space becomes two ranges, 0x00-0x0f and 0x20-0xff, both named after the NIC
    "skip_pci_config": "8086:100e@0x10-0x1f",
    # watched, not planned: must not be carried into the rerun command
    "hang_timeout": "30",
}


def parse_command(command: str) -> tuple[str, dict[str, str]]:
    """``avocado run REF --vt-extra-params K=V ...`` as (REF, {K: V}), refusing anything else."""
    words = shlex.split(command)
    assert words[:2] == ["avocado", "run"] and len(words) % 2 == 1, command
    params = {}
    for flag, item in zip(words[3::2], words[4::2], strict=True):
        assert flag == "--vt-extra-params", command
        key, sep, value = item.partition("=")
        assert sep and key not in params, command
        params[key] = value
    return words[2], params


def range_record(trace: Trace, index: int) -> dict[str, Any]:
    """What the trace records of a range: its plan, and its ops (count, first, last, digest of all)."""
    plan = trace.plans[index]
    ops = trace.ops[index]
    digest = hashlib.sha256()
    for op_index, op in ops:
        digest.update(f"{op_index} {op.kind} {op.space} {op.port:x} {op.width} {op.value:x}\n".encode())
    return {
        "plan": (plan.space, plan.start, plan.end, plan.width, plan.fuzz_count, plan.seed),
        "ops": len(ops),
        "first": ops[0],
        "last": ops[-1],
        "digest": digest.hexdigest(),
        "done": trace.last_done(index),
    }


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> JobResult:
    job = run_avocado(VARIANT, tmp_path_factory.mktemp("first"), RUN_PARAMS, timeout=300)
    assert job.tests[0]["status"] == "PASS", job.output
    return job


def pick(summary: dict[str, Any], space: str) -> dict[str, Any]:
    """The range of ``space`` a plain name selection would get wrong: narrow MMIO, the 2nd config piece, the
    I/O BAR at 4 bytes (its name carries the width, its span is the 1- and 2-byte ranges' span)."""
    ranges = [r for r in summary["ranges"] if r["space"] == space]
    assert ranges, summary["ranges"]
    return min(ranges, key=lambda r: r["width"]) if space == "mmio" else ranges[-1]


def test_every_range_has_a_rerun_in_its_variant(first_run: JobResult):
    summary = first_run.summary()
    assert summary["format"] == 4 and summary["findings"] == []
    spaces = [r["space"] for r in summary["ranges"]]
    # the I/O BAR at pio_widths' 1, 2 and 4 bytes
    assert spaces == ["pio", "pio", "pio", "mmio", "mmio", "pci", "pci"], summary["ranges"]
    counts = {r["space"]: r["range_fuzz_count"] for r in summary["ranges"]}
    assert len(set(counts.values())) == 3, counts  # the weights gave each kind its own fuzz count
    for rng in summary["ranges"]:
        reference, params = parse_command(rng["rerun"])
        assert reference == VARIANT and params == rng["rerun_params"], rng
        assert params["fuzz_kinds"] == rng["space"] and params["fuzz_count"] == str(rng["range_fuzz_count"])
        assert "hang_timeout" not in params and "rerun_note" not in rng
    # two ranges share the NIC's name: the commands differ by the registers they leave
    configs = [parse_command(r["rerun"])[1] for r in summary["ranges"] if r["space"] == "pci"]
    assert configs[0]["only_pci"] == configs[1]["only_pci"]
    assert configs[0]["skip_pci_config"] != configs[1]["skip_pci_config"]


@pytest.mark.parametrize("space", ["pio", "mmio", "pci"])
def test_the_rerun_command_fuzzes_exactly_its_range_again(first_run: JobResult, tmp_path: Path, space: str):
    chosen = pick(first_run.summary(), space)
    reference, params = parse_command(chosen["rerun"])
    rerun = run_avocado(reference, tmp_path, params, timeout=300)

    test = rerun.tests[0]
    assert len(rerun.tests) == 1 and test["status"] == "PASS", rerun.output
    assert test["name"].endswith(VARIANT)
    summary = rerun.summary()
    assert len(summary["ranges"]) == 1, summary["ranges"]
    again = summary["ranges"][0]
    for key in ("space", "span", "width", "range_fuzz_count", "ops_planned"):
        assert again[key] == chosen[key], key
    assert again["ops_done"] == again["ops_planned"] == chosen["ops_done"]

    first_trace = read_trace(first_run.data_file("trace.iofuzz"))
    rerun_trace = read_trace(rerun.data_file("trace.iofuzz"))
    assert list(rerun_trace.plans) == [0]
    before = range_record(first_trace, chosen["index"])
    after = range_record(rerun_trace, 0)
    assert before["done"] == before["ops"] == chosen["ops_planned"]
    assert after == before
    # the rerun's own rerun is the same command: nothing of the first run got lost on the way
    assert again["rerun"] == chosen["rerun"]
