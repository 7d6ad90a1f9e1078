"""Kernel preparation: PVH detection, vmlinux extraction from a bzImage, caching by content."""

from __future__ import annotations

from pathlib import Path

import pytest
from guest_fakes import bzimage, plain_elf, pvh_elf

from avocado_iofuzz.guest.kernel import (
    KernelError,
    extract_vmlinux,
    has_pvh_entry,
    is_bzimage,
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
