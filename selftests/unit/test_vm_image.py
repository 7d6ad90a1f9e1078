"""The image row's params, QEMU arguments and executor upload (no QEMU)."""

from __future__ import annotations

import base64
import gzip
import os
import re
import shlex

import pytest
from aexpect import remote

from avocado_iofuzz.model.ranges import fuzz_targets, parse_name_list
from avocado_iofuzz.vm import image as image_module
from avocado_iofuzz.vm.image import (
    SSH_NIC,
    GuestLoginFailed,
    ImageGuest,
    disk_args,
    executor_upload,
    guest_cmdline_has_marker,
    session_devices,
    ssh_net_args,
    tolerant_prompt,
)
from avocado_iofuzz.vt.image_params import apply_image_params, read_image_guest
from avocado_iofuzz.vt.iofuzz_params import IofuzzParams, read_kinds
from avocado_iofuzz.vt.iofuzz_test import spare_session_devices
from avocado_iofuzz.vt.params import ParamError


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "my,disk.qcow2"
    path.write_bytes(b"QFI\xfb")
    return path


def test_defaults_for_a_serial_image(disk):
    p = read_image_guest({"iofuzz_image": str(disk)})
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
        read_image_guest(params)


def test_no_image_says_how_to_give_one():
    with pytest.raises(ParamError, match="param iofuzz_image is empty: guest_os 'image' needs a disk image path"):
        read_image_guest({})


def test_disk_is_a_snapshot_and_commas_in_paths_are_escaped(disk):
    p = read_image_guest({"iofuzz_image": str(disk), "iofuzz_drive_interface": "ide"})
    (drive_option, drive) = shlex.split(disk_args(p))
    assert drive_option == "-drive" and "snapshot=on" in drive and drive.endswith(",if=ide")
    assert "my,,disk.qcow2" in drive
    scsi = read_image_guest({"iofuzz_image": str(disk), "iofuzz_drive_interface": "scsi"})
    assert "scsi-hd,drive=iofuzzdisk" in disk_args(scsi)


def test_ssh_forward_listens_on_loopback_only(disk):
    p = read_image_guest({"iofuzz_image": str(disk), "iofuzz_login": "ssh", "iofuzz_ssh_port": "2222"})
    params = {"extra_params": "-trace foo"}
    assert apply_image_params(p, params) == 2222
    assert params["extra_params"].startswith("-trace foo -drive ")
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in params["extra_params"]
    assert "hostfwd=tcp::" not in params["extra_params"]
    auto = read_image_guest({"iofuzz_image": str(disk), "iofuzz_login": "ssh"})
    assert 0 < apply_image_params(auto, {}) < 65536


def test_kernel_gets_the_guest_marker_appended(disk):
    p = read_image_guest(
        {"iofuzz_image": str(disk), "iofuzz_kernel": str(disk), "iofuzz_kernel_params": "console=ttyS0 quiet"}
    )
    params = {}
    assert apply_image_params(p, params) == 0
    assert params["kernel_params"] == "console=ttyS0 quiet iofuzz.guest=1 memmap=16K$0x7000000"
    assert params["kernel"] == str(disk)
    assert "initrd" not in params and "-netdev" not in params["extra_params"]


def test_upload_rebuilds_the_binary_through_head_on_the_tty():
    binary = os.urandom(5000) + b"\0" * 20000
    upload = executor_upload(binary, "/tmp/x", 7)
    assert upload.start == (
        f"rm -f /tmp/x /tmp/x.b64; stty -echo; echo iofuzz-''ready-7; head -c {len(upload.data)} > /tmp/x.b64; "
        "stty echo"
    )
    # the shell prints the mark; the command line's echo does not spell it
    assert re.search(upload.ready, "iofuzz-ready-7\r\n") and not re.search(upload.ready, upload.start)
    assert upload.data.endswith("\n") and upload.data.isascii()  # whole lines: the tty hands over nothing less
    assert gzip.decompress(base64.b64decode(upload.data.replace("\n", ""))) == binary
    assert max(len(line) for line in upload.data.splitlines()) < 4095  # a tty's line limit in line mode
    assert upload.finish == "base64 -d /tmp/x.b64 | gunzip > /tmp/x && chmod 755 /tmp/x; rm -f /tmp/x.b64"


@pytest.mark.parametrize(
    ("prompt", "line", "matches"),
    [
        # bash 5.2 on a serial console: bracketed paste on before each prompt
        (r"^root@ssh-guest:\S*#\s*$", "\x1b[?2004l\x1b[?2004hroot@ssh-guest:/# ", True),
        (r"^root@ssh-guest:\S*#\s*$", "root@ssh-guest:~# ", True),
        # busybox ash asks for the cursor position after its prompt
        (r"^\[root@.*\][\#\$]\s*$", "[root@fedora ~]# \x1b[6n", True),
        (r"^root@ssh-guest:\S*#\s*$", "root@ssh-guest:~# ls", False),
        (r"^root@ssh-guest:\S*#\s*$", "root@ssh-guest:~# root@ssh-guest:~# ", False),
    ],
)
def test_prompt_tolerates_control_sequences_around_it(prompt, line, matches):
    assert bool(re.search(tolerant_prompt(prompt), line)) is matches


def test_prompt_without_anchors_or_with_a_literal_dollar_is_kept():
    assert tolerant_prompt(r"\$ ") == r"\$ "
    assert tolerant_prompt(r"costs \$") == r"costs \$"
    assert tolerant_prompt(r"a\\$").endswith(r"\s*$")  # an escaped backslash, then the anchor


class FakeSession:
    def __init__(self, cmdline):
        self.cmdline = cmdline

    def cmd_output(self, command, timeout=None):
        assert command == "cat /proc/cmdline"
        return self.cmdline


def test_marker_must_be_a_whole_word_of_the_cmdline():
    assert guest_cmdline_has_marker(FakeSession("BOOT_IMAGE=/vmlinuz console=ttyS0 iofuzz.guest=1\n"))
    assert not guest_cmdline_has_marker(FakeSession("console=ttyS0 xiofuzz.guest=10\n"))


def test_ssh_nic_sits_where_its_skip_names_it(disk):
    p = read_image_guest({"iofuzz_image": str(disk), "iofuzz_login": "ssh"})
    assert ssh_net_args(2222).endswith("-device e1000,netdev=iofuzznet,addr=0x1e") and SSH_NIC == "0000:00:1e.0"
    assert session_devices(p) == (SSH_NIC,)
    assert session_devices(read_image_guest({"iofuzz_image": str(disk)})) == ()  # serial: COM1 is skipped


def test_session_nic_is_skipped_by_every_kind():
    ioports = "0000-0cf7 : PCI Bus 0000:00\n  0070-0077 : rtc0\n0d00-ffff : PCI Bus 0000:00\n" + (
        "  c000-c03f : 0000:00:1e.0\n    c000-c03f : e1000\n  c040-c04f : 0000:00:01.1\n"
    )
    settings = IofuzzParams.from_params({"skip_devices": "rtc0"})
    kinds = read_kinds({"fuzz_kinds": "pio mmio pci"})
    settings, kinds = spare_session_devices((SSH_NIC,), settings, kinds)
    # rtc0 as asked, the NIC with its driver's claim; the IDE bus master stays
    assert [r.name for r in fuzz_targets(ioports, skip_devices=settings.skip_devices)] == ["0000:00:01.1"]
    assert "0000:00:1e.0" in parse_name_list(kinds.skip_iomem) and "System RAM" in parse_name_list(kinds.skip_iomem)
    assert parse_name_list(kinds.skip_pci) == ["0000:00:1e.0"]
    assert spare_session_devices((), settings, kinds) == (settings, kinds)


class FakeVm:
    name = "vm1"

    def __init__(self):
        self.remote_sessions = []


def _ssh_guest(tmp_path, disk, **params):
    executor = tmp_path / "exec"
    executor.write_bytes(b"\x7fELF")
    image = read_image_guest({"iofuzz_image": str(disk), "iofuzz_login": "ssh", **params})
    guest = ImageGuest.__new__(ImageGuest)  # no VM to ask for its PID: only the SSH login is under test
    guest.vm, guest.image, guest.ssh_port, guest.login_timeout = FakeVm(), image, 2222, 60.0
    return guest


def test_refused_password_fails_at_once_naming_the_params(tmp_path, disk, monkeypatch):
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise remote.LoginAuthenticationError("Got password prompt twice", "Permission denied, please try again.")

    monkeypatch.setattr(remote, "remote_login", refuse)
    guest = _ssh_guest(tmp_path, disk, iofuzz_username="fuzzer")
    with pytest.raises(GuestLoginFailed) as err:
        guest._ssh_login(60.0)
    assert len(calls) == 1  # not retried until the timeout
    assert "SSH login as 'fuzzer' to 127.0.0.1:2222" in str(err.value)
    assert "iofuzz_username = 'fuzzer', iofuzz_password" in str(err.value)
    assert "Permission denied, please try again." in str(err.value)


def test_sshd_without_password_authentication_fails_at_once(tmp_path, disk, monkeypatch):
    def no_password_auth(*args, **kwargs):
        raise remote.LoginProcessTerminatedError(255, "root@127.0.0.1: Permission denied (publickey).\n")

    monkeypatch.setattr(remote, "remote_login", no_password_auth)
    with pytest.raises(GuestLoginFailed, match=r"refused the credentials .* Permission denied \(publickey\)"):
        _ssh_guest(tmp_path, disk)._ssh_login(60.0)


def test_sshd_not_up_is_retried_until_the_timeout(tmp_path, disk, monkeypatch):
    calls = []

    def closed(*args, **kwargs):
        calls.append(kwargs["timeout"])
        raise remote.LoginError("Client said 'connection closed'", "Connection closed by 127.0.0.1 port 2222\n")

    monkeypatch.setattr(remote, "remote_login", closed)
    monkeypatch.setattr(image_module, "SSH_RETRY_WAIT", 0.01)
    with pytest.raises(GuestLoginFailed, match=r"did not succeed within 0 s: Client said 'connection closed'"):
        _ssh_guest(tmp_path, disk)._ssh_login(0.2)
    assert len(calls) > 1 and all(t >= 1.0 for t in calls)


@pytest.mark.parametrize("content", ["s3cret pw\n", "s3cret pw", "s3cret pw\r\nsecond line\n"])
def test_password_file_gives_its_first_line_and_keeps_it_out_of_params_and_repr(tmp_path, disk, content):
    secret = tmp_path / "pw"
    secret.write_text(content)
    p = read_image_guest({"iofuzz_image": str(disk), "iofuzz_password_file": str(secret)})
    assert p.password == "s3cret pw"
    assert p.password_source == f"iofuzz_password_file = {str(secret)!r}"
    assert "s3cret" not in repr(p)
    params = {}
    apply_image_params(p, params)
    assert "s3cret" not in repr(params) and "password" not in params


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (None, {}, "cannot read it: No such file or directory"),
        ("\nlater\n", {}, "its first line is empty"),
        ("pw\n", {"iofuzz_password": "other"}, "iofuzz_password is set too; give the password one way only"),
    ],
)
def test_bad_password_file_names_the_param_not_the_value(tmp_path, disk, content, extra, message):
    secret = tmp_path / "pw"
    if content is not None:
        secret.write_text(content)
    params = {"iofuzz_image": str(disk), "iofuzz_password_file": str(secret), **extra}
    with pytest.raises(ParamError, match=re.escape(f"param iofuzz_password_file = {str(secret)!r}: {message}")):
        read_image_guest(params)


def test_refused_password_from_a_file_names_the_file(tmp_path, disk, monkeypatch):
    def refuse(*args, **kwargs):
        raise remote.LoginAuthenticationError("Got password prompt twice", "Permission denied, please try again.")

    monkeypatch.setattr(remote, "remote_login", refuse)
    secret = tmp_path / "pw"
    secret.write_text("wrong\n")
    guest = _ssh_guest(tmp_path, disk, iofuzz_password_file=str(secret))
    with pytest.raises(GuestLoginFailed) as err:
        guest._ssh_login(60.0)
    assert f"(iofuzz_username = 'root', iofuzz_password_file = {str(secret)!r})" in str(err.value)
    assert "wrong" not in str(err.value)
