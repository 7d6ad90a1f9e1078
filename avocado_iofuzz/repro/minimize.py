"""Shrinking an op list that reproduces a finding: delta debugging, then simpler values and widths.

Both stages only need a *judge*: a function that replays a candidate op list
and says whether the same finding (same signature) came back. They never
assume the judge is cheap or deterministic-free of cost; a :class:`Budget`
bounds them by wall-clock time and number of replays, and when it runs out
the smallest list found so far is returned (it always reproduces: only lists
the judge accepted are ever kept).

:func:`ddmin` is Zeller's delta debugging with complements tried first:
for a device bug the crashing op is usually last and needs a few setup ops
from anywhere before it, which removing chunks finds faster than keeping
them. Tested candidates are cached, so no list is replayed twice.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from avocado_iofuzz.model.program import SPACE_PCI, SPACE_PIO, Op

LOG = logging.getLogger("avocado.test.iofuzz")

Judge = Callable[[Sequence[Op]], bool]


class BudgetExhausted(Exception):
    """Raised inside a stage when the budget ran out; the stage returns its best so far."""


@dataclass
class Budget:
    """Wall-clock seconds and replays a minimization may spend (None: unlimited)."""

    seconds: float | None = None
    max_tests: int | None = None
    clock: Callable[[], float] = time.monotonic
    tests: int = 0
    started: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.started = self.clock()

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    def exhausted(self) -> bool:
        if self.max_tests is not None and self.tests >= self.max_tests:
            return True
        return self.seconds is not None and self.elapsed >= self.seconds

    def charge(self) -> None:
        """Account for one replay about to run; BudgetExhausted if none is left."""
        if self.exhausted():
            raise BudgetExhausted()
        self.tests += 1


class CachedJudge:
    """Wraps a judge: counts replays against the budget and never replays the same list twice."""

    def __init__(self, judge: Judge, budget: Budget) -> None:
        self.judge = judge
        self.budget = budget
        self.cache: dict[tuple[Op, ...], bool] = {}
        self.ran_out = False

    def __call__(self, ops: Sequence[Op]) -> bool:
        key = tuple(ops)
        if key not in self.cache:
            try:
                self.budget.charge()
            except BudgetExhausted:
                self.ran_out = True
                raise
            self.cache[key] = bool(self.judge(key))
        return self.cache[key]


def _chunks(n_items: int, n_chunks: int) -> list[tuple[int, int]]:
    """``n_chunks`` contiguous [start, stop) spans covering ``n_items`` as evenly as possible."""
    bounds = [n_items * k // n_chunks for k in range(n_chunks + 1)]
    return [(bounds[k], bounds[k + 1]) for k in range(n_chunks) if bounds[k] < bounds[k + 1]]


def trim_prefix(ops: Sequence[Op], judge: CachedJudge) -> list[Op]:
    """Drop the longest prefix whose removal keeps the finding (binary search on the start).

    Fuzzing traces bury a finding under many harmless earlier ops; the setup
    it needs is usually recent. Cheap (log2 n replays) and makes ddmin's
    chunks meaningful. Assumes monotonicity; where it does not hold the
    result is still a failing list, only not the shortest suffix.
    """
    low, high = 0, len(ops) - 1  # ops[low:] is known to fail; ops[high+1:] is not tried
    try:
        while low < high:
            middle = (low + high + 1) // 2
            if judge(ops[middle:]):
                low = middle
            else:
                high = middle - 1
    except BudgetExhausted:
        pass
    return list(ops[low:])


# the PCI configuration mechanism: an address write and its data access are a pair, never collapsed
_CONFIG_PORTS = range(0xCF8, 0xD00)


def _collapsible(op: Op) -> bool:
    return not (op.space == SPACE_PIO and op.port in _CONFIG_PORTS)


def without_reads(ops: Sequence[Op]) -> list[Op]:
    return [op for op in ops if op.kind != "r" or not _collapsible(op)]


def last_writes(ops: Sequence[Op]) -> list[Op]:
    """Only the last write to each register (address, width, space), in their order; reads dropped.

    A device's state is mostly its registers' last values: for a fuzzing
    trace of hundreds of thousands of ops this is one replay instead of
    dozens of ddmin rounds at full size. Config-mechanism ports are kept whole.
    """
    last: dict[tuple[str, int, int], int] = {}
    for index, op in enumerate(ops):
        if op.kind == "w" and _collapsible(op):
            last[(op.space, op.port, op.width)] = index
    keep = set(last.values())
    return [op for index, op in enumerate(ops) if index in keep or not _collapsible(op)]


def region(op: Op) -> tuple[str, int]:
    """Where an op goes, coarsely: a 64 KiB MMIO window, a PCI function, 256 ports (config ports apart)."""
    if op.space == SPACE_PIO:
        return (op.space, -1 if op.port in _CONFIG_PORTS else op.port >> 8)
    return (op.space, op.port >> (12 if op.space == SPACE_PCI else 16))


MAX_REGIONS = 16


def without_regions(ops: Sequence[Op], judge: CachedJudge) -> list[Op]:
    """Drop whole regions (a BAR, a function's config space), largest first, where the finding stays."""
    current = list(ops)
    sizes = Counter(region(op) for op in current if _collapsible(op))
    if not 1 < len(sizes) <= MAX_REGIONS:
        return current
    for place, _ in sizes.most_common():
        candidate = [op for op in current if not _collapsible(op) or region(op) != place]
        if judge(candidate):
            LOG.info("minimize: ops to %s %s not needed, %d -> %d ops", *place, len(current), len(candidate))
            current = candidate
    return current


def reduce_heuristically(ops: Sequence[Op], judge: CachedJudge, min_ops: int = 64) -> list[Op]:
    """Big cuts first, each kept only if the finding stays: the last write per register, no reads, whole regions.

    Cheap (a handful of replays) and, on long fuzzing traces, the bulk of the
    reduction; ddmin then works on what is left. Short lists go straight to ddmin.
    """
    current = list(ops)
    if len(current) < min_ops:
        return current
    try:
        for cut in (last_writes, without_reads):
            candidate = cut(current)
            if len(candidate) < len(current) and judge(candidate):
                LOG.info("minimize: %s kept the finding, %d -> %d ops", cut.__name__, len(current), len(candidate))
                current = candidate
        current = without_regions(current, judge)
    except BudgetExhausted:
        pass
    return current


def ddmin(ops: Sequence[Op], judge: CachedJudge) -> list[Op]:
    """A 1-minimal failing sub-list of ``ops`` (``ops`` must fail), or the best found in the budget."""
    current = list(ops)
    granularity = 2
    try:
        while len(current) >= 2:
            spans = _chunks(len(current), granularity)
            reduced = False
            # complements first: drop one chunk and keep the rest
            for start, stop in spans:
                candidate = current[:start] + current[stop:]
                if candidate and judge(candidate):
                    current = candidate
                    granularity = max(granularity - 1, 2)
                    reduced = True
                    break
            if not reduced and granularity > 2:
                # then single chunks (with two chunks these are the complements already tried)
                for start, stop in spans:
                    candidate = current[start:stop]
                    if judge(candidate):
                        current = candidate
                        granularity = 2
                        reduced = True
                        break
            if not reduced:
                if granularity >= len(current):
                    break
                granularity = min(granularity * 2, len(current))
    except BudgetExhausted:
        LOG.info("ddmin: budget exhausted at %d ops", len(current))
    return current


def _narrower(op: Op) -> list[Op]:
    """The same access with a smaller width (the value cut to fit), narrowest first."""
    return [replace(op, width=width, value=op.value & ((1 << (8 * width)) - 1)) for width in (1, 2) if width < op.width]


def _smaller_values(value: int) -> list[int]:
    """0, then ``value`` with one set bit cleared, highest bit first."""
    candidates = [0] if value else []
    bit = value.bit_length() - 1
    while bit >= 0:
        if value >> bit & 1:
            smaller = value & ~(1 << bit)
            if smaller:
                candidates.append(smaller)
        bit -= 1
    return candidates


def simplify(ops: Sequence[Op], judge: CachedJudge) -> list[Op]:
    """Narrower accesses and values with fewer bits set, op by op, keeping the finding.

    Each op is first tried narrower (``outl`` -> ``outb``/``outw``), then its
    value is shrunk greedily: 0 if that works, else one bit cleared at a time
    while the finding stays. The list keeps its length and order.
    """
    current = list(ops)
    try:
        for index in range(len(current)):
            for narrower in _narrower(current[index]):
                candidate = [*current[:index], narrower, *current[index + 1 :]]
                if judge(candidate):
                    current = candidate
                    break
            if current[index].kind != "w":
                continue
            improved = True
            while improved and current[index].value:
                improved = False
                for value in _smaller_values(current[index].value):
                    candidate = [*current[:index], replace(current[index], value=value), *current[index + 1 :]]
                    if judge(candidate):
                        current = candidate
                        improved = True
                        break
    except BudgetExhausted:
        LOG.info("simplify: budget exhausted")
    return current


@dataclass(frozen=True)
class Minimized:
    ops: list[Op]
    original_ops: int
    tests: int
    seconds: float
    complete: bool  # False if the budget ran out before the stages finished


def minimize_ops(ops: Sequence[Op], judge: Judge, budget: Budget, simplify_values: bool = True) -> Minimized:
    """trim_prefix -> ddmin -> simplify within ``budget``; ``ops`` must already reproduce."""
    cached = CachedJudge(judge, budget)
    cached.cache[tuple(ops)] = True  # the caller checked it
    current = trim_prefix(reduce_heuristically(ops, cached), cached)
    LOG.info("minimize: prefix trimmed, %d -> %d ops (%d replays)", len(ops), len(current), budget.tests)
    current = ddmin(current, cached)
    LOG.info("minimize: ddmin left %d ops (%d replays, %.1f s)", len(current), budget.tests, budget.elapsed)
    if simplify_values:
        current = simplify(current, cached)
    return Minimized(current, len(ops), budget.tests, budget.elapsed, complete=not cached.ran_out)
