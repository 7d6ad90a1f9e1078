"""Suite-wide ordering: the fast tier first.

Pure-logic tests (selftests/unit) run before anything that boots a guest,
builds a venv or starts avocado, so that a broken unit shows within seconds
of `pytest` starting instead of after the guest tier's minutes.
"""

from __future__ import annotations

import pytest

UNIT_DIR = "unit"


def _tier(item: pytest.Item) -> int:
    if item.path.parent.name == UNIT_DIR:
        return 0
    return 2 if item.get_closest_marker("guest") else 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_tier)  # stable: within a tier the files keep their order
