"""Reading a Sources index for CRIU's tarball, and deciding whether a host CRIU is too old for its kernel."""

from __future__ import annotations

import pytest

from avocado_iofuzz.guest.host_criu import HostCriuError, PrivateApt, parse_showsrc
from avocado_iofuzz.vt.sockstates_test import host_criu_too_old, kernel_version

ORIG_SHA = "f80a66cb3726bb2116266d4759ce3bcbfab7abdb6b6d430bf20dd41911717afe"


def stanza(version: str, files: list[tuple[str, int, str]], package: str = "criu") -> str:
    checksums = "\n".join(f" {sha} {size} {name}" for sha, size, name in files)
    return (
        f"Package: {package}\nBinary: criu, libcriu2\nVersion: {version}\n"
        "Build-Depends: libbsd-dev, libcap-dev,\n protobuf-c-compiler\n"
        f"Checksums-Sha256:\n{checksums}\nHomepage: https://www.criu.org/\n"
        "Package-List: \n criu deb admin optional arch=amd64\nDirectory: pool/main/c/criu\nPriority: optional\n"
    )


def trixie_files(upstream: str = "4.1.1", revision: str = "1") -> list[tuple[str, int, str]]:
    return [
        ("1" * 64, 2806, f"criu_{upstream}-{revision}.dsc"),
        (ORIG_SHA, 1021136, f"criu_{upstream}.orig.tar.xz"),
        ("2" * 64, 12368, f"criu_{upstream}-{revision}.debian.tar.xz"),
    ]


def test_the_upstream_tarball_and_its_checksum_are_read_from_the_index():
    release = parse_showsrc(stanza("4.1.1-1", trixie_files()), "criu")
    assert (release.tarball, release.sha256, release.size) == ("criu_4.1.1.orig.tar.xz", ORIG_SHA, 1021136)
    assert release.upstream_version == "4.1.1"
    assert release.url("http://deb.debian.org/debian/") == (
        "http://deb.debian.org/debian/pool/main/c/criu/criu_4.1.1.orig.tar.xz"
    )


def test_the_newest_of_several_releases_is_picked():
    text = "\n\n".join([stanza("4.1-2", trixie_files("4.1", "2")), stanza("4.1.1-1", trixie_files())])
    assert parse_showsrc(text, "criu").version == "4.1.1-1"


def test_epoch_and_revision_are_not_part_of_the_upstream_version():
    release = parse_showsrc(stanza("1:4.2-0.1", trixie_files("4.2", "0.1")), "criu")
    assert release.upstream_version == "4.2"


def test_other_packages_in_the_output_are_ignored():
    text = stanza("9.9-1", trixie_files("9.9"), package="criu-extra") + "\n\n" + stanza("4.1.1-1", trixie_files())
    assert parse_showsrc(text, "criu").version == "4.1.1-1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "knows no source package 'criu'"),
        ("Package: criu\nVersion: 4.1.1-1\n", "lacks Directory, Checksums-Sha256"),
        (stanza("4.1.1-1", [("1" * 64, 10, "criu_4.1.1-1.dsc")]), "expected one upstream tarball, found []"),
    ],
)
def test_an_index_without_what_we_need_is_named(text, message):
    with pytest.raises(HostCriuError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_showsrc(text, "criu")


def test_bad_suite_and_mirror_are_refused_before_apt_runs(tmp_path):
    with pytest.raises(HostCriuError, match="not a Debian suite name"):
        PrivateApt(tmp_path, "trixie main\ndeb http://evil", "http://deb.debian.org/debian")
    with pytest.raises(HostCriuError, match="expected an http"):
        PrivateApt(tmp_path, "trixie", "file:///etc")


def test_the_private_sources_list_names_only_the_suites_sources(tmp_path):
    apt = PrivateApt(tmp_path, "trixie", "http://deb.debian.org/debian")
    line = apt.sources.read_text().strip()
    assert line.startswith("deb-src") and line.endswith("http://deb.debian.org/debian trixie main")
    assert f"Dir::State::Lists={tmp_path / 'lists'}" in apt.options()


@pytest.mark.parametrize(
    ("release", "expected"),
    [("6.18.44-fc-v657", (6, 18)), ("6.1.0-28-amd64", (6, 1)), ("5.15.0", (5, 15)), ("6.13rc1", (6, 13)),
     ("weird", (0, 0)), ("", (0, 0))],
)  # fmt: skip
def test_kernel_version_reads_major_and_minor(release, expected):
    assert kernel_version(release) == expected


@pytest.mark.parametrize(
    ("criu", "kernel", "too_old"),
    [
        ((3, 17, 1), "6.18.44-fc-v657", True),  # this machine
        ((3, 17, 1), "6.12.9", False),  # before the vDSO moved
        ((3, 17, 1), "6.13.0", True),
        ((4, 1), "6.18.0", False),
        ((4, 1, 1), "6.18.0", False),
        ((4, 0), "unknown", True),  # cannot tell: assume the worst
    ],
)
def test_old_criu_is_refused_only_on_kernels_that_moved_the_vdso(criu, kernel, too_old):
    assert host_criu_too_old(criu, kernel) is too_old


def test_bootstrap_installs_every_build_dependency():
    import re
    from pathlib import Path

    from avocado_iofuzz.guest.host_criu import BUILD_DEPENDS, BUILD_LIBRARIES, BUILD_TOOLS

    words = set(re.findall(r"[a-z0-9][a-z0-9.+-]+", (Path(__file__).parents[2] / "bootstrap.sh").read_text()))
    assert set(BUILD_DEPENDS) - words == set()
    assert set(BUILD_TOOLS.values()) | set(BUILD_LIBRARIES.values()) <= set(BUILD_DEPENDS)
