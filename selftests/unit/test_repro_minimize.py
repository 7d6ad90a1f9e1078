"""Delta debugging and simplification against a judge that knows which ops matter."""

from __future__ import annotations

import random
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from avocado_iofuzz.model.program import Op
from avocado_iofuzz.repro.minimize import Budget, CachedJudge, ddmin, minimize_ops, simplify, trim_prefix


def noise(count: int, seed: int = 1) -> list[Op]:
    rng = random.Random(seed)
    return [Op("w", rng.randrange(0x100, 0x200), 1, rng.randrange(256)) for _ in range(count)]


class NeedsInOrder:
    """Fails (reproduces) when the needed ops appear in this order, anything in between; counts calls."""

    def __init__(self, needed: Sequence[Op]) -> None:
        self.needed = list(needed)
        self.calls = 0

    def __call__(self, ops: Sequence[Op]) -> bool:
        self.calls += 1
        position = 0
        for op in ops:
            if position < len(self.needed) and op == self.needed[position]:
                position += 1
        return position == len(self.needed)


NEEDED = [Op("w", 0x7, 1, 0x49), Op("w", 0xA, 1, 0x3), Op("w", 0x7, 1, 0x0)]


def bury(needed: Sequence[Op], count: int, seed: int = 1) -> list[Op]:
    ops = noise(count, seed)
    rng = random.Random(seed)
    spots = sorted(rng.randrange(count + 1) for _ in needed)
    for offset, (spot, op) in enumerate(zip(spots, needed, strict=True)):
        ops.insert(spot + offset, op)
    return ops


def test_ddmin_finds_the_three_ops_buried_in_two_thousand():
    judge = NeedsInOrder(NEEDED)
    result = ddmin(bury(NEEDED, 2000), CachedJudge(judge, Budget()))
    assert result == NEEDED
    assert judge.calls < 400  # log-ish, not quadratic in 2000


def test_trim_prefix_drops_what_comes_before_the_first_op_that_matters():
    ops = noise(500) + NEEDED
    result = trim_prefix(ops, CachedJudge(NeedsInOrder(NEEDED), Budget()))
    assert result == NEEDED


def test_a_budget_cut_returns_a_list_that_still_reproduces():
    judge = NeedsInOrder(NEEDED)
    ops = bury(NEEDED, 2000)
    # (the region cut finishes this list in 9 replays: 4 is a cut for sure)
    result = minimize_ops(ops, judge, Budget(max_tests=4), simplify_values=False)
    assert judge.calls == 4
    assert NeedsInOrder(NEEDED)(result.ops)
    assert len(result.ops) <= len(ops) and not result.complete


def test_a_wall_clock_budget_is_read_from_the_clock():
    now = [0.0]
    budget = Budget(seconds=5, clock=lambda: now[0])
    judge = CachedJudge(lambda ops: (now.__setitem__(0, now[0] + 2), True)[1], budget)
    assert judge([NEEDED[0]]) and judge([NEEDED[1]]) and judge([NEEDED[2]])
    assert budget.exhausted()


def test_the_same_list_is_never_replayed_twice():
    judge = NeedsInOrder(NEEDED)
    cached = CachedJudge(judge, Budget())
    for _ in range(3):
        cached(NEEDED)
    assert judge.calls == 1


def test_simplify_narrows_widths_and_clears_bits_that_do_not_matter():
    def judge(ops: Sequence[Op]) -> bool:
        # the finding needs bit 0x10 of the last byte written to port 0x3000, any width
        return any(op.port == 0x3000 and op.kind == "w" and op.value & 0x10 for op in ops)

    ops = [Op("r", 0x70, 2, 0), Op("w", 0x3000, 4, 0xFFFF_FF3C)]
    result = simplify(ops, CachedJudge(judge, Budget()))
    assert result == [Op("r", 0x70, 1, 0), Op("w", 0x3000, 1, 0x10)]


@settings(max_examples=40, deadline=None)
@given(
    needed_count=st.integers(min_value=1, max_value=5),
    noise_count=st.integers(min_value=0, max_value=300),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_ddmin_result_is_one_minimal_and_still_fails(needed_count, noise_count, seed):
    rng = random.Random(seed)
    needed = [Op("w", rng.randrange(0x10), 1, rng.randrange(4)) for _ in range(needed_count)]
    judge = NeedsInOrder(needed)
    ops = bury(needed, noise_count, seed)
    result = ddmin(ops, CachedJudge(judge, Budget()))
    assert judge(result)
    for index in range(len(result)):
        assert not judge(result[:index] + result[index + 1 :]), "an op could still be dropped"
    iterator = iter(ops)
    assert all(op in iterator for op in result), "not a sub-sequence of the input"


def test_last_writes_keep_each_registers_last_value_and_config_pairs_whole():
    from avocado_iofuzz.model.program import SPACE_MMIO
    from avocado_iofuzz.repro.minimize import last_writes, without_reads

    ops = [
        Op("w", 0xCF8, 4, 0x80001010), Op("w", 0xCFC, 4, 0xFEBA0000),
        Op("w", 0xFEBA00C4, 4, 1, SPACE_MMIO), Op("r", 0xFEBA00C0, 4, 0, SPACE_MMIO),
        Op("w", 0xFEBA00C4, 4, 2, SPACE_MMIO), Op("w", 0xFEBA00C4, 2, 3, SPACE_MMIO),
        Op("w", 0xCF8, 4, 0x80001004), Op("r", 0xCFC, 2, 0),
    ]  # fmt: skip
    assert last_writes(ops) == [ops[0], ops[1], ops[4], ops[5], ops[6], ops[7]]
    assert without_reads(ops) == [*ops[:3], *ops[4:]]


def test_heuristic_cuts_are_kept_only_when_the_finding_stays():
    from avocado_iofuzz.repro.minimize import reduce_heuristically

    ops = noise(2000)
    needed = [op for op in ops if op.kind == "w"][-3:]  # last writes: the cut keeps them
    judge = CachedJudge(NeedsInOrder(needed), Budget())
    reduced = reduce_heuristically(ops, judge)
    assert len(reduced) < len(ops) and NeedsInOrder(needed)(reduced) and judge.budget.tests <= 2
    with_read = [*ops[:500], Op("r", 0x150, 1, 0), *ops[500:]]
    assert any(op.port == ops[0].port for op in ops[1:])  # the first write is overwritten later
    strict = CachedJudge(NeedsInOrder([ops[0], with_read[500]]), Budget())  # an early write and a read: both refused
    assert strict(with_read) and reduce_heuristically(with_read, strict) == with_read
