"""`avocado run iofuzz... fuzz_values=dma`: the embedded guests reserve the scratch memory and the run uses it.

The whole VT path: avocado-vt starts QEMU with the embedded guest's kernel
command line (``memmap=16K$0x7000000``, quoted through avocado-vt's shell
command), the access check finds the scratch memory, and every range runs
with DMA-aware values: the executor refuses to start a ``+dma`` range whose
scratch memory it cannot map, so a run that fuzzed its ranges had it. The
summary, the trace's range records and its header say so, and the rerun
command of a range carries ``fuzz_values=dma``.
"""

from __future__ import annotations

import json

import pytest
from avocado_jobs import run_avocado

from avocado_iofuzz.model.dma import SCRATCH_KERNEL_PARAM, VALUES_DMA

pytestmark = pytest.mark.guest


@pytest.mark.parametrize("guest", ["busybox", "debian"])
def test_a_dma_run_on_the_embedded_guest(tmp_path, guest):
    reference = f"iofuzz.quick.usb.piix3_uhci.{guest}"
    # blind: every planned range whole, each with its layout (guided batches are checked by test_guided_avocado)
    job = run_avocado(reference, tmp_path, {"fuzz_values": VALUES_DMA, "fuzz_strategy": "blind"}, timeout=1800)
    test = job.tests[0]
    assert test["status"] in ("PASS", "WARN"), job.output[-3000:]
    summary = job.summary()
    ranges = summary["ranges"]
    assert ranges and {r["values"] for r in ranges} == {VALUES_DMA}
    assert all(r["ops_done"] == r["ops_planned"] for r in ranges), ranges
    assert all(r["rerun_params"]["fuzz_values"] == VALUES_DMA for r in ranges)
    trace = job.data_file("trace.iofuzz").read_text().splitlines()
    header = json.loads(trace[0].split(" ", 1)[1])
    assert header["scratch"]["kernel_param"] == SCRATCH_KERNEL_PARAM
    assert SCRATCH_KERNEL_PARAM in header["qemu_cmdline"]
    records = [json.loads(line[2:]) for line in trace if line.startswith("R ")]
    assert records and {r["values"] for r in records} == {VALUES_DMA}
    debug_log = (job.test_dir() / "debug.log").read_text(errors="replace")
    assert "no scratch memory in this guest" not in debug_log
    assert "dma values" in debug_log  # the range lines of the log
    # dma_layout = auto: every range of the row belongs to the UHCI, so every one gets its layout
    assert {r["layout"] for r in ranges} == {"uhci"}, ranges
    assert {r.get("layout") for r in records} == {"uhci"}
    assert all(r["rerun_params"]["dma_layout"] == "uhci" for r in ranges)
    assert "(uhci scratch layout)" in debug_log
