"""Breadth-first search over canonical states.

A state is known by its description string; the first time a description is
met is by a shortest syscall sequence (breadth first), and later meetings are
dropped, so the search does work per distinct state, not per sequence.

The space is the unix one (`actions.Bounds`) or the TCP/UDP one
(`sockstates.inet.rules.Bounds`): the same search over another model.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sockstates import actions, model
from sockstates.syscall import Syscall


@dataclass(frozen=True)
class Found:
    description: str
    depth: int
    syscalls: tuple[Syscall, ...]
    state: Any  # model.State, or sockstates.inet.model.State


@dataclass
class Stats:
    per_depth: list[int] = field(default_factory=list)  # new states found at each depth
    transitions: int = 0  # successor states computed (and described)
    seconds: float = 0.0
    closed: bool = False  # the search ran out of new states before the depth bound

    @property
    def states(self) -> int:
        return sum(self.per_depth)


def explore(bounds: Any, depth: int | None, stats: Stats | None = None) -> Iterator[Found]:
    """Yield every state within `depth` syscalls (None: no bound, until closure),
    once, with one of its shortest sequences, depth by depth, deterministically."""
    if depth is not None and depth < 0:
        raise actions.BoundsError(f"depth must be >= 0, got {depth}")
    stats = stats if stats is not None else Stats()
    # The search allocates millions of tuples and no reference cycles: the
    # cyclic garbage collector would only rescan them, again and again (a
    # third of the time of a large closure).
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield from _search(bounds, depth, stats)
    finally:
        if collecting:
            # what the search keeps (caches of descriptions) has no cycles
            # either: keep the collector off it from now on
            gc.freeze()
            gc.enable()


def _space(bounds: Any) -> tuple[Any, Callable[[Any], str], Callable[[Any, Any], Iterator]]:
    """The root, the describer and the successors of the space ``bounds`` belong to."""
    if isinstance(bounds, actions.Bounds):
        return model.EMPTY, model.describe, actions.successors
    from sockstates.inet import model as inet_model
    from sockstates.inet import rules as inet_rules

    if isinstance(bounds, inet_rules.Bounds):
        return inet_model.EMPTY, inet_model.describe, inet_rules.successors
    raise TypeError(f"no state space for {bounds!r}")


def _search(bounds: Any, depth: int | None, stats: Stats) -> Iterator[Found]:
    start = time.perf_counter()
    root, describe, successors = _space(bounds)
    root_desc = describe(root)
    seen: set[str] = {root_desc}
    frontier = [Found(root_desc, 0, (), root)]
    stats.per_depth.append(1)
    yield frontier[0]
    level = 0
    while frontier and (depth is None or level < depth):
        level += 1
        nxt: list[Found] = []
        for parent in frontier:
            for call, state in successors(parent.state, bounds):
                stats.transitions += 1
                desc = describe(state)
                if desc in seen:
                    continue
                seen.add(desc)
                found = Found(desc, level, (*parent.syscalls, call), state)
                nxt.append(found)
                yield found
        if nxt:
            stats.per_depth.append(len(nxt))
        frontier = nxt
        stats.seconds = time.perf_counter() - start
    stats.closed = not frontier
    stats.seconds = time.perf_counter() - start
