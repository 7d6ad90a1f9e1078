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
import subprocess
from pathlib import Path

import pytest
from avocado_jobs import run_avocado

from avocado_iofuzz.guest import busybox
from avocado_iofuzz.guest.build import default_guest
from avocado_iofuzz.guest.cache import resolve_cache_root
from avocado_iofuzz.guest.kernel import prepare_kernel

pytestmark = pytest.mark.guest


def bootable_disk(path: Path, vmlinuz: Path, initrd: Path, cmdline: str) -> Path:
    """A 64 MiB FAT disk that SeaBIOS boots through syslinux (no partition table needed)."""
    subprocess.run(["mkfs.fat", "-C", str(path), "65536"], check=True, capture_output=True)
    subprocess.run(["syslinux", "--install", str(path)], check=True, capture_output=True)
    config = path.with_suffix(".cfg")
    config.write_text(f"DEFAULT linux\nPROMPT 0\nLABEL linux\n  KERNEL vmlinuz\n  APPEND initrd=initrd {cmdline}\n")
    for source, name in ((vmlinuz, "vmlinuz"), (initrd, "initrd"), (config, "syslinux.cfg")):
        subprocess.run(["mcopy", "-i", str(path), str(source), f"::{name}"], check=True, capture_output=True)
    return path


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


def test_image_that_boots_itself_is_fuzzed_with_the_executor_copied_in(tmp_path, guest_files):
    disk = bootable_disk(tmp_path / "disk.img", *guest_files, "console=ttyS0 panic=-1 iofuzz.guest=1")
    before = hashlib.sha256(disk.read_bytes()).hexdigest()
    job = run_avocado("iofuzz.quick.image", tmp_path, _params(disk))
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
