"""The image row's params, QEMU arguments and executor upload (no QEMU)."""

from __future__ import annotations

import base64
import gzip
import os
import shlex

import pytest

from avocado_iofuzz.settings import ParamError
from avocado_iofuzz.vm.image import (
    ImageGuestParams,
    apply_image_params,
    disk_args,
    executor_upload_lines,
    guest_cmdline_has_marker,
)


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "my,disk.qcow2"
    path.write_bytes(b"QFI\xfb")
    return path


def test_defaults_for_a_serial_image(disk):
    p = ImageGuestParams.from_params({"iofuzz_image": str(disk)})
    assert (p.image_format, p.drive_interface, p.login, p.username, p.executor_path) == (
        "qcow2", "virtio", "serial", "root", "/tmp/iofuzz-exec",
    )  # fmt: skip
    assert p.kernel is None and p.initrd is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"iofuzz_image": "/nope.qcow2"}, "param iofuzz_image = '/nope.qcow2': no such file"),
        ({"iofuzz_initrd": "DISK"}, "an initrd needs iofuzz_kernel too"),
        ({"iofuzz_drive_interface": "nvme"}, "param iofuzz_drive_interface = 'nvme'"),
        ({"iofuzz_login": "telnet"}, "param iofuzz_login = 'telnet': expected serial or ssh"),
        ({"iofuzz_ssh_port": "70000"}, "param iofuzz_ssh_port = '70000'"),
        ({"iofuzz_prompt": "(("}, "param iofuzz_prompt = '\\(\\(': not a regex"),
        ({"iofuzz_image_format": "qcow2,x"}, "not a QEMU image format name"),
        ({"iofuzz_executor_path": "tmp/x"}, "param iofuzz_executor_path = 'tmp/x'"),
    ],
)
def test_bad_values_name_the_param(disk, params, message):
    params = {"iofuzz_image": str(disk), **{k: str(disk) if v == "DISK" else v for k, v in params.items()}}
    with pytest.raises(ParamError, match=message):
        ImageGuestParams.from_params(params)


def test_no_image_says_how_to_give_one():
    with pytest.raises(ParamError, match="param iofuzz_image is empty: guest_os 'image' needs a disk image path"):
        ImageGuestParams.from_params({})


def test_disk_is_a_snapshot_and_commas_in_paths_are_escaped(disk):
    p = ImageGuestParams.from_params({"iofuzz_image": str(disk), "iofuzz_drive_interface": "ide"})
    (drive_option, drive) = shlex.split(disk_args(p))
    assert drive_option == "-drive" and "snapshot=on" in drive and drive.endswith(",if=ide")
    assert "my,,disk.qcow2" in drive
    scsi = ImageGuestParams.from_params({"iofuzz_image": str(disk), "iofuzz_drive_interface": "scsi"})
    assert "scsi-hd,drive=iofuzzdisk" in disk_args(scsi)


def test_ssh_forward_listens_on_loopback_only(disk):
    p = ImageGuestParams.from_params({"iofuzz_image": str(disk), "iofuzz_login": "ssh", "iofuzz_ssh_port": "2222"})
    params = {"extra_params": "-trace foo"}
    assert apply_image_params(p, params) == 2222
    assert params["extra_params"].startswith("-trace foo -drive ")
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in params["extra_params"]
    assert "hostfwd=tcp::" not in params["extra_params"]
    auto = ImageGuestParams.from_params({"iofuzz_image": str(disk), "iofuzz_login": "ssh"})
    assert 0 < apply_image_params(auto, {}) < 65536


def test_kernel_gets_the_guest_marker_appended(disk):
    p = ImageGuestParams.from_params(
        {"iofuzz_image": str(disk), "iofuzz_kernel": str(disk), "iofuzz_kernel_params": "console=ttyS0 quiet"}
    )
    params = {}
    assert apply_image_params(p, params) == 0
    assert params["kernel_params"] == "console=ttyS0 quiet iofuzz.guest=1" and params["kernel"] == str(disk)
    assert "initrd" not in params and "-netdev" not in params["extra_params"]


def test_upload_lines_rebuild_the_binary_and_fit_a_tty_line():
    binary = os.urandom(5000) + b"\0" * 20000
    lines = executor_upload_lines(binary, "/tmp/x")
    start, end = lines.index("rm -f /tmp/x /tmp/x.b64; cat > /tmp/x.b64 <<'IOFUZZ_EOF'"), lines.index("IOFUZZ_EOF")
    body = "".join(lines[start + 1 : end])
    assert gzip.decompress(base64.b64decode(body)) == binary
    assert max(len(line) for line in lines) < 4095
    assert lines[-1].startswith("base64 -d /tmp/x.b64 | gunzip > /tmp/x && chmod 755 /tmp/x")


class FakeSession:
    def __init__(self, cmdline):
        self.cmdline = cmdline

    def cmd_output(self, command, timeout=None):
        assert command == "cat /proc/cmdline"
        return self.cmdline


def test_marker_must_be_a_whole_word_of_the_cmdline():
    assert guest_cmdline_has_marker(FakeSession("BOOT_IMAGE=/vmlinuz console=ttyS0 iofuzz.guest=1\n"))
    assert not guest_cmdline_has_marker(FakeSession("console=ttyS0 xiofuzz.guest=10\n"))
