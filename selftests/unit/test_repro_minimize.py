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
    result = minimize_ops(ops, judge, Budget(max_tests=10), simplify_values=False)
    assert judge.calls == 10
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
