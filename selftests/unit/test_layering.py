"""The package's rooms import in one direction: the pure ones know neither avocado nor the VT glue.

model/, campaign/, coverage/, guided/, results/ and vm/ get typed records from the VT glue (vt/),
never the avocado-vt params dict, so they import neither avocado nor virttest;
the pure model does not import the glue at all. Imports are read with ``ast``,
function-level ones included (a lazy import is an import all the same).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "avocado_iofuzz"
NO_AVOCADO_ROOMS = ("model", "campaign", "coverage", "guided", "results", "vm")
FRAMEWORKS = ("avocado", "virttest")


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute names (relative imports resolved within the package)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    return modules_imported_by(path.read_text(encoding="utf-8"), package)


def modules_imported_by(source: str, package: str) -> set[str]:
    """The modules ``source`` (a module of ``package``) imports, anywhere in it."""
    tree = ast.parse(source)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join([*base, *([node.module] if node.module else [])]))
            elif node.module:
                names.add(node.module)
    return names


def is_under(module: str, top: str) -> bool:
    return module == top or module.startswith(f"{top}.")


def modules_of(room: str) -> list[Path]:
    return sorted((PACKAGE / room).rglob("*.py"))


@pytest.mark.parametrize("room", NO_AVOCADO_ROOMS)
def test_rooms_below_the_glue_import_neither_avocado_nor_virttest(room):
    offenders = {
        f"{path.relative_to(PACKAGE)}: {module}"
        for path in modules_of(room)
        for module in imported_modules(path)
        if any(is_under(module, framework) for framework in FRAMEWORKS)
    }
    assert not offenders


def test_the_model_does_not_import_the_vt_glue():
    offenders = {
        f"{path.relative_to(PACKAGE)}: {module}"
        for path in modules_of("model")
        for module in imported_modules(path)
        if is_under(module, "avocado_iofuzz.vt")
    }
    assert not offenders


def test_the_import_reader_sees_imports_it_must_catch():
    """The check can fail: lazy imports inside functions and relative imports are all seen."""
    source = "def f():\n    from virttest import env_process\n    import avocado.core\n    from ..vt import params\n"
    assert modules_imported_by(source, "avocado_iofuzz.model") == {"virttest", "avocado.core", "avocado_iofuzz.vt"}
    assert "avocado_iofuzz.model.program" in imported_modules(PACKAGE / "model" / "kinds.py")
