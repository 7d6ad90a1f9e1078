"""Seeds drawn at resolution time, so that ``avocado replay JOB`` fuzzes the same ops again.

When ``fuzz_seed`` is empty the resolver draws the seed (not the test, at run
time): the seed is then a param of the job's runnables, and every shard of a
test gets the same one. ``avocado replay`` builds the job again from the
recorded job config and resolves the references once more, so a job pre
plugin copies the drawn seeds into that config under ``iofuzz.replay_seeds``
(test short name -> seed) before avocado records it; on replay the resolver
takes a test's seed from there instead of drawing a new one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from avocado_iofuzz.model.program import new_seed
from avocado_iofuzz.model.shards import SHARD_PARAM, ShardError, parse_shard

SEEDS_CONFIG_KEY = "iofuzz.replay_seeds"


def seed_key(params: Mapping[str, Any]) -> str:
    """The test's short name without the shard label ``expand_shards`` appended: one key per campaign."""
    shortname = str(params["shortname"])
    try:
        shard = parse_shard(str(params.get(SHARD_PARAM, "") or ""))
    except ShardError:
        return shortname
    suffix = f".{shard.label}"
    return shortname.removesuffix(suffix) if shard.count > 1 else shortname


def pin_seeds(
    dicts: Iterable[Mapping[str, Any]],
    recorded: Mapping[str, Any] | None = None,
    seed_source: Callable[[], int] = new_seed,
) -> list[dict[str, Any]]:
    """Each dict with an empty ``fuzz_seed`` gets the recorded seed of its test, or a new one."""
    recorded = recorded or {}
    pinned = []
    for params in dicts:
        params = dict(params)
        if not str(params.get("fuzz_seed", "") or "").strip():
            params["fuzz_seed"] = str(recorded.get(seed_key(params)) or seed_source())
        pinned.append(params)
    return pinned


def resolved_seeds(runnable_params: Iterable[Mapping[str, Any]], test_type: str) -> dict[str, str]:
    """The seed of every test of ``test_type`` among a job's runnables, by ``seed_key``."""
    return {
        seed_key(params): str(params["fuzz_seed"])
        for params in runnable_params
        if params.get("type") == test_type and str(params.get("fuzz_seed", "") or "").strip()
    }
