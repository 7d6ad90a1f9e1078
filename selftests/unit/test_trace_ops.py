"""RangeOps: the lazy view of the ops a trace holds behaves like the list it stands for."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from avocado_iofuzz.campaign.trace_ops import RangeOps, merge_spans
from avocado_iofuzz.model.program import Op, RangePlan

PLAN = RangePlan(3, 0x80, 0x8F, "dma page reg", 42, 10)  # 192 ops


def test_merge_spans_sorts_joins_and_drops_empty():
    assert merge_spans([(10, 20), (0, 5), (5, 8), (15, 30), (40, 40), (50, 60)]) == [(0, 8), (10, 30), (50, 60)]


@given(st.lists(st.tuples(st.integers(0, PLAN.op_count), st.integers(0, PLAN.op_count)), max_size=5))
def test_behaves_like_the_list_of_held_ops(spans):
    spans = [(min(a, b), max(a, b)) for a, b in spans]
    held = sorted({i for a, b in spans for i in range(a, b)})
    expected = [(i, PLAN.op(i)) for i in held]
    ops = RangeOps(PLAN, spans, {})
    assert len(ops) == len(expected)
    assert ops == expected and list(ops) == expected and list(ops.indices()) == held
    assert [ops[p] for p in range(len(ops))] == expected
    assert ops[-3:] == expected[-3:] and ops[::7] == expected[::7]
    for first, stop in ((0, PLAN.op_count), (17, 90), (100, 101)):
        assert ops.count_in(first, stop) == sum(first <= i < stop for i in held)


def test_listed_ops_win_and_bad_positions_are_named():
    odd = Op("w", 0x81, 1, 0xAB)
    ops = RangeOps(PLAN, [(0, 4)], {2: odd})
    assert ops[2] == (2, odd) and ops[1] == (1, PLAN.op(1))
    assert ops != [(i, PLAN.op(i)) for i in range(4)]
    with pytest.raises(IndexError, match="range 3: the trace holds 4 ops, no position 4"):
        ops[4]
    assert "range 3: 4 ops [0..3]" in repr(ops)
