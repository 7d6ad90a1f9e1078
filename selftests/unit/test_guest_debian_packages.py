"""Resolving Debian's kernel metapackage, and remembering the answer until apt's lists change."""

from __future__ import annotations

from pathlib import Path

import pytest

from avocado_iofuzz.guest import debian_packages
from avocado_iofuzz.guest.debian_packages import (
    DebianPackageError,
    apt_lists_fingerprint,
    parse_depends_field,
    resolve_metapackage,
)

SHOW_PINNED = """Package: linux-image-amd64
Version: 6.1.192-2
Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)
Description-en: Linux for 64-bit PCs (meta-package)
"""

SHOW_ALTERNATIVES = """Package: meta
Depends: libc6 (>= 2.36), foo-bar | linux-image-6.1.0-9-amd64, other
"""


def test_pinned_dependency_gives_name_and_version():
    assert parse_depends_field(SHOW_PINNED, "linux-image-") == ("linux-image-6.1.0-56-amd64", "6.1.192-2")


def test_alternatives_and_unpinned_versions():
    assert parse_depends_field(SHOW_ALTERNATIVES, "linux-image-") == ("linux-image-6.1.0-9-amd64", None)


def test_no_matching_dependency():
    assert parse_depends_field(SHOW_PINNED, "busybox") is None
    assert parse_depends_field("Package: x\n", "linux-image-") is None


def test_fingerprint_changes_when_lists_change(tmp_path: Path):
    before = apt_lists_fingerprint(tmp_path)
    (tmp_path / "deb.debian.org_dists_bookworm_main_binary-amd64_Packages").write_text("Package: a\n")
    after = apt_lists_fingerprint(tmp_path)
    assert before != after
    assert apt_lists_fingerprint(tmp_path) == after
    assert apt_lists_fingerprint(tmp_path / "missing") == "no-apt-lists"


@pytest.fixture
def fake_apt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[list[str]]:
    calls: list[list[str]] = []
    lists = tmp_path / "lists"
    lists.mkdir()

    def run(argv: list[str], cwd: Path | None = None, timeout: float = 600) -> str:
        calls.append(argv)
        if argv[:2] == ["apt-cache", "show"]:
            return SHOW_PINNED
        raise AssertionError(f"unexpected command {argv}")

    monkeypatch.setattr(debian_packages, "_run", run)
    monkeypatch.setattr(debian_packages, "APT_LISTS_DIR", lists)
    return calls


def test_resolution_is_memoised_until_the_lists_change(fake_apt: list[list[str]], tmp_path: Path):
    memo = tmp_path / "memo"
    package = resolve_metapackage("linux-image-amd64", "linux-image-", memo_dir=memo)
    assert package.ident == "linux-image-6.1.0-56-amd64=6.1.192-2"
    assert resolve_metapackage("linux-image-amd64", "linux-image-", memo_dir=memo) == package
    assert len(fake_apt) == 1
    (tmp_path / "lists" / "new_Packages").write_text("changed")
    resolve_metapackage("linux-image-amd64", "linux-image-", memo_dir=memo)
    assert len(fake_apt) == 2


def test_unresolvable_metapackage_says_what_to_do(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(debian_packages, "_run", lambda argv, **kwargs: "Package: linux-image-amd64\n")
    with pytest.raises(DebianPackageError, match="apt-get update"):
        resolve_metapackage("linux-image-amd64", "linux-image-")


def test_missing_tool_is_named(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(debian_packages.shutil, "which", lambda name: None)
    with pytest.raises(DebianPackageError, match="apt-cache not found"):
        debian_packages.candidate_version("busybox-static")
