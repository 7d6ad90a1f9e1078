"""The finding pages are what the table of classes renders, and every class names a reachable state."""

from __future__ import annotations

from pathlib import Path

from sockstates import finding_classes

DOCS = Path(__file__).resolve().parents[2] / "docs" / "criu-findings"


def test_every_class_has_its_page_and_script_as_rendered() -> None:
    for cls in finding_classes.CLASSES:
        assert (DOCS / f"{cls.slug}.rst").read_text() == finding_classes.page(cls), cls.slug
        assert (DOCS / f"{cls.slug}.py").read_text() == finding_classes.script(cls), cls.slug
        assert cls.exit_status in (0, 1, 2) and cls.criu in ("4.1.1", "4.2.1")


def test_scripts_name_no_machines_criu_and_compile() -> None:
    for cls in finding_classes.CLASSES:
        text = finding_classes.script(cls)
        assert "CRIU_USED = None" in text
        compile(text, cls.slug, "exec")
