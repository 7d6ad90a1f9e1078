"""Spans of a range's ops: confirmed, unconfirmed, skipped, and their counts by phase."""

from __future__ import annotations

from avocado_iofuzz.campaign.tally import RangeTally
from avocado_iofuzz.model.program import plan_ranges

PLAN = plan_ranges(1, [(0, 0xF, "r")], 4)[0]  # 16 slots: read 0-16, zero 16-32, fuzz 32-96


def test_adjacent_confirmations_join_and_counts_add_up():
    tally = RangeTally()
    tally.confirm(0, 8)
    tally.confirm(8, 8)  # a mark at the same place adds nothing
    tally.confirm(8, 20)
    tally.skip(20, 24)
    tally.confirm(24, 40)
    assert tally.confirmed == [(0, 20), (24, 40)]
    assert (tally.ops_confirmed, tally.ops_skipped, tally.ops_unconfirmed, tally.ops_executed) == (36, 4, 0, 36)
    assert tally.by_phase(PLAN) == {"read": 16, "zero": 12, "fuzz": 8}


def test_executed_counts_add_the_unconfirmed_window():
    tally = RangeTally()
    tally.confirm(0, 10)
    tally.leave_unconfirmed(10, 26)
    assert tally.ops_executed == 26 and tally.ops_confirmed == 10
    assert tally.by_phase(PLAN) == {"read": 10, "zero": 0, "fuzz": 0}
    assert tally.by_phase(PLAN, executed=True) == {"read": 16, "zero": 10, "fuzz": 0}
