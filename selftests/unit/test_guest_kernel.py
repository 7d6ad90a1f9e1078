"""Kernel preparation: PVH detection, vmlinux extraction from a bzImage, caching by content."""

from __future__ import annotations

from pathlib import Path

import pytest
from guest_fakes import bzimage, plain_elf, pvh_elf

from avocado_iofuzz.guest import debian_packages
from avocado_iofuzz.guest.debian_packages import DebianPackage
from avocado_iofuzz.guest.kernel import (
    KernelError,
    extract_vmlinux,
    has_pvh_entry,
    is_bzimage,
    prepare_debian_kernel,
    prepare_user_kernel,
)


def test_pvh_note_is_detected():
    assert has_pvh_entry(pvh_elf())
    assert not has_pvh_entry(plain_elf())


def test_notes_of_non_elf_are_an_error():
    with pytest.raises(KernelError, match="not an ELF"):
        has_pvh_entry(b"MZ" + b"\0" * 100)


def test_vmlinux_is_found_behind_a_decoy_magic():
    inner = pvh_elf(b"x" * 5000)
    image = bzimage(inner, decoy_magic=True)
    assert is_bzimage(image)
    assert extract_vmlinux(image) == inner


def test_uncompressed_payload_gives_no_vmlinux():
    assert extract_vmlinux(bzimage(pvh_elf(), decoy_magic=True, compress=False)) is None


def test_xz_stream_that_is_not_elf_is_ignored():
    assert extract_vmlinux(bzimage(b"just some data, not an ELF", decoy_magic=False)) is None


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_bzimage_with_pvh_vmlinux_boots_the_vmlinux(tmp_path: Path):
    inner = pvh_elf(b"k" * 1000)
    kernel = write(tmp_path, "vmlinuz", bzimage(inner))
    prepared = prepare_user_kernel(kernel, tmp_path / "cache")
    assert prepared.boot_format == "pvh-elf"
    assert prepared.boot_file.read_bytes() == inner
    assert prepared.identity.startswith("user-sha256:")


def test_bzimage_without_pvh_note_boots_the_bzimage(tmp_path: Path):
    image = bzimage(plain_elf())
    kernel = write(tmp_path, "vmlinuz", image)
    prepared = prepare_user_kernel(kernel, tmp_path / "cache")
    assert prepared.boot_format == "bzimage"
    assert prepared.boot_file.read_bytes() == image


def test_elf_vmlinux_with_pvh_is_used_as_is(tmp_path: Path):
    inner = pvh_elf()
    prepared = prepare_user_kernel(write(tmp_path, "vmlinux", inner), tmp_path / "cache")
    assert prepared.boot_format == "pvh-elf"
    assert prepared.boot_file.read_bytes() == inner


def test_elf_without_pvh_is_refused_with_a_hint(tmp_path: Path):
    with pytest.raises(KernelError, match=r"without a PVH entry note.*pass the bzImage"):
        prepare_user_kernel(write(tmp_path, "vmlinux", plain_elf()), tmp_path / "cache")


def test_unknown_file_is_refused(tmp_path: Path):
    with pytest.raises(KernelError, match="neither an ELF vmlinux nor an x86 bzImage"):
        prepare_user_kernel(write(tmp_path, "kernel", b"#!/bin/sh\n" * 100), tmp_path / "cache")


def test_missing_kernel_names_the_path(tmp_path: Path):
    with pytest.raises(KernelError, match="nope/vmlinuz does not exist"):
        prepare_user_kernel(tmp_path / "nope/vmlinuz", tmp_path / "cache")


def test_same_bytes_reuse_the_cache_entry_and_new_bytes_make_a_new_one(tmp_path: Path):
    kernel = write(tmp_path, "vmlinuz", bzimage(pvh_elf(b"one")))
    first = prepare_user_kernel(kernel, tmp_path / "cache")
    inode = first.boot_file.stat().st_ino
    again = prepare_user_kernel(kernel, tmp_path / "cache")
    assert again == first
    assert again.boot_file.stat().st_ino == inode  # not rewritten
    kernel.write_bytes(bzimage(pvh_elf(b"two")))
    changed = prepare_user_kernel(kernel, tmp_path / "cache")
    assert changed.identity != first.identity
    assert changed.boot_file != first.boot_file
    assert first.boot_file.read_bytes() == pvh_elf(b"one")


@pytest.fixture
def fake_debian(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, int]:
    """apt/dpkg replaced: the 'package' holds a bzImage wrapping a PVH vmlinux."""
    calls = {"download": 0}

    def download(package: DebianPackage, debs_dir: Path) -> Path:
        calls["download"] += 1
        debs_dir.mkdir(parents=True, exist_ok=True)
        deb = debs_dir / f"{package.name}_{package.version}_amd64.deb"
        deb.write_bytes(b"!<arch>\n")
        return deb

    def extract_members(deb: Path, patterns: list[str], out_dir: Path) -> dict[str, Path]:
        target = out_dir / "vmlinuz-6.1.0-99-amd64"
        target.write_bytes(bzimage(pvh_elf(b"debian kernel")))
        return {patterns[0]: target}

    monkeypatch.setattr(
        debian_packages,
        "resolve_metapackage",
        lambda meta, prefix, memo_dir=None: DebianPackage("linux-image-6.1.0-99-amd64", "6.1.999-1"),
    )
    monkeypatch.setattr(debian_packages, "download", download)
    monkeypatch.setattr(debian_packages, "extract_members", extract_members)
    return calls


def test_debian_kernel_is_extracted_once(fake_debian: dict[str, int], tmp_path: Path):
    prepared = prepare_debian_kernel(tmp_path / "cache")
    assert prepared.identity == "debian:linux-image-6.1.0-99-amd64=6.1.999-1"
    assert prepared.boot_format == "pvh-elf"
    assert prepared.boot_file.read_bytes() == pvh_elf(b"debian kernel")
    assert prepare_debian_kernel(tmp_path / "cache") == prepared
    assert fake_debian["download"] == 1


def test_without_apt_the_cached_debian_kernel_is_used(
    fake_debian: dict[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    prepared = prepare_debian_kernel(tmp_path / "cache")

    def no_apt(meta: str, prefix: str, memo_dir: Path | None = None) -> DebianPackage:
        raise debian_packages.DebianPackageError("apt-cache not found")

    monkeypatch.setattr(debian_packages, "resolve_metapackage", no_apt)
    assert prepare_debian_kernel(tmp_path / "cache") == prepared
    with pytest.raises(KernelError, match=r"apt-cache not found.*name a kernel"):
        prepare_debian_kernel(tmp_path / "empty-cache")
