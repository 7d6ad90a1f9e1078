"""Fixtures the unit tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from avocado_iofuzz.executor.build import build_executor


@pytest.fixture(scope="session")
def executor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The in-guest executor compiled for the host: its --dry-run and script parsing touch no port or memory."""
    return build_executor(tmp_path_factory.mktemp("executor"))
