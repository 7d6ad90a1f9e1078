"""DMA-aware values: the dictionary, the scratch memory's layout and fills, and the C executor's copy of both.

The executor runs with --dry-run only: on the host it must touch no port and no memory.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace

import pytest
from dry_run_model import c_lines, python_lines

from avocado_iofuzz.executor.protocol import (
    NoScratch,
    executor_command,
    parse_line,
    range_argument,
)
from avocado_iofuzz.model import dma
from avocado_iofuzz.model.dma import (
    RING_DESCRIPTORS,
    SCRATCH_BASE,
    SCRATCH_EPOCH_OPS,
    SCRATCH_SIZE,
    VALUE_MODES,
    VALUES_DMA,
    VALUES_UNIFORM,
    dictionary_value,
    fill_points,
    scratch_fill,
)
from avocado_iofuzz.model.program import RangePlan, random_word


def dma_plans(seed: int, fuzz_count: int) -> list[RangePlan]:
    return [
        RangePlan(0, 0x60, 0x64, "keyboard", seed, fuzz_count, 1, values=VALUES_DMA),
        RangePlan(1, 0xC000, 0xC01F, "uhci", seed, fuzz_count, 2, values=VALUES_DMA),
        RangePlan(2, 0xC040, 0xC05F, "uniform neighbour", seed, fuzz_count, 4),
        RangePlan(3, 0xFEB00000, 0xFEB0007F, "bar", seed, fuzz_count, 4, "mmio", values=VALUES_DMA),
        RangePlan(4, 0xFEB01000, 0xFEB0103F, "bar64", seed, fuzz_count, 8, "mmio", values=VALUES_DMA),
        RangePlan(5, 0x18000, 0x180FF, "config", seed, fuzz_count, 4, "pci", values=VALUES_DMA),
    ]


@pytest.mark.parametrize("seed", [0, 1, 2**64 - 1, 0x5EED])
def test_c_dma_ops_and_fills_identical_to_python(executor, seed):
    plans = dma_plans(seed, 300)  # the 64-slot config range crosses epochs 0..4
    assert plans[5].op_count > 4 * SCRATCH_EPOCH_OPS
    expected, got = python_lines(plans), c_lines(executor, plans, report_every=1000)
    assert len(got) == len(expected)
    assert got == expected


def test_c_dma_fills_follow_each_ranges_own_seed(executor):
    """A guided round's batches with their own seeds (``@S``): each range's fills and values are its seed's."""
    plans = [replace(plan, seed=seed) for plan, seed in zip(dma_plans(0, 40), (3, 2**64 - 1, 0, 5, 6, 7), strict=True)]
    assert c_lines(executor, plans, report_every=1000) == python_lines(plans)


@pytest.mark.parametrize("resume", [(1, 5), (3, SCRATCH_EPOCH_OPS - 1), (5, SCRATCH_EPOCH_OPS), (5, 10_000)])
def test_c_dma_resume_fills_at_the_resume_point(executor, resume):
    plans = dma_plans(7, 300)
    got = c_lines(executor, plans, report_every=4096, resume=resume)
    assert got[0].startswith(f"M {resume[0]} {resume[1]} ")  # the memory is refilled where the executor resumes
    assert got == python_lines(plans, resume)


def test_uniform_ranges_draw_the_uniform_words_of_before():
    plan = RangePlan(0, 0x100, 0x13F, "r", 99, 8, 4)
    n = plan.slots
    for i in range(2 * n, plan.op_count):
        assert plan.op(i).value == random_word(plan.range_seed, 2 * (i - 2 * n) + 1) & 0xFFFF_FFFF


def test_a_dma_range_moves_only_its_values():
    uniform = RangePlan(0, 0x100, 0x13F, "r", 99, 8, 4)
    dma_plan = RangePlan(0, 0x100, 0x13F, "r", 99, 8, 4, values=VALUES_DMA)
    assert [op.port for op in uniform.ops()] == [op.port for op in dma_plan.ops()]
    assert [op.value for op in uniform.ops()] != [op.value for op in dma_plan.ops()]


def test_dictionary_holds_every_kind_of_value():
    words = [random_word(12345, k) for k in range(20_000)]
    values = [dictionary_value(w, 4) for w in words]
    scratch = [v for v in values if SCRATCH_BASE <= v < SCRATCH_BASE + SCRATCH_SIZE]
    # kinds 6 and 7, and half of kind 8 (the low lane of an address; the high one is 0 here)
    assert len(scratch) / len(values) == pytest.approx(2.5 / 16, abs=0.02)
    assert any(v % 0x1000 == 0 for v in scratch) and any(v % 0x1000 for v in scratch)
    assert values.count(0) > len(values) / 16  # kind 9, and lane 1 of a 32-bit address is 0
    assert values.count(0xFFFF_FFFF) >= len(values) / 16 * 0.8
    assert set(range(1, 32)) <= set(values)
    assert {1 << b for b in range(32)} <= set(values)
    assert set(dma.SIZES) <= set(values)
    assert all(v < 1 << 32 for v in values)


def test_dictionary_holds_the_scratch_pages_frame_numbers():
    """Kind 5: a scratch page >> 12, what virtio legacy's QUEUE_PFN takes."""
    values = {dictionary_value(random_word(777, k), 4) for k in range(4000)}
    frames = {page >> 12 for page in range(SCRATCH_BASE, SCRATCH_BASE + SCRATCH_SIZE, 0x1000)}
    assert frames <= values


@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_dictionary_values_fit_the_width_and_carry_the_address_lanes(width):
    values = {dictionary_value(random_word(7, k), width) for k in range(20_000)}
    assert all(0 <= v < 1 << (8 * width) for v in values)
    # a register written in pieces of this width gets the high piece of a scratch address too
    mask = (1 << (8 * width)) - 1
    high = max(lane for lane in range(8 // width) if (SCRATCH_BASE >> (8 * width * lane)) & mask)
    assert (SCRATCH_BASE >> (8 * width * high)) & mask in values


def test_scratch_fill_layout():
    data = scratch_fill(0xABCDEF, 3)
    assert len(data) == SCRATCH_SIZE
    for d in range(RING_DESCRIPTORS):
        descriptor = data[16 * d : 16 * d + 16]
        address = int.from_bytes(descriptor[:8], "little")
        length = int.from_bytes(descriptor[8:12], "little")
        assert SCRATCH_BASE <= address < SCRATCH_BASE + SCRATCH_SIZE and address % 16 == 0
        assert length & (length - 1) == 0 and 1 <= length <= 4096
    assert len(set(data[dma.RING_BYTES :])) > 200  # random bytes after the ring


def test_scratch_fill_is_a_function_of_seed_and_epoch():
    assert scratch_fill(1, 0) == scratch_fill(1, 0)
    assert len({scratch_fill(1, 0), scratch_fill(1, 1), scratch_fill(2, 0)}) == 3


def test_fill_points():
    assert fill_points(0, 10) == [0]
    assert fill_points(5, 5) == []
    epoch = SCRATCH_EPOCH_OPS
    assert fill_points(100, 3 * epoch + 1) == [100, epoch, 2 * epoch, 3 * epoch]
    assert fill_points(SCRATCH_EPOCH_OPS, 2 * SCRATCH_EPOCH_OPS) == [SCRATCH_EPOCH_OPS]


def test_values_mode_is_validated():
    assert VALUE_MODES[0] == VALUES_UNIFORM
    with pytest.raises(ValueError, match="values must be one of uniform, dma, got 'dmaa'"):
        RangePlan(0, 0x60, 0x64, "k", 1, 1, values="dmaa")


def test_protocol_names_the_mode_and_the_scratch_memory():
    plans = dma_plans(1, 2)
    assert range_argument(plans[3]) == "3:mmio:0xfeb00000-0xfeb0007f/4+dma"
    assert range_argument(plans[2]) == "2:0xc040-0xc05f/4"
    assert f"--scratch {SCRATCH_BASE:#x}-{SCRATCH_BASE + SCRATCH_SIZE - 1:#x}" in executor_command(plans)
    assert "--scratch" not in executor_command([plans[2]])
    assert parse_line("@NOSCRATCH no memmap=") == NoScratch("no memmap=")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "1", "--fuzz-count", "1", "0x60-0x64+dma"], "+dma ranges need --scratch"),
        (["--seed", "1", "--fuzz-count", "1", "--scratch", "0x7000000-0x7003fff", "0x60-0x64+dmx"], "'dmx' is not dma"),
        (["--seed", "1", "--fuzz-count", "1", "--scratch", "0x7000000-0x7002fff", "0x60-0x64+dma"], "power of two"),
    ],
)
def test_executor_refuses_bad_dma_arguments(executor, args, message):
    result = subprocess.run([str(executor), "--dry-run", *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert message in result.stdout


def test_ops_with_memory_put_each_fill_before_the_op_it_precedes():
    plan = RangePlan(0, 0xC000, 0xC01F, "uhci", 5, 3000, 4, values=VALUES_DMA)
    first, stop = SCRATCH_EPOCH_OPS - 10, SCRATCH_EPOCH_OPS + 10
    ops = list(plan.ops_with_memory(first, stop))
    words = SCRATCH_SIZE // 8
    assert len(ops) == (stop - first) + 2 * words
    fill = b"".join(op.value.to_bytes(8, "little") for op in ops[:words])
    assert fill == scratch_fill(plan.range_seed, 0)
    assert ops[words : words + 10] == list(plan.ops(first, SCRATCH_EPOCH_OPS))
    refill = b"".join(op.value.to_bytes(8, "little") for op in ops[words + 10 : 2 * words + 10])
    assert refill == scratch_fill(plan.range_seed, 1)
    assert ops[2 * words + 10 :] == list(plan.ops(SCRATCH_EPOCH_OPS, stop))
    uniform = RangePlan(0, 0xC000, 0xC01F, "uhci", 5, 3000, 4)
    assert list(uniform.ops_with_memory(first, stop)) == list(uniform.ops(first, stop))


def test_qtest_script_carries_the_memory_as_write_lines():
    from avocado_iofuzz.repro.qtest import parse_script
    from avocado_iofuzz.repro.qtest_ops import format_script

    plan = RangePlan(0, 0xC000, 0xC01F, "uhci", 5, 3000, 4, values=VALUES_DMA)
    script = format_script(plan.ops_with_memory(100, 110))
    lines = script.splitlines()
    writes = [line for line in lines if line.startswith("write ")]
    assert [line.split()[:3] for line in writes] == [
        ["write", f"{SCRATCH_BASE + offset:#x}", "4096"] for offset in range(0, SCRATCH_SIZE, 4096)
    ]
    assert bytes.fromhex("".join(line.split()[3][2:] for line in writes)) == scratch_fill(plan.range_seed, 0)
    assert len(lines) == len(writes) + 10 and all(line.startswith("outl ") for line in lines[len(writes) :])
    # read back: the memory as byte writes, then the same port ops
    back = parse_script(script)
    assert bytes(op.value for op in back[:SCRATCH_SIZE]) == scratch_fill(plan.range_seed, 0)
    assert back[SCRATCH_SIZE:] == list(plan.ops(100, 110))


def test_trace_carries_the_value_mode_and_the_scratch_memory(tmp_path):
    import json

    from avocado_iofuzz.campaign.trace import TraceWriter, read_trace

    plans = dma_plans(3, 2)
    with TraceWriter(tmp_path / "t", {"machine": "pc"}, plans) as writer:
        writer.write_ops(plans[1], 0, 20)
    trace = read_trace(tmp_path / "t")
    assert trace.plans[1].values == VALUES_DMA and trace.plans[2].values == VALUES_UNIFORM
    assert list(trace.ops[1]) == [(i, plans[1].op(i)) for i in range(20)]
    assert trace.header["scratch"] == {
        "base": SCRATCH_BASE,
        "size": SCRATCH_SIZE,
        "epoch_ops": SCRATCH_EPOCH_OPS,
        "kernel_param": dma.SCRATCH_KERNEL_PARAM,
    }
    records = [json.loads(line[2:]) for line in (tmp_path / "t").read_text().splitlines() if line.startswith("R ")]
    assert [r.get("values") for r in records] == ["dma", "dma", None, "dma", "dma", "dma"]  # uniform: no key


def test_uniform_trace_has_no_scratch(tmp_path):
    from avocado_iofuzz.campaign.trace import TraceWriter, read_trace

    with TraceWriter(tmp_path / "t", {}, [RangePlan(0, 0x60, 0x64, "k", 1, 1)]):
        pass
    assert "scratch" not in read_trace(tmp_path / "t").header


def test_fuzz_values_param():
    from avocado_iofuzz.vt.iofuzz_params import IofuzzParams
    from avocado_iofuzz.vt.params import ParamError

    assert IofuzzParams.from_params({}).values == VALUES_UNIFORM
    assert IofuzzParams.from_params({"fuzz_values": "dma"}).values == VALUES_DMA
    with pytest.raises(ParamError, match="fuzz_values"):
        IofuzzParams.from_params({"fuzz_values": "dictionary"})


def test_a_guest_without_scratch_memory_gets_uniform_values(caplog):
    from avocado_iofuzz.campaign.guest_access import uniform_without_scratch

    plans = dma_plans(1, 2)
    assert uniform_without_scratch(plans, "@DONE 0\n") == plans
    output = "@NOSCRATCH the kernel command line reserves no memory at 0x7000000-0x7003fff\n@DONE 0\n"
    fallen_back = uniform_without_scratch(plans, output)
    assert {p.values for p in fallen_back} == {VALUES_UNIFORM}
    assert [p.op(0) for p in fallen_back] == [p.op(0) for p in plans]  # the same ranges, reads alike
    assert "no scratch memory in this guest (the kernel command line reserves no memory" in caplog.text
    assert "5 range(s) get uniform values instead" in caplog.text


def test_the_first_no_scratch_reason_of_a_check_output_is_found():
    from avocado_iofuzz.campaign.guest_access import no_scratch_reason

    assert no_scratch_reason("@DONE 0\n") is None
    output = "@DENIED 1 pci\n@NOSCRATCH no memmap= here\n@NOSCRATCH again\n@DONE 0\n"
    assert no_scratch_reason(output) == "no memmap= here"


def test_renumbering_and_rerun_keep_the_value_mode():
    from avocado_iofuzz.model.kinds import renumber
    from avocado_iofuzz.results.rerun import RerunContext, rerun_range

    plans = renumber(dma_plans(1, 2)[3:])
    assert [(p.index, p.values) for p in plans] == [(0, "dma"), (1, "dma"), (2, "dma")]
    assert dict(rerun_range(plans[0], RerunContext(reference="iofuzz")).params)["fuzz_values"] == "dma"
    uniform = RangePlan(0, 0x60, 0x60, "keyboard", 5, 7)
    assert "fuzz_values" not in dict(rerun_range(uniform, RerunContext(reference="iofuzz")).params)


def test_triage_candidates_of_a_dma_run_carry_the_scratch_memory(tmp_path):
    from avocado_iofuzz.campaign.trace import TraceWriter
    from avocado_iofuzz.repro.extract import extract
    from avocado_iofuzz.repro.qtest_ops import format_script

    plan = RangePlan(0, 0xC000, 0xC01F, "uhci", 5, 1100, 4, values=VALUES_DMA)  # 8816 ops: epochs 0..2
    crash = {"range": 0, "window": [8000, 8816], "qemu_exit": {"status": None, "signal": 6, "stderr_tail": "x"}}
    with TraceWriter(tmp_path / "t", {"qemu_cmdline": "/usr/bin/qemu-system-x86_64 -machine pc"}, [plan]) as trace:
        trace.write_ops(plan, 0, plan.op_count)
        trace.event("start", range=0, op=0)
        trace.event("crash", **crash)
    by_name = {c.name: c.ops for c in extract(tmp_path / "t").candidates}
    words = SCRATCH_SIZE // 8
    # the window: the fill of epoch 1 (the executor was there since op 0), its ops up to 8192, epoch 2's fill, the rest
    window = by_name["window"]
    assert window == list(plan.ops_with_memory(8000, 8816))
    assert len(window) == 816 + 2 * words
    # the whole range: fills at 0, 4096 and 8192 before the ops they preceded
    assert by_name["range"] == list(plan.ops_with_memory(0, 8816))
    assert format_script(by_name["range"]).count("\nwrite ") + 1 == 3 * SCRATCH_SIZE // 4096
