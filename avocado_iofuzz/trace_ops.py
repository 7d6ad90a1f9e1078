"""The ops a trace holds, as a sequence computed on access.

A compact trace names its ops by range and index (``G`` records): the ops
themselves follow from the range's generator. A long run holds hundreds of
millions of them, far too many to materialise as Python objects, so a reader
gets this view instead: it behaves like the sorted list of ``(op_index, Op)``
pairs it stands for, and computes each op when asked. Ops that a trace lists
explicitly (``B`` records) are returned as listed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import overload

from avocado_iofuzz.program import Op, RangePlan


def merge_spans(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint, non-adjacent ``[first, stop)`` spans covering the same indices."""
    merged: list[tuple[int, int]] = []
    for first, stop in sorted(s for s in spans if s[0] < s[1]):
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((first, stop))
    return merged


class RangeOps(Sequence[tuple[int, Op]]):
    """``(op_index, Op)`` for every op of one range a trace holds, by index, each once."""

    def __init__(self, plan: RangePlan, spans: Iterable[tuple[int, int]], listed: Mapping[int, Op]) -> None:
        self.plan = plan
        self.spans = merge_spans(spans)
        self._listed = listed
        # _starts[k]: position in this sequence of the first op of spans[k]
        self._starts: list[int] = []
        position = 0
        for first, stop in self.spans:
            self._starts.append(position)
            position += stop - first
        self._length = position

    def __len__(self) -> int:
        return self._length

    def _op(self, index: int) -> Op:
        listed = self._listed.get(index)
        return listed if listed is not None else self.plan.op(index)

    def _index_at(self, position: int) -> int:
        k = bisect.bisect_right(self._starts, position) - 1
        return self.spans[k][0] + position - self._starts[k]

    @overload
    def __getitem__(self, position: int) -> tuple[int, Op]: ...

    @overload
    def __getitem__(self, position: slice) -> list[tuple[int, Op]]: ...

    def __getitem__(self, position: int | slice) -> tuple[int, Op] | list[tuple[int, Op]]:
        if isinstance(position, slice):
            return [self[p] for p in range(*position.indices(self._length))]
        if position < 0:
            position += self._length
        if not 0 <= position < self._length:
            raise IndexError(f"range {self.plan.index}: the trace holds {self._length} ops, no position {position}")
        index = self._index_at(position)
        return index, self._op(index)

    def __iter__(self) -> Iterator[tuple[int, Op]]:
        for first, stop in self.spans:
            for index in range(first, stop):
                yield index, self._op(index)

    def indices(self) -> Iterator[int]:
        """The op indices held, ascending (without computing any op)."""
        for first, stop in self.spans:
            yield from range(first, stop)

    def count_in(self, first: int, stop: int) -> int:
        """How many of the op indices ``first .. stop-1`` the trace holds."""
        return sum(max(0, min(stop, b) - max(first, a)) for a, b in self.spans)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RangeOps):
            return self.plan == other.plan and self.spans == other.spans and list(self) == list(other)
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(other) == self._length and all(a == b for a, b in zip(self, other, strict=False))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking sequence: unhashable like a list

    def __repr__(self) -> str:
        spans = ", ".join(f"{a}..{b - 1}" for a, b in self.spans)
        return f"<RangeOps range {self.plan.index}: {self._length} ops [{spans}]>"
