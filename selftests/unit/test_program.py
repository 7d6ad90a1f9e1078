"""The op model: generator determinism, phases, independence and validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from avocado_iofuzz.model.program import (
    PHASE_FUZZ,
    PHASE_READ,
    PHASE_ZERO,
    Op,
    RangePlan,
    new_seed,
    plan_ranges,
    random_word,
)

RANGES = [(0x60, 0x64, "keyboard"), (0x70, 0x71, "rtc"), (0x3F8, 0x3FF, "serial")]


def all_ops(plans: list[RangePlan]) -> list[list[Op]]:
    return [list(p.ops()) for p in plans]


def test_generator_is_splitmix64():
    # Published splitmix64 outputs for seed 1234567 (reference C code by S. Vigna):
    # random_word(s, k) must be the k-th output of a generator seeded with s.
    assert [random_word(1234567, k) for k in range(5)] == [
        6457827717110365317,
        3203168211198807973,
        9817491932198370423,
        4593380528125082431,
        16408922859458223821,
    ]


def test_same_seed_and_ranges_give_same_ops():
    assert all_ops(plan_ranges(42, RANGES, 3)) == all_ops(plan_ranges(42, RANGES, 3))


def test_different_seeds_give_different_fuzz_ops():
    a = all_ops(plan_ranges(1, RANGES, 3))
    b = all_ops(plan_ranges(2, RANGES, 3))
    for ops_a, ops_b, (start, end, _) in zip(a, b, RANGES, strict=True):
        n = end - start + 1
        # read and zero phases do not depend on the seed; the fuzz phase does
        assert ops_a[: 2 * n] == ops_b[: 2 * n]
        assert ops_a[2 * n :] != ops_b[2 * n :]


def test_range_sequence_independent_of_other_ranges_and_position():
    alone = plan_ranges(7, [RANGES[2]], 4)[0]
    among = plan_ranges(7, RANGES, 4)[2]
    shifted = plan_ranges(7, [(0x1000, 0x10FF, "other"), RANGES[2]], 4)[1]
    assert list(alone.ops()) == list(among.ops()) == list(shifted.ops())


def test_ranges_with_other_bounds_differ():
    a = plan_ranges(7, [(0x60, 0x67, "a")], 2)[0]
    b = plan_ranges(7, [(0x60, 0x67, "a"), (0x60, 0x68, "b")], 2)[1]
    values_a = [op.value for op in a.ops(16)]
    values_b = [op.value for op in b.ops(18)]
    assert values_a != values_b[: len(values_a)]


def test_phases_in_order():
    plan = RangePlan(0, 0x60, 0x64, "keyboard", seed=9, fuzz_count=3)
    n = 5
    ops = list(plan.ops())
    assert plan.size == plan.slots == n
    assert len(ops) == plan.op_count == (3 + 2) * n
    assert ops[:n] == [Op("r", 0x60 + i, 1, 0) for i in range(n)]
    assert ops[n : 2 * n] == [Op("w", 0x60 + i, 1, 0) for i in range(n)]
    assert [plan.phase_of(i) for i in (0, n - 1, n, 2 * n - 1, 2 * n, plan.op_count - 1)] == [
        PHASE_READ,
        PHASE_READ,
        PHASE_ZERO,
        PHASE_ZERO,
        PHASE_FUZZ,
        PHASE_FUZZ,
    ]
    assert all(op.kind == "w" and 0x60 <= op.port <= 0x64 for op in ops[2 * n :])


def test_fuzz_count_zero_has_only_read_and_zero():
    plan = RangePlan(0, 0x10, 0x13, "dma", seed=1, fuzz_count=0)
    assert [op.kind for op in plan.ops()] == ["r"] * 4 + ["w"] * 4


def test_fuzz_writes_cover_ports_and_byte_values():
    plan = RangePlan(0, 0x100, 0x10F, "sixteen", seed=5, fuzz_count=200)
    fuzz = list(plan.ops(2 * plan.slots))
    assert {op.port for op in fuzz} == set(range(0x100, 0x110))
    values = [op.value for op in fuzz]
    assert max(values) <= 0xFF
    assert len(set(values)) > 250  # 3200 draws from 256 values


def test_wider_slots_are_aligned_and_values_fit_width():
    plan = RangePlan(0, 0xCF8, 0xCFF, "pci", seed=3, fuzz_count=50, width=4)
    assert plan.slots == 2
    ops = list(plan.ops())
    assert ops[:2] == [Op("r", 0xCF8, 4, 0), Op("r", 0xCFC, 4, 0)]
    assert {op.port for op in ops} == {0xCF8, 0xCFC}
    assert all(op.width == 4 and op.value <= 0xFFFFFFFF for op in ops)
    assert max(op.value for op in ops) > 0xFFFF


@given(seed=st.integers(0, 2**64 - 1), fuzz=st.integers(0, 5), start=st.integers(0, 0xFF00), size=st.integers(1, 40))
def test_random_access_equals_sequential(seed, fuzz, start, size):
    plan = RangePlan(0, start, start + size - 1, "r", seed, fuzz)
    ops = list(plan.ops())
    assert [plan.op(i) for i in range(plan.op_count)] == ops
    mid = plan.op_count // 3
    assert list(plan.ops(mid, plan.op_count - 1)) == ops[mid:-1]


def test_new_seed_is_63_bit_and_fresh():
    seeds = {new_seed() for _ in range(20)}
    assert len(seeds) == 20
    assert all(0 <= s < 2**63 for s in seeds)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": 0x65, "end": 0x60}, "start 0x65 is greater than end 0x60"),
        ({"end": 0x10000}, "within 0x0..0xffff"),
        ({"start": -1}, "within 0x0..0xffff"),
        ({"fuzz_count": -1}, "fuzz_count must be within"),
        ({"fuzz_count": True}, "fuzz_count must be an int"),
        ({"seed": 2**64}, "seed must be within"),
        ({"width": 3}, "width must be one of"),
        ({"width": 2}, "is not a multiple of width 2"),
        ({"space": "dma"}, "'dma' is not supported"),
        ({"space": "mmio", "start": 0x61, "end": 0x64, "width": 2}, "not aligned to width 2"),
        ({"space": "mmio", "end": 0x60 + 8 * 2**60 - 1, "width": 8, "fuzz_count": 2}, "too many ops"),
        ({"space": "pci", "start": 0x1000, "end": 0x2003, "width": 4}, "spans more than one function"),
        ({"space": "pci", "start": 0x10000000, "end": 0x10000003}, r"within 0x0\.\.0xfffffff"),
        ({"space": "pci", "width": 8, "start": 0x0, "end": 0x7}, r"width must be one of \(1, 2, 4\)"),
        ({"name": "two\nlines"}, "single line"),
        ({"index": -2}, "index must be >= 0"),
    ],
)
def test_invalid_range_is_rejected_clearly(kwargs, message):
    fields = {"index": 0, "start": 0x60, "end": 0x64, "name": "kbd", "seed": 1, "fuzz_count": 1} | kwargs
    with pytest.raises(ValueError, match=message):
        RangePlan(**fields)


def test_plan_ranges_rejects_malformed_entry():
    with pytest.raises(ValueError, match=r"range 1: expected \(start, end, name\)"):
        plan_ranges(1, [(0x60, 0x64, "a"), (0x70, 0x71)], 1)  # type: ignore[list-item]


def test_op_index_out_of_bounds():
    plan = RangePlan(3, 0x60, 0x61, "x", seed=1, fuzz_count=1)
    with pytest.raises(IndexError, match=r"range 3 .* has 6 ops; op index 6"):
        plan.op(6)
    with pytest.raises(ValueError, match=r"op slice 4\.\.7"):
        list(plan.ops(4, 7))
