"""The Debian guest's assembly: overlay contents, initrd layout, cache keys, the base's fallback.

The slow parts (mmdebstrap, the kernel package, the executor's compiler) are
replaced by small files here; the functional tests build the real thing.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from test_guest_newc import parse_newc

from avocado_iofuzz.guest import debian, debian_rootfs
from avocado_iofuzz.guest.debian_rootfs import DebianBase, DebianRootfsError
from avocado_iofuzz.guest.kernel import PreparedKernel
from avocado_iofuzz.guest.kernel_modules import ModuleTree

STATUS = """Package: criu
Status: install ok installed
Version: 3.17.1-2+deb12u1

Package: removed-one
Status: deinstall ok config-files
Version: 1.0

Package: python3
Status: install ok installed
Version: 3.11.2-1+b1
"""


def test_dpkg_status_gives_installed_packages_only() -> None:
    assert debian_rootfs.parse_dpkg_status(STATUS) == {"criu": "3.17.1-2+deb12u1", "python3": "3.11.2-1+b1"}


def test_mmdebstrap_runs_unprivileged_and_includes_criu_and_python(tmp_path: Path) -> None:
    argv = debian_rootfs.mmdebstrap_argv(tmp_path / "base.tar")
    assert argv[0] == "mmdebstrap" and "--mode=fakechroot" in argv and "--variant=essential" in argv
    include = next(a for a in argv if a.startswith("--include="))
    assert {"python3", "criu", "iptables", "kmod"} <= set(include.removeprefix("--include=").split(","))
    assert argv[-2:] == [debian_rootfs.SUITE, str(tmp_path / "base.tar")]


def test_the_base_key_follows_the_apt_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debian_rootfs.debian_packages, "apt_lists_fingerprint", lambda: "lists-1")
    first = debian_rootfs.base_inputs()
    monkeypatch.setattr(debian_rootfs.debian_packages, "apt_lists_fingerprint", lambda: "lists-2")
    assert debian_rootfs.base_inputs() != first


def test_a_failed_build_falls_back_to_the_newest_cached_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def build_fails(staged: Path, inputs: dict) -> dict:
        raise DebianRootfsError("mmdebstrap failed: no network")

    monkeypatch.setattr(debian_rootfs, "_build", build_fails)
    with pytest.raises(DebianRootfsError, match="no network"):
        debian_rootfs.debian_base(tmp_path)

    def build_ok(staged: Path, inputs: dict) -> dict:
        (staged / "base.cpio.zst").write_bytes(b"base")
        return {"inputs": inputs, "archive": "base.cpio.zst", "packages": {"criu": "3.17.1"}}

    monkeypatch.setattr(debian_rootfs, "_build", build_ok)
    monkeypatch.setattr(debian_rootfs.debian_packages, "apt_lists_fingerprint", lambda: "old-lists")
    built = debian_rootfs.debian_base(tmp_path)
    monkeypatch.setattr(debian_rootfs, "_build", build_fails)
    monkeypatch.setattr(debian_rootfs.debian_packages, "apt_lists_fingerprint", lambda: "new-lists")
    fallback = debian_rootfs.debian_base(tmp_path)
    assert fallback.key == built.key and fallback.packages == {"criu": "3.17.1"}


def test_the_initrd_is_the_base_padded_to_four_bytes_then_the_overlay(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.write_bytes(b"12345")
    debian.concatenate_initrd(tmp_path / "initrd", base, b"070701-overlay")
    assert (tmp_path / "initrd").read_bytes() == b"12345" + bytes(3) + b"070701-overlay"


@pytest.mark.parametrize("path", ["/bin/tool", "/lib/x.so", "/tmp/file", "/init", "/etc/inputrc"])
def test_extra_files_may_not_replace_what_the_guest_owns(tmp_path: Path, path: str) -> None:
    host = tmp_path / "file"
    host.write_text("x")
    executor = tmp_path / "exec"
    executor.write_text("x")
    with pytest.raises(debian.GuestOverlayError, match=path.lstrip("/").split("/")[0]):
        debian._overlay_files(executor, None, {path.lstrip("/"): (host, 0o644)})


@pytest.fixture
def fake_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Stand-ins for the kernel, its modules, the base and the executor."""
    kernel_dir = tmp_path / "kernel"
    kernel_dir.mkdir()
    (kernel_dir / "vmlinux").write_bytes(b"\x7fELF kernel")
    kernel = PreparedKernel(kernel_dir / "vmlinux", "pvh-elf", "debian:linux-image-x=1", "debian:linux-image-x=1")
    modules = tmp_path / "modules"
    (modules / "lib/modules/6.1.0-x/kernel/net").mkdir(parents=True)
    (modules / "lib/modules/6.1.0-x/kernel/net/unix_diag.ko").write_bytes(b"module")
    (modules / "lib/modules/6.1.0-x/modules.dep").write_text("kernel/net/unix_diag.ko:\n")
    tree = ModuleTree(modules, "6.1.0-x", ("unix_diag",))
    base = tmp_path / "base.cpio.zst"
    base.write_bytes(b"zstd-base")
    executor = tmp_path / "iofuzz-exec"
    executor.write_bytes(b"\x7fELF exec")
    monkeypatch.setattr(debian, "prepare_kernel", lambda kernel_arg, root: kernel)
    monkeypatch.setattr(debian, "module_tree", lambda prepared, root: tree)
    monkeypatch.setattr(debian, "debian_base", lambda root: DebianBase(base, "base-key", {"criu": "3.17.1"}))
    import avocado_iofuzz.executor.build as executor_build

    monkeypatch.setattr(executor_build, "build_executor", lambda out_dir: executor)
    return {"base": base, "executor": executor, "cache": tmp_path / "cache"}


def overlay_entries(initrd: Path, base: Path) -> dict[str, dict]:
    data = initrd.read_bytes()
    base_length = len(base.read_bytes())
    start = base_length + (-base_length % 4)
    return {e["name"]: e for e in parse_newc(data[start:])}


def test_the_overlay_holds_init_modules_sockstates_and_the_executor(fake_inputs: dict[str, Path]) -> None:
    guest = debian.build_debian_guest(None, {}, fake_inputs["cache"])
    assert guest.name == "debian" and "iofuzz.guest=1" in guest.kernel_params
    entries = overlay_entries(guest.initrd, fake_inputs["base"])
    init = entries["init"]["body"].decode()
    assert "modprobe" in init and "unix_diag" in init and debian.PROMPT_TEXT in init
    assert entries["etc/inputrc"]["body"] == debian.INPUTRC.encode()
    assert entries["usr/bin/iofuzz-exec"]["body"] == b"\x7fELF exec"
    assert entries["usr/lib/modules/6.1.0-x/kernel/net/unix_diag.ko"]["body"] == b"module"
    assert f"{debian.SOCKSTATES_GUEST_DIR}/criu.py" in entries
    assert f"{debian.SOCKSTATES_GUEST_DIR}/__main__.py" in entries
    # merged /usr: the overlay must never carry a top-level lib, bin or sbin
    assert not any(name.split("/")[0] in debian.SYMLINKED_TOP_DIRS for name in entries)
    assert guest.initrd.read_bytes().startswith(b"zstd-base")


def test_the_guest_is_cached_and_rebuilt_only_when_an_input_changes(
    fake_inputs: dict[str, Path], tmp_path: Path
) -> None:
    first = debian.build_debian_guest(None, {}, fake_inputs["cache"])
    again = debian.build_debian_guest(None, {}, fake_inputs["cache"])
    assert again.key == first.key and again.initrd.stat().st_ino == first.initrd.stat().st_ino
    extra = tmp_path / "tool"
    extra.write_text("v1")
    with_extra = debian.build_debian_guest(None, {"/usr/local/bin/tool": extra}, fake_inputs["cache"])
    assert with_extra.key != first.key
    extra.write_text("v2")
    changed = debian.build_debian_guest(None, {"/usr/local/bin/tool": extra}, fake_inputs["cache"])
    assert changed.key != with_extra.key
    assert overlay_entries(changed.initrd, fake_inputs["base"])["usr/local/bin/tool"]["body"] == b"v2"


def test_write_overlay_is_a_newc_archive(tmp_path: Path) -> None:
    host = tmp_path / "f"
    host.write_bytes(b"data")
    out = io.BytesIO()
    debian.write_overlay(out, "#!/bin/sh\n", {"usr/share/x": (host, 0o600)})
    entries = {e["name"]: e for e in parse_newc(out.getvalue())}
    assert entries["usr/share/x"]["mode"] & 0o7777 == 0o600 and entries["init"]["mode"] & 0o111


def test_stale_guests_beyond_the_newest_are_pruned(tmp_path: Path) -> None:
    import json
    import os
    import time

    now = time.time()

    def entry(name: str, guest: str, age: float) -> Path:
        path = tmp_path / name
        path.mkdir()
        (path / "manifest.json").write_text(json.dumps({"inputs": {"guest": guest}}))
        os.utime(path / "manifest.json", (now - age, now - age))
        return path

    current = entry("current", "debian", 10_000)  # handed out just now: never removed
    recent = entry("recent", "debian", 60)  # may be about to boot
    old = [entry(f"old{i}", "debian", 7200 + i) for i in range(3)]
    busybox_entry = entry("busybox", "busybox", 99_999)
    removed = debian.prune_stale_entries(tmp_path, debian._is_debian_guest, keep=current, newest=2)
    assert sorted(removed) == sorted(old)  # two remain: the one in use and the newest other
    assert current.exists() and recent.exists() and busybox_entry.exists()
    assert debian.prune_stale_entries(tmp_path, debian._is_debian_guest, keep=current, newest=1) == []  # recent
