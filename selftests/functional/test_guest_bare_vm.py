"""The default busybox guest booted in a bare QEMU under the probed accelerator.

One boot serves the login/command/trace/reset tests (module fixture); the
crash test boots its own VM because it kills QEMU.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aexpect.remote import LoginError

from avocado_iofuzz.guest.artifacts import EXECUTOR_GUEST_PATH, GUEST_MARKER_PARAM, GuestArtifacts
from avocado_iofuzz.guest.build import build_guest, default_guest
from avocado_iofuzz.guest.cache import resolve_cache_root
from avocado_iofuzz.guest.kernel import has_pvh_entry, prepare_debian_kernel
from avocado_iofuzz.vm.bare import BareQemu

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]

LOG = logging.getLogger(__name__)
LOGIN_TIMEOUT = 90


@pytest.fixture(scope="module")
def guest() -> GuestArtifacts:
    started = time.monotonic()
    artifacts = default_guest()
    LOG.info("default_guest() took %.2f s", time.monotonic() - started)
    return artifacts


@pytest.fixture(scope="module")
def booted(guest: GuestArtifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BareQemu, float]]:
    vm = BareQemu(guest, tmp_path_factory.mktemp("vm"), trace_events=["serial_write"])
    started = time.monotonic()
    with vm:
        vm.login(LOGIN_TIMEOUT)
        boot_seconds = time.monotonic() - started
        print(f"\nboot to prompt under {vm.accel}: {boot_seconds:.2f} s ({vm.accel_reason})")
        yield vm, boot_seconds
    assert not vm.is_alive()


def test_debian_kernel_boots_through_pvh(guest: GuestArtifacts):
    assert guest.kernel_format == "pvh-elf"
    assert has_pvh_entry(guest.kernel.read_bytes())


def test_shell_runs_the_guest_kernel_with_the_marker(booted: tuple[BareQemu, float], guest: GuestArtifacts):
    vm, _ = booted
    session = vm.login(LOGIN_TIMEOUT)
    release = session.cmd_output("uname -r").strip()
    assert release and release in guest.kernel_source  # e.g. debian:linux-image-<release>=<version>
    cmdline = session.cmd_output("cat /proc/cmdline").strip()
    assert cmdline == guest.kernel_params
    assert GUEST_MARKER_PARAM in cmdline.split()
    status, _ = session.cmd_status_output("false")
    assert status == 1


def test_executor_is_in_the_guest(booted: tuple[BareQemu, float], guest: GuestArtifacts):
    vm, _ = booted
    session = vm.login(LOGIN_TIMEOUT)
    assert session.cmd_output(f"stat -c %a {EXECUTOR_GUEST_PATH}").strip() == "755"
    in_guest = session.cmd_output(f"sha256sum {EXECUTOR_GUEST_PATH}").split()[0]
    manifest = json.loads((guest.directory / "manifest.json").read_text())
    built_sha256, perms = manifest["inputs"]["extra"][EXECUTOR_GUEST_PATH.lstrip("/")]
    assert in_guest == built_sha256
    assert perms == 0o755


def test_trace_log_sees_device_accesses(booted: tuple[BareQemu, float]):
    vm, _ = booted
    session = vm.login(LOGIN_TIMEOUT)
    session.cmd_output("echo traced")
    text = vm.trace_log_path.read_text(errors="replace")
    assert "serial_write" in text


def test_relogin_gives_a_working_session(booted: tuple[BareQemu, float]):
    vm, _ = booted
    first = vm.login(LOGIN_TIMEOUT)
    first.sendline("echo unread output left behind")
    started = time.monotonic()
    second = vm.login(LOGIN_TIMEOUT)
    print(f"\nrelogin: {time.monotonic() - started:.2f} s")
    assert second.cmd_output("echo again").strip() == "again"


def test_reset_reboots_the_guest(booted: tuple[BareQemu, float]):
    vm, _ = booted
    session = vm.login(LOGIN_TIMEOUT)
    session.cmd("touch /tmp/before-reset")
    pid = vm.pid
    started = time.monotonic()
    vm.reset()
    session = vm.login(LOGIN_TIMEOUT)
    print(f"\nreset to prompt: {time.monotonic() - started:.2f} s")
    assert vm.pid == pid  # same QEMU, new guest boot
    status, _ = session.cmd_status_output("test -e /tmp/before-reset")
    assert status == 1  # tmpfs is fresh: the guest really rebooted
    assert "Linux version" in vm.serial_log_path.read_text(errors="replace").split("touch /tmp/before-reset")[-1]


def test_sigkill_is_reported_as_signal_9(guest: GuestArtifacts, tmp_path: Path):
    vm = BareQemu(guest, tmp_path)
    with vm:
        vm.login(LOGIN_TIMEOUT)
        assert vm.exit_info() is None
        os.kill(vm.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while vm.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        info = vm.exit_info()
        assert info is not None
        assert info.signal == signal.SIGKILL and info.status is None
        assert "SIGKILL" in info.describe()
        assert "qemu-system-x86_64" in vm.qemu_cmdline()
        with pytest.raises(LoginError):
            vm.login(5)


def test_stop_quits_qemu_cleanly(guest: GuestArtifacts, tmp_path: Path):
    vm = BareQemu(guest, tmp_path, accel="tcg")
    vm.start()
    try:
        pid = vm.pid
        assert vm.is_alive()
    finally:
        vm.stop()
    info = vm.exit_info()
    assert info is not None and info.status == 0 and info.signal is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def debian_vmlinuz() -> Path:
    prepared = prepare_debian_kernel(resolve_cache_root(None))
    return prepared.boot_file.with_name("vmlinuz")


def test_user_vmlinuz_is_turned_into_the_same_vmlinux(guest: GuestArtifacts, tmp_path: Path):
    user = build_guest("busybox", kernel=debian_vmlinuz(), cache_root=tmp_path)
    assert user.kernel_format == "pvh-elf"
    assert user.kernel_source == str(debian_vmlinuz())
    assert user.kernel.read_bytes() == guest.kernel.read_bytes()


def test_bzimage_fallback_boots(guest: GuestArtifacts, tmp_path: Path):
    """What a kernel without a PVH note gets: QEMU boots the bzImage itself (slower)."""
    bz_guest = dataclasses.replace(guest, kernel=debian_vmlinuz(), kernel_format="bzimage")
    with BareQemu(bz_guest, tmp_path) as vm:
        started = time.monotonic()
        session = vm.login(LOGIN_TIMEOUT)
        print(f"\nbzImage boot to prompt under {vm.accel}: {time.monotonic() - started:.2f} s")
        assert GUEST_MARKER_PARAM in session.cmd_output("cat /proc/cmdline").split()
