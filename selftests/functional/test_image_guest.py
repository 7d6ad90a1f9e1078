"""guest_os=image: a disk that boots by itself, serial login, executor copied in.

The "user's image" is made here: a FAT disk with syslinux, Debian's vmlinuz and
the embedded busybox guest's initramfs, its kernel command line in the disk's
own syslinux.cfg, so no -kernel is given: the path a real distribution image
takes (firmware -> bootloader on the disk -> kernel). What this proves is the
image row's machinery (params, disk on snapshot, the guest marker check,
executor upload, fuzzing), not a particular distribution.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from avocado_jobs import REPO, run_avocado
from boot_disk import bootable_disk
from sshd_guest import HOSTNAME, PROMPT, sshd_guest_disk

from avocado_iofuzz.guest import busybox
from avocado_iofuzz.guest.build import default_guest
from avocado_iofuzz.guest.cache import resolve_cache_root
from avocado_iofuzz.guest.kernel import prepare_kernel

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def guest_files():
    guest = default_guest()
    # a bootloader wants the bzImage; the kernel cache keeps it beside the PVH vmlinux QEMU boots
    vmlinuz = prepare_kernel(None, resolve_cache_root(None)).boot_file.with_name("vmlinuz")
    assert vmlinuz.is_file(), f"no bzImage in the kernel cache: {vmlinuz}"
    return vmlinuz, guest.initrd


def _params(disk: Path) -> dict[str, str]:
    return {
        "iofuzz_image": str(disk),
        "iofuzz_image_format": "raw",
        "iofuzz_drive_interface": "ide",
        "iofuzz_prompt": busybox.SHELL_PROMPT_REGEX,
        "fuzz_seed": "11",
    }


@pytest.mark.parametrize("where", ["scratch", "checkout"])  # the installed package works from both
def test_image_that_boots_itself_is_fuzzed_with_the_executor_copied_in(tmp_path, guest_files, where):
    disk = bootable_disk(tmp_path / "disk.img", *guest_files, "console=ttyS0 panic=-1 iofuzz.guest=1")
    before = hashlib.sha256(disk.read_bytes()).hexdigest()
    job = run_avocado("iofuzz.quick.image", tmp_path, _params(disk), cwd=REPO if where == "checkout" else tmp_path)
    test = job.tests[0]
    assert test["name"] == "iofuzz.quick.image" and test["status"] == "PASS", job.output
    summary = job.summary()
    assert summary["guest"] == "image" and summary["ranges"]
    assert all(r["ops_done"] == r["ops_planned"] for r in summary["ranges"])
    assert "snapshot=on" in summary["qemu_cmdline"] and " -kernel " not in summary["qemu_cmdline"]
    log = (job.test_dir() / "debug.log").read_text()
    assert "executor: /tmp/iofuzz-exec --seed 11" in log  # the copied executor is the one that ran
    assert hashlib.sha256(disk.read_bytes()).hexdigest() == before  # the user's file is untouched


def test_image_without_the_guest_marker_is_refused(tmp_path, guest_files):
    disk = bootable_disk(tmp_path / "disk.img", *guest_files, "console=ttyS0 panic=-1")
    job = run_avocado("iofuzz.quick.image", tmp_path, _params(disk))
    test = job.tests[0]
    assert test["status"] == "ERROR", job.output
    assert "kernel command line lacks iofuzz.guest=1" in test["fail_reason"]
    assert not job.data_file("trace.iofuzz").exists()  # nothing was fuzzed


def test_image_row_without_an_image_names_the_param(tmp_path):
    job = run_avocado("iofuzz.quick.image", tmp_path, {})
    test = job.tests[0]
    assert test["status"] == "ERROR" and "param iofuzz_image is empty" in test["fail_reason"]


def test_bash_on_the_serial_console_matched_by_the_users_prompt_regex(tmp_path):
    """Debian's bash on a serial console sends bracketed-paste codes around every prompt and output.

    The user's regex is anchored on the prompt's text (``^root@ssh-guest:...``),
    written for what a screen shows, not for the bytes on the line.
    """
    (tmp_path / "guest").mkdir()
    disk = sshd_guest_disk(tmp_path / "guest")
    job = run_avocado("iofuzz.quick.image", tmp_path, {**_params(disk), "iofuzz_prompt": PROMPT, "only_devices": "fpu"})
    test = job.tests[0]
    assert test["status"] == "PASS", job.output
    assert all(r["ops_done"] == r["ops_planned"] > 0 for r in job.summary()["ranges"])
    console = next(job.test_dir().glob("serial-*.log")).read_text()
    assert f"\x1b[?2004hroot@{HOSTNAME}:" in console  # the codes were there to get past
