"""Shards: every range in exactly one shard, balanced, named, sharing one seed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from avocado_iofuzz.model.shards import Shard, ShardError, expand_shards, parse_shard, parse_shard_count, shard_ranges


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=4096), max_size=40),
    count=st.integers(min_value=1, max_value=8),
)
def test_shards_partition_the_ranges_in_order(sizes, count):
    items = list(enumerate(sizes))
    parts = [shard_ranges(items, Shard(k, count), weight=lambda item: item[1]) for k in range(1, count + 1)]
    assert sorted(x for part in parts for x in part) == items  # disjoint and complete
    for part in parts:
        assert part == sorted(part)  # each shard keeps the original order


@given(sizes=st.lists(st.integers(min_value=1, max_value=64), min_size=8, max_size=40))
def test_two_shards_differ_by_at_most_the_largest_range(sizes):
    items = list(enumerate(sizes))
    loads = [sum(s for _, s in shard_ranges(items, Shard(k, 2), weight=lambda i: i[1])) for k in (1, 2)]
    assert abs(loads[0] - loads[1]) <= max(sizes)


def test_one_big_range_gets_a_shard_of_its_own():
    items = [("pci", 4096), ("dma1", 32), ("pic1", 2), ("rtc", 8)]
    first = shard_ranges(items, Shard(1, 2), weight=lambda i: i[1])
    second = shard_ranges(items, Shard(2, 2), weight=lambda i: i[1])
    assert first == [("pci", 4096)]
    assert second == [("dma1", 32), ("pic1", 2), ("rtc", 8)]


@pytest.mark.parametrize(("text", "shard"), [("", Shard(1, 1)), ("2/4", Shard(2, 4)), (" 1 / 1 ", Shard(1, 1))])
def test_parse_shard(text, shard):
    assert parse_shard(text) == shard


@pytest.mark.parametrize(
    ("text", "message"),
    [("2", "expected K/N"), ("0/2", "need 1 <= K <= N"), ("3/2", "need 1 <= K <= N"), ("a/b", "expected K/N")],
)
def test_bad_shard_names_the_param(text, message):
    with pytest.raises(ShardError, match=rf"iofuzz_shard = {text!r}: {message}"):
        parse_shard(text)


def test_bad_shard_count_names_the_param():
    with pytest.raises(ShardError, match="iofuzz_shards = 'x': not an integer"):
        parse_shard_count("x")
    with pytest.raises(ShardError, match="must be >= 1"):
        parse_shard_count("0")


def test_expand_shards_makes_named_tests_with_one_seed():
    base = {"shortname": "iofuzz.quick", "name": "iofuzz.(fuzz_size=quick)", "iofuzz_shards": "3", "fuzz_seed": ""}
    seeds = iter([77, 88])
    parts = expand_shards([base, {"shortname": "other", "iofuzz_shards": "1"}], seed_source=lambda: next(seeds))
    assert [p["shortname"] for p in parts] == [
        "iofuzz.quick.shard1of3",
        "iofuzz.quick.shard2of3",
        "iofuzz.quick.shard3of3",
        "other",
    ]
    assert [p.get("iofuzz_shard") for p in parts] == ["1/3", "2/3", "3/3", None]
    assert {p["fuzz_seed"] for p in parts[:3]} == {"77"}  # drawn once for the campaign
    assert parts[0]["name"] == "iofuzz.(fuzz_size=quick).shard1of3"


def test_expand_shards_keeps_a_given_seed_and_an_explicit_shard():
    given_seed = {"shortname": "t", "iofuzz_shards": "2", "fuzz_seed": "5"}
    explicit = {"shortname": "u", "iofuzz_shards": "4", "iofuzz_shard": "2/4"}
    parts = expand_shards([given_seed, explicit], seed_source=lambda: pytest.fail("no seed needed"))
    assert [p["fuzz_seed"] for p in parts[:2]] == ["5", "5"]
    assert parts[2] == explicit


def test_shards_run_exactly_the_ops_of_the_whole_campaign():
    from avocado_iofuzz.model.program import plan_ranges

    ranges = [(0x0, 0x1F, "dma1"), (0x20, 0x21, "pic1"), (0x40, 0x43, "timer0"), (0x70, 0x77, "rtc0")]
    whole = {p.name: list(p.ops()) for p in plan_ranges(9, ranges, 3)}
    sharded = {}
    for k in (1, 2, 3):
        part = shard_ranges(ranges, Shard(k, 3), weight=lambda r: r[1] - r[0] + 1)
        sharded.update({p.name: list(p.ops()) for p in plan_ranges(9, part, 3)})  # re-indexed from 0
    assert sharded == whole
