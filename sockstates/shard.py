"""Shards: split a sweep into N disjoint parts, so that runners and CI matrices can spread it.

States come out of the search in a fixed order; shard K/N takes the states
whose position P (0-based) in that order has P mod N = K - 1. Round robin
rather than contiguous blocks, because later states are deeper and slower to
check: every shard gets its share of each depth.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class ShardError(ValueError):
    """A shard spec that is not K/N with 1 <= K <= N."""


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` → (2, 4); empty → (1, 1), the whole sweep."""
    text = text.strip()
    if not text:
        return 1, 1
    match = re.fullmatch(r"(\d+)\s*/\s*(\d+)", text)
    if not match:
        raise ShardError(f"shard {text!r}: expected K/N, e.g. 2/4")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ShardError(f"shard {text!r}: K must be between 1 and N, and N at least 1")
    return index, count


def take(items: Iterable[T], index: int, count: int) -> Iterator[tuple[int, T]]:
    """(position, item) of the items in shard ``index``/``count``."""
    for position, item in enumerate(items):
        if position % count == index - 1:
            yield position, item
