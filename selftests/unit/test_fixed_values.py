"""Fixed-value ranges (``RangePlan.fixed``, the executor's ``!0xV``): exact register writes of a guided program.

The C executor's ``--dry-run`` is held to the model for them (with and
without DMA-aware values, resumed in the middle), the range word is checked
both ways (Python writes it, C parses it), and bad values are refused with a
message that names them.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace

import pytest
from dry_run_model import c_lines, python_lines
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avocado_iofuzz.executor.protocol import ExecError, executor_command, parse_line, range_argument
from avocado_iofuzz.guided.batch import Base, Batch, BatchError
from avocado_iofuzz.guided.program import fixed_step, program_as_list, program_from_list, step
from avocado_iofuzz.model.dma import SCRATCH_BASE, VALUES_DMA
from avocado_iofuzz.model.program import RangePlan

VIRTIO = Base("pio", 0xC000, 0xC01F, 1, "0000:00:03.0 virtio-net BAR0", VALUES_DMA, "virtio")
NVME = Base("mmio", 0xFEBF0000, 0xFEBF3FFF, 4, "0000:00:04.0 nvme BAR0", VALUES_DMA, "nvme")


def fixed_plans() -> list[RangePlan]:
    """A plain range, then fixed ones: one register, several registers, +dma with a layout, 8-byte MMIO."""
    return [
        RangePlan(0, 0xC000, 0xC01F, "whole", seed=3, fuzz_count=2, width=2),
        RangePlan(1, 0xC012, 0xC012, "status", seed=4, fuzz_count=1, width=1, fuzz_only=True, fixed=0x3),
        RangePlan(2, 0xC008, 0xC00B, "pfn", 5, 3, 4, fuzz_only=True, fixed=0x7000, values=VALUES_DMA, layout="virtio"),
        RangePlan(3, 0xC000, 0xC007, "two registers", seed=6, fuzz_count=5, width=4, fuzz_only=True, fixed=0xFFFFFFFF),
        RangePlan(4, 0xFEBF0028, 0xFEBF002F, "asq", 7, 2, 8, "mmio", fuzz_only=True, fixed=SCRATCH_BASE + 0x1000),
        RangePlan(5, 0xC010, 0xC011, "zero", seed=8, fuzz_count=4, width=2, fuzz_only=True, fixed=0),
    ]


def test_every_write_of_a_fixed_range_writes_its_value_to_the_slots_its_seed_picks():
    plan = RangePlan(0, 0xC000, 0xC007, "r", seed=6, fuzz_count=50, width=4, fuzz_only=True, fixed=0x1234)
    seeded = replace(plan, fixed=None)
    ops = list(plan.ops())
    assert len(ops) == plan.op_count == 100 and {op.kind for op in ops} == {"w"}
    assert {op.value for op in ops} == {0x1234}
    # the slots are the seeded twin's, only the values differ: a fixed range reuses the op stream
    assert [op.port for op in ops] == [op.port for op in seeded.ops()] and {op.port for op in ops} == {0xC000, 0xC004}
    assert {plan.phase_of(i) for i in range(plan.op_count)} == {"fuzz"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fixed": 0x100}, r"range 0 'r': fixed value 0x100 does not fit in 1 byte\(s\)"),
        ({"fixed": -1}, "fixed value -0x1 does not fit"),
        ({"fixed": 0x10000, "width": 2, "end": 0xC001}, r"fixed value 0x10000 does not fit in 2 byte\(s\)"),
        ({"fixed": True}, "fixed must be an int or None, got True"),
        ({"fixed": "3"}, "fixed must be an int or None, got '3'"),
        ({"fixed": 3, "fuzz_only": False}, "a fixed value is for fuzz-only ranges .*fixed=0x3"),
    ],
)
def test_a_bad_fixed_value_is_refused_naming_range_and_value(changes, message):
    base = {"index": 0, "start": 0xC000, "end": 0xC000, "name": "r", "seed": 1, "fuzz_count": 1, "fuzz_only": True}
    with pytest.raises(ValueError, match=message):
        RangePlan(**{**base, **changes})


def test_range_word_names_the_fixed_value_after_the_bang():
    plans = fixed_plans()
    words = [range_argument(plan, 2, 3) for plan in plans]
    assert words == [
        "0:0xc000-0xc01f/2",
        "1:0xc012-0xc012,1!0x3@4",
        "2:0xc008-0xc00b/4,3!0x7000+dma=virtio@5",
        "3:0xc000-0xc007/4,5!0xffffffff@6",
        "4:mmio:0xfebf0028-0xfebf002f/8,2!0x7001000@7",
        "5:0xc010-0xc011/2,4!0x0@8",
    ]
    # a seeded fuzz-only range keeps its word of before
    assert range_argument(replace(plans[1], fixed=None), 2, 3) == "1:0xc012-0xc012,1!@4"


@pytest.mark.parametrize("resume", [None, (1, 0), (2, 1), (3, 7), (4, 1), (5, 3)])
def test_c_fixed_ranges_identical_to_python(executor, resume):
    """The round trip: range_argument writes the word, the C parser reads it, its ops are the model's."""
    plans = fixed_plans()
    got = c_lines(executor, plans, report_every=4, resume=resume)
    assert got == python_lines(plans, resume)
    fills = [line for line in got if line.startswith("M 2 ")]
    assert len(fills) == (1 if resume is None or resume[0] <= 2 else 0)  # +dma: the scratch memory filled as usual


@st.composite
def fixed_plan(draw: st.DrawFn, index: int) -> RangePlan:
    space, width = draw(st.sampled_from([("pio", 1), ("pio", 2), ("pio", 4), ("mmio", 4), ("mmio", 8), ("pci", 2)]))
    start = {"pio": 0xC000, "mmio": 0xFEBF0000, "pci": 0x18000}[space] + width * draw(st.integers(0, 15))
    slots = draw(st.integers(1, 4))
    return RangePlan(
        index, start, start + slots * width - 1, f"r{index}", draw(st.integers(0, 2**64 - 1)),
        draw(st.integers(1, 9)), width, space, fuzz_only=True,
        fixed=draw(st.integers(0, (1 << 8 * width) - 1)), values=draw(st.sampled_from(["uniform", VALUES_DMA])),
    )  # fmt: skip


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), count=st.integers(1, 4))
def test_c_matches_python_on_random_fixed_plans(executor, data, count):
    plans = [data.draw(fixed_plan(index)) for index in range(count)]
    at = data.draw(st.integers(0, count - 1))
    resume = (at, data.draw(st.integers(0, plans[at].op_count - 1)))
    assert c_lines(executor, plans, report_every=3) == python_lines(plans)
    assert c_lines(executor, plans, report_every=3, resume=resume) == python_lines(plans, resume)


def test_c_fixed_range_resumed_in_a_later_scratch_epoch(executor):
    plan = RangePlan(0, 0xC008, 0xC00B, "pfn", 5, 5000, 4, fuzz_only=True, fixed=0x7000, values=VALUES_DMA)
    resume = (0, 4095)
    got = c_lines(executor, [plan], report_every=1024, resume=resume)
    assert got == python_lines([plan], resume)
    assert [line.split()[:3] for line in got if line.startswith("M ")] == [["M", "0", "4095"], ["M", "0", "4096"]]


def test_c_fixed_full_width_mmio_value(executor):
    plan = RangePlan(0, 0xFEBF0000, 0xFEBF0007, "r", 1, 3, 8, "mmio", fuzz_only=True, fixed=(1 << 64) - 1)
    assert c_lines(executor, [plan]) == python_lines([plan])
    assert range_argument(plan).endswith("!0xffffffffffffffff")


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("0xc000-0xc000,1!0x100", r"fixed value 0x100 does not fit in 1 byte\(s\)"),
        ("0xc000-0xc001/2,1!0x10000", r"fixed value 0x10000 does not fit in 2 byte\(s\)"),
        ("0xc000-0xc000,1!5", "a fixed value must be hex with a 0x prefix"),
        ("0xc000-0xc000,1!0x", "1 to 16 hex digits after !0x"),
        ("0xc000-0xc000,1!0x+dma", "1 to 16 hex digits after !0x"),
        ("mmio:0xfebf0000-0xfebf0007/8,1!0x10000000000000000", "1 to 16 hex digits after !0x"),
        ("0xc000-0xc000,1!0x3z", "not a number"),
        ("0xc000-0xc000,0!0x3", "needs a fuzz count of at least 1"),
    ],
)
def test_executor_refuses_a_bad_fixed_value(executor, word, message):
    result = subprocess.run(
        [str(executor), "--dry-run", "--seed", "1", "--fuzz-count", "1", word], capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    error = parse_line(result.stdout.splitlines()[-1])
    assert isinstance(error, ExecError) and re.search(message, error.message), result.stdout


def test_executor_usage_names_the_fixed_value_syntax(executor):
    result = subprocess.run([str(executor), "--help"], capture_output=True, text=True, timeout=30)
    assert "!0xV" in result.stderr and "fixed value" in result.stderr


def test_fixed_ranges_do_not_touch_a_blind_command():
    plans = fixed_plans()[:1]
    assert "!" not in executor_command(plans)


# -- guided: the Batch field and fixed_step ------------------------------------------------------------


def test_fixed_step_is_an_exact_write_on_one_register():
    element = fixed_step(VIRTIO, 0xC012, 1, 0x3)
    assert (element.fuzz_only, element.fixed, element.values, element.slots, element.op_count) == (
        True, 3, "uniform", 1, 1,
    )  # fmt: skip
    assert [(op.kind, op.port, op.width, op.value) for op in element.plan(7).ops()] == [("w", 0xC012, 1, 3)]
    pointer = fixed_step(VIRTIO, 0xC008, 4, 0x7000, count=2, values=VALUES_DMA)
    plan = pointer.plan(0)
    assert (plan.values, plan.layout, plan.fixed, plan.op_count) == (VALUES_DMA, "virtio", 0x7000, 2)
    assert range_argument(plan, 1, 0).startswith("0:0xc008-0xc00b/4,2!0x7000+dma=virtio")


def test_fixed_step_refuses_a_value_wider_than_the_register():
    with pytest.raises(BatchError, match=r"batch pio:0xc000-0xc01f/1\+dma=virtio 0xc012-0xc012: fixed value 0x100"):
        fixed_step(VIRTIO, 0xC012, 1, 0x100)
    with pytest.raises(BatchError, match="is for fuzz-only batches"):
        Batch(VIRTIO, 0xC012, 0xC012, 1, 1, 1, fixed=3)
    with pytest.raises(BatchError, match="fixed must be an int or None"):
        Batch(VIRTIO, 0xC012, 0xC012, 1, 1, 1, fuzz_only=True, fixed=3.0)  # type: ignore[arg-type]


def test_a_fixed_batch_round_trips_through_its_record():
    program = (
        fixed_step(VIRTIO, 0xC012, 1, 0),
        fixed_step(VIRTIO, 0xC012, 1, 1),
        fixed_step(VIRTIO, 0xC008, 4, 0x7000, values=VALUES_DMA, seed=9),
        step(VIRTIO, 0xC010, 2, 77, 4, "uniform"),
        fixed_step(NVME, 0xFEBF0014, 4, 0x460001),
    )
    records = program_as_list(program)
    assert [record.get("fixed") for record in records] == [0, 1, 0x7000, None, 0x460001]
    assert "fixed" not in records[3]  # a seeded step's record is as it was
    assert program_from_list(records) == program
    assert "fixed 0x7000" in program[2].describe()


def test_a_batch_record_without_fixed_is_a_seeded_batch():
    record = step(VIRTIO, 0xC010, 2, 77, 4, "uniform").as_dict()
    assert "fixed" not in record and Batch.from_dict(record).fixed is None
    with pytest.raises(BatchError, match="fixed value 0x10000 does not fit in 2 byte"):
        Batch.from_dict({**record, "fixed": 0x10000})
