"""The manual: the Sphinx tree under docs/ builds without a warning, and
README.rst stays a front page that PyPI can render and that starts with the
two commands a new user runs."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.rst"
DOCS = REPO / "docs"

FIRST_COMMANDS = [
    "./bootstrap.sh && .venv/bin/avocado run iofuzz",
    "./bootstrap.sh --test && .venv/bin/pytest",
]


def test_sphinx_builds_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "--keep-going",
        "-q",
        "-b",
        "html",
        "-d",
        str(tmp_path / "doctrees"),
        str(DOCS),
        str(tmp_path / "html"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "WARNING" not in done.stderr, done.stdout + done.stderr
    assert (tmp_path / "html" / "index.html").is_file()


def test_every_page_is_in_a_toctree():
    pages = {str(p.relative_to(DOCS).with_suffix("")) for p in DOCS.rglob("*.rst") if "_build" not in p.parts}
    listed = set()
    for page in pages:  # a toctree names its entries relative to the page that holds it
        text = (DOCS / f"{page}.rst").read_text(encoding="utf-8")
        folder = Path(page).parent
        for block in re.findall(r"^\.\. toctree::\n((?:   .*\n|\n)+)", text, re.M):
            entries = re.findall(r"^   ([^\s:][^\s]*)$", block, re.M)
            listed |= {str(folder / entry) for entry in entries}
    assert pages - {"index"} == listed


def test_readme_is_a_front_page():
    assert README.stat().st_size <= 25 * 1024


def _readme_doctree():
    from docutils.core import publish_doctree

    warnings = io.StringIO()
    # as PyPI renders a long description: any warning is an error
    return publish_doctree(
        README.read_text(encoding="utf-8"),
        source_path=str(README),
        settings_overrides={"halt_level": 2, "report_level": 2, "warning_stream": warnings},
    )


def test_readme_renders_as_a_pypi_long_description():
    pytest.importorskip("docutils")
    _readme_doctree()


def test_readme_starts_with_the_two_commands():
    pytest.importorskip("docutils")
    from docutils import nodes

    doc = _readme_doctree()
    body = [child for child in doc.children if not isinstance(child, nodes.title)]
    # the sentence that says where to run them, the commands, the paragraph on what they do
    assert [type(child) for child in body[:3]] == [nodes.paragraph, nodes.literal_block, nodes.paragraph]
    commands = [line.split("#")[0].strip() for line in body[1].astext().splitlines()]
    assert commands == FIRST_COMMANDS
    assert body[2].astext().startswith("bootstrap.sh installs the host packages it needs")


def _doc_pointers():
    """Every ``docs/....rst, "Section"`` a comment in the code points at."""
    pointers = []
    for folder in ("avocado_iofuzz", "sockstates", "tests", "cfg", "selftests", "benchmarks"):
        for path in sorted((REPO / folder).rglob("*")):
            if path.suffix not in (".py", ".cfg", ".c", ".sh") or path == Path(__file__):
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            for m in re.finditer(r"(docs/[\w/]+\.rst)(?:,\s*\"([^\"]+)\")?", text):
                # a section name may wrap onto the next comment line
                section = re.sub(r"\s*\n\s*(?:#\s*)?", " ", m.group(2)) if m.group(2) else None
                pointers.append((path.relative_to(REPO), m.group(1), section))
    return pointers


def test_code_points_at_pages_and_sections_that_exist():
    pointers = _doc_pointers()
    assert pointers, "no comment points at docs/ any more"
    for source, page, section in pointers:
        target = REPO / page
        assert target.is_file(), f"{source}: {page} does not exist"
        if section:
            lines = target.read_text(encoding="utf-8").splitlines()
            headings = {
                lines[i - 1].strip()
                for i in range(1, len(lines))
                if re.fullmatch(r"([=\-~^])\1+", lines[i]) and lines[i - 1].strip()
            }
            assert section in headings, f"{source}: no section {section!r} in {page}"


def test_no_code_points_at_readme_sections():
    for folder in ("avocado_iofuzz", "sockstates", "tests", "cfg"):
        for path in (REPO / folder).rglob("*"):
            if path.suffix in (".py", ".cfg", ".c"):
                assert "README" not in path.read_text(encoding="utf-8", errors="replace"), path
    assert "README" not in (REPO / "bootstrap.sh").read_text(encoding="utf-8")
