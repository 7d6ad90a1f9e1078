"""Splitting one campaign into shards that together do exactly its work.

A shard is ``K/N``: the K-th (1-based) of N parts. Every shard boots the same
guest, reads the same ``/proc/ioports`` and applies the same skips, so each
computes the same list of ranges; :func:`shard_ranges` then gives each range
to exactly one shard. Because a range's ops depend only on the run seed and the
range's bounds (see :mod:`avocado_iofuzz.program`), N shards sharing a seed
run, between them, exactly the ops of the unsharded campaign.

Shards become avocado tests (see :func:`expand_shards`), so avocado's runner
runs them in parallel on one host and a Jenkins matrix spreads them over hosts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from avocado_iofuzz.program import new_seed

SHARD_PARAM = "iofuzz_shard"  # "K/N": run only shard K of N
SHARDS_PARAM = "iofuzz_shards"  # "N": the resolver turns one test into N shard tests
_SHARD_RE = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")

T = TypeVar("T")


class ShardError(ValueError):
    """A shard spec that makes no sense; the message names the param."""


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def label(self) -> str:
        """How the shard reads in a test name: ``shard2of4``."""
        return f"shard{self.index}of{self.count}"


WHOLE = Shard(1, 1)


def parse_shard(text: str) -> Shard:
    """``"2/4"`` -> Shard(2, 4); empty -> the whole campaign."""
    if not str(text or "").strip():
        return WHOLE
    match = _SHARD_RE.fullmatch(str(text))
    if not match:
        raise ShardError(f"param {SHARD_PARAM} = {text!r}: expected K/N, e.g. 2/4")
    index, count = int(match[1]), int(match[2])
    if count < 1 or not 1 <= index <= count:
        raise ShardError(f"param {SHARD_PARAM} = {text!r}: need 1 <= K <= N")
    return Shard(index, count)


def parse_shard_count(text: str) -> int:
    raw = str(text or "").strip() or "1"
    try:
        count = int(raw)
    except ValueError:
        raise ShardError(f"param {SHARDS_PARAM} = {text!r}: not an integer") from None
    if count < 1:
        raise ShardError(f"param {SHARDS_PARAM} = {text!r}: must be >= 1")
    return count


def shard_ranges(items: Sequence[T], shard: Shard, weight: Callable[[T], int]) -> list[T]:
    """The items (in their original order) that belong to ``shard``.

    Heaviest first, each item goes to the currently lightest shard (ties: the
    lowest shard, then the earlier item): the shards' op counts stay close
    even when one range (a 0x1000-port PCI window) outweighs dozens of small
    ones. Deterministic, so every shard computes the same assignment.
    """
    loads = [0] * shard.count
    owner: dict[int, int] = {}
    order = sorted(range(len(items)), key=lambda i: (-weight(items[i]), i))
    for i in order:
        lightest = min(range(shard.count), key=lambda s: (loads[s], s))
        owner[i] = lightest
        loads[lightest] += weight(items[i])
    return [item for i, item in enumerate(items) if owner[i] == shard.index - 1]


def expand_shards(
    dicts: Iterable[Mapping[str, Any]], seed_source: Callable[[], int] = new_seed
) -> list[dict[str, Any]]:
    """One test per shard for each cartesian dict whose ``iofuzz_shards`` is N > 1.

    All shards of a test share one seed (drawn here when ``fuzz_seed`` is
    empty), or they would not be parts of one campaign. A dict that already
    names its shard (``iofuzz_shard = K/N``) is left as it is.
    """
    expanded: list[dict[str, Any]] = []
    for params in dicts:
        count = parse_shard_count(params.get(SHARDS_PARAM, "1"))
        if count == 1 or str(params.get(SHARD_PARAM, "") or "").strip():
            expanded.append(dict(params))
            continue
        seed = str(params.get("fuzz_seed", "") or "").strip() or str(seed_source())
        for index in range(1, count + 1):
            shard = Shard(index, count)
            part = dict(params, fuzz_seed=seed, **{SHARD_PARAM: str(shard)})
            part["shortname"] = f"{params['shortname']}.{shard.label}"
            part["name"] = f"{params.get('name', params['shortname'])}.{shard.label}"
            expanded.append(part)
    return expanded
