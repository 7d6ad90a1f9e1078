"""Where the package's cfg/ and tests/ folders are, installed or in a checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # avocado_iofuzz/


def data_root() -> Path:
    """The folder holding ``cfg/`` and ``tests/``.

    ``pip install .`` copies them into ``avocado_iofuzz/data/``; in a source
    checkout (unit tests import the checkout) they are at the top of the tree.
    """
    checkout = _PACKAGE.parent
    for root in (_PACKAGE / "data", checkout):
        if (root / "cfg" / "iofuzz.cfg").is_file() and (root / "tests" / "iofuzz_vt.py").is_file():
            return root
    raise FileNotFoundError(
        f"avocado-iofuzz: no cfg/iofuzz.cfg + tests/iofuzz_vt.py under {_PACKAGE}/data or {checkout}"
    )


def cfg_dir() -> Path:
    return data_root() / "cfg"
