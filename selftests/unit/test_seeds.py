"""Seeds drawn by the resolver: pinned per test, shared by shards, reused on replay."""

from __future__ import annotations

from types import SimpleNamespace

from avocado.core.nrunner.runnable import Runnable

from avocado_iofuzz.model.shards import expand_shards
from avocado_iofuzz.plugins.job import IofuzzSeedRecord
from avocado_iofuzz.plugins.resolver import IofuzzResolver
from avocado_iofuzz.vt.catalog import IOFUZZ_TYPE
from avocado_iofuzz.vt.seeds import SEEDS_CONFIG_KEY, pin_seeds, resolved_seeds, seed_key


def test_an_empty_seed_is_drawn_a_given_one_kept_a_recorded_one_reused():
    draws = iter([5, 6])
    pinned = pin_seeds(
        [
            {"shortname": "iofuzz.quick", "fuzz_seed": ""},
            {"shortname": "iofuzz.quick.debian", "fuzz_seed": "42"},
            {"shortname": "iofuzz.long", "fuzz_seed": ""},
            {"shortname": "iofuzz.platform"},
        ],
        recorded={"iofuzz.long": "1234"},
        seed_source=lambda: next(draws),
    )
    assert [p["fuzz_seed"] for p in pinned] == ["5", "42", "1234", "6"]


def test_shards_share_the_seed_and_record_it_under_their_test():
    pinned = pin_seeds([{"shortname": "iofuzz.quick", "iofuzz_shards": "3", "fuzz_seed": ""}], seed_source=lambda: 9)
    parts = expand_shards(pinned, seed_source=lambda: 10)
    assert {p["fuzz_seed"] for p in parts} == {"9"}
    assert {seed_key(p) for p in parts} == {"iofuzz.quick"}
    assert resolved_seeds([dict(p, type=IOFUZZ_TYPE) for p in parts], IOFUZZ_TYPE) == {"iofuzz.quick": "9"}


def test_an_explicit_shard_keeps_its_own_name_as_key():
    assert seed_key({"shortname": "iofuzz.quick", "iofuzz_shard": "2/4"}) == "iofuzz.quick"
    assert seed_key({"shortname": "iofuzz.quick.shard2of4", "iofuzz_shard": "2/4"}) == "iofuzz.quick"
    assert seed_key({"shortname": "x", "iofuzz_shard": "garbage"}) == "x"


def _resolve(config: dict) -> list[dict]:
    resolver = IofuzzResolver(config=config)
    return [r.kwargs for r in resolver.resolve("iofuzz.quick").resolutions]


def test_the_resolver_pins_a_seed_and_a_replayed_config_gets_it_back():
    first = _resolve({"subcommand": "run"})
    assert first and all(p["fuzz_seed"].isdigit() for p in first)
    job = SimpleNamespace(
        config={}, test_suites=[SimpleNamespace(tests=[Runnable("avocado-vt", p["shortname"], **p) for p in first])]
    )
    IofuzzSeedRecord().pre(job)
    recorded = job.config[SEEDS_CONFIG_KEY]
    assert recorded == {p["shortname"]: p["fuzz_seed"] for p in first}
    again = _resolve({"subcommand": "run", SEEDS_CONFIG_KEY: recorded})
    assert [p["fuzz_seed"] for p in again] == [p["fuzz_seed"] for p in first]
    fresh = _resolve({"subcommand": "run"})
    assert [p["fuzz_seed"] for p in fresh] != [p["fuzz_seed"] for p in first]  # 64-bit draws: no collision
