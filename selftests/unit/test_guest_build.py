"""build_guest: the cache key follows every input, builds are atomic, bad input is named."""

from __future__ import annotations

import re
import stat
import sys
from pathlib import Path

import pytest
from guest_fakes import bzimage, pvh_elf
from test_guest_cpio import parse_newc

from avocado_iofuzz.guest import build as build_module
from avocado_iofuzz.guest import busybox
from avocado_iofuzz.guest.artifacts import GUEST_MARKER_PARAM
from avocado_iofuzz.guest.build import GuestBuildError, build_guest
from avocado_iofuzz.guest.busybox import BusyboxGuestError, is_static_x86_64_elf


@pytest.fixture
def inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A user kernel, a stand-in busybox and an executor, all small files."""
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(bzimage(pvh_elf(b"kernel")))
    fake_busybox = tmp_path / "busybox"
    fake_busybox.write_bytes(b"\x7fELF fake busybox")
    monkeypatch.setattr(busybox, "static_busybox", lambda cache_root: fake_busybox)
    executor = tmp_path / "iofuzz-exec"
    executor.write_bytes(b"\x7fELF executor v1")
    executor.chmod(0o755)
    return {"kernel": kernel, "busybox": fake_busybox, "executor": executor, "cache": tmp_path / "cache"}


def build(inputs: dict[str, Path], **extra: Path):
    files = {"/usr/bin/iofuzz-exec": inputs["executor"], **extra}
    return build_guest("busybox", kernel=inputs["kernel"], extra_files=files, cache_root=inputs["cache"])


def archive_entries(initrd: Path) -> dict[str, dict[str, object]]:
    return {entry["name"]: entry for entry in parse_newc(initrd.read_bytes())}


def test_guest_files_and_boot_parameters(inputs: dict[str, Path]):
    guest = build(inputs)
    assert guest.kernel.read_bytes() == pvh_elf(b"kernel")
    assert guest.kernel_format == "pvh-elf"
    assert guest.directory.name == guest.key
    assert GUEST_MARKER_PARAM in guest.kernel_params.split()
    assert "console=ttyS0" in guest.kernel_params.split()
    assert "quiet" not in guest.kernel_params.split()
    entries = archive_entries(guest.initrd)
    executor = entries["usr/bin/iofuzz-exec"]
    assert executor["data"] == inputs["executor"].read_bytes()
    assert stat.S_IMODE(executor["mode"]) == 0o755
    assert entries["bin/busybox"]["data"] == inputs["busybox"].read_bytes()
    assert entries["init"]["data"] == busybox.INIT_SCRIPT.encode()
    assert stat.S_IMODE(entries["init"]["mode"]) == 0o755
    assert guest.username is None and guest.password is None


def test_non_executable_extra_file_is_0644(inputs: dict[str, Path], tmp_path: Path):
    data = tmp_path / "ops.txt"
    data.write_text("w 0x80 1\n")
    data.chmod(0o600)
    guest = build(inputs, **{"/root/ops.txt": data})
    assert stat.S_IMODE(archive_entries(guest.initrd)["root/ops.txt"]["mode"]) == 0o644


def test_unchanged_inputs_reuse_the_cache_without_rebuilding(inputs: dict[str, Path]):
    first = build(inputs)
    inode = first.initrd.stat().st_ino
    second = build(inputs)
    assert second == first
    assert second.initrd.stat().st_ino == inode


@pytest.mark.parametrize("change", ["executor", "busybox", "kernel", "init", "builder"])
def test_each_input_changes_the_key(inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, change: str):
    before = build(inputs)
    if change == "executor":
        inputs["executor"].write_bytes(b"\x7fELF executor v2")
    elif change == "busybox":
        inputs["busybox"].write_bytes(b"\x7fELF another busybox")
    elif change == "kernel":
        inputs["kernel"].write_bytes(bzimage(pvh_elf(b"kernel 2")))
    elif change == "init":
        monkeypatch.setattr(busybox, "INIT_SCRIPT", busybox.INIT_SCRIPT + "# changed\n")
    else:
        monkeypatch.setattr(build_module, "BUILDER_VERSION", build_module.BUILDER_VERSION + 1)
    after = build(inputs)
    assert after.key != before.key
    assert before.initrd.exists()  # the old entry stays usable


def test_mode_change_of_extra_file_changes_the_key(inputs: dict[str, Path]):
    before = build(inputs)
    inputs["executor"].chmod(0o644)
    assert build(inputs).key != before.key


def test_interrupted_build_leaves_no_entry(inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch):
    def broken(target: Path, busybox_path: Path, extra: object) -> None:
        target.write_bytes(b"half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(busybox, "write_initramfs", broken)
    with pytest.raises(KeyboardInterrupt):
        build(inputs)
    assert list((inputs["cache"] / "guests").iterdir()) == []
    monkeypatch.undo()
    # a later build (with the real writer restored) completes normally
    monkeypatch.setattr(busybox, "static_busybox", lambda cache_root: inputs["busybox"])
    guest = build(inputs)
    assert "usr/bin/iofuzz-exec" in archive_entries(guest.initrd)


def test_unknown_guest_name_lists_known_ones(tmp_path: Path):
    with pytest.raises(GuestBuildError, match=r"unknown guest 'alpine'; known guests: busybox, debian"):
        build_guest("alpine", cache_root=tmp_path)


@pytest.mark.parametrize(
    ("guest_path", "message"),
    [
        ("usr/bin/x", "must be absolute"),
        ("/init", "replace the guest's own /init"),
        ("/bin/busybox", "replace the guest's own /bin/busybox"),
        ("/usr/../init", "replace the guest's own /init"),
        ("/tmp", "replace the guest directory /tmp"),
    ],
)
def test_bad_extra_guest_paths(inputs: dict[str, Path], guest_path: str, message: str):
    with pytest.raises(BusyboxGuestError, match=re.escape(message)):
        build(inputs, **{guest_path: inputs["executor"]})


def test_missing_extra_host_file_is_named(inputs: dict[str, Path], tmp_path: Path):
    with pytest.raises(BusyboxGuestError, match=r"/usr/bin/tool.*gone\.bin is not a regular file"):
        build(inputs, **{"/usr/bin/tool": tmp_path / "gone.bin"})


def test_prompt_regex_matches_the_prompt_line_only():
    prompt = re.compile(busybox.SHELL_PROMPT_REGEX)
    assert prompt.search("iofuzz-guest# ")
    assert prompt.search("iofuzz-guest# \x1b[6n")
    assert not prompt.search("iofuzz-guest# uname -r")
    assert not prompt.search("iofuzz-guest: init done, starting a root shell")
    assert busybox.PROMPT_TEXT in busybox.INIT_SCRIPT


def test_init_mounts_devtmpfs_before_it_opens_the_console():
    script = busybox.INIT_SCRIPT
    assert script.index("mount -t devtmpfs") < script.index("/dev/console")


def test_static_elf_detection():
    assert is_static_x86_64_elf(pvh_elf())  # no PT_INTERP
    python = Path(sys.executable).resolve().read_bytes()[:65536]
    if b"/ld-linux" in python:  # the usual, dynamically linked interpreter
        assert not is_static_x86_64_elf(python)
    assert not is_static_x86_64_elf(b"#!/bin/sh\n" + b"\0" * 100)
