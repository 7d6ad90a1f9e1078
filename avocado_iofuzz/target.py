"""A range to fuzz in one address space, as chosen from the guest's listings (before planning)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from avocado_iofuzz.ranges import name_matches


@dataclass(frozen=True)
class Target:
    """Inclusive ``[start, end]`` in ``space`` (see :mod:`avocado_iofuzz.program`).

    ``aliases`` are other names the target answers to in ``skip_*`` and
    ``only_*`` patterns: a PCI function's BARs and config space also match
    its address (``0000:00:02.0``, ``00:02.0``) and IDs (``8086:100e``).
    """

    space: str
    start: int
    end: int
    name: str
    aliases: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    def matches(self, patterns: Iterable[str]) -> bool:
        patterns = list(patterns)
        return any(name_matches(name, patterns) for name in (self.name, *self.aliases))

    def __str__(self) -> str:
        return f"{self.space} {self.start:#x}-{self.end:#x} {self.name}"
