"""guest_os=image: a user's disk image + kernel/initrd, serial login, executor copied in.

The "user's" kernel and initrd are the embedded busybox guest's own files and
the disk a blank qcow2 made here: what this proves is the image row's path
(params, disk on snapshot, marker appended, executor upload, fuzzing), not a
particular distribution.
"""

from __future__ import annotations

import hashlib
import subprocess

import pytest
from avocado_jobs import run_avocado

from avocado_iofuzz.guest import busybox
from avocado_iofuzz.guest.build import default_guest

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("image")
    disk = tmp / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    guest = default_guest()
    return tmp, disk, guest


def test_image_row_fuzzes_with_the_executor_copied_in(user_files):
    tmp, disk, guest = user_files
    before = hashlib.sha256(disk.read_bytes()).hexdigest()
    params = {
        "iofuzz_image": str(disk),
        "iofuzz_drive_interface": "ide",
        "iofuzz_kernel": str(guest.kernel),
        "iofuzz_initrd": str(guest.initrd),
        "iofuzz_kernel_params": "console=ttyS0 panic=-1",
        "iofuzz_prompt": busybox.SHELL_PROMPT_REGEX,
        "fuzz_seed": "11",
    }
    job = run_avocado("iofuzz.quick.image", tmp, params)
    test = job.tests[0]
    assert test["name"] == "iofuzz.quick.image" and test["status"] == "PASS", job.output
    summary = job.summary()
    assert summary["guest"] == "image" and summary["ranges"]
    assert all(r["ops_done"] == r["ops_planned"] for r in summary["ranges"])
    log = (job.test_dir() / "debug.log").read_text()
    assert "--resume" in log and "/tmp/iofuzz-exec --seed 11" in log  # the copied executor ran
    assert "snapshot=on" in summary["qemu_cmdline"]
    assert hashlib.sha256(disk.read_bytes()).hexdigest() == before  # the user's file is untouched


def test_image_row_without_an_image_names_the_param(tmp_path):
    job = run_avocado("iofuzz.quick.image", tmp_path, {})
    test = job.tests[0]
    assert test["status"] == "ERROR" and "param iofuzz_image is empty" in test["fail_reason"]
