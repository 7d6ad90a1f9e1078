"""Bring your own image: fuzz from inside any Linux guest on a disk image.

The ``image`` row of ``cfg/vm.cfg`` boots a user's disk image (opened with
``snapshot=on``: the guest's writes go to a throw-away overlay, never to the
user's file), optionally with a kernel and initrd of the user's, and logs in
over the serial console or over SSH through QEMU user networking whose one
forward is bound to 127.0.0.1. Such a guest does not hold our executor, so
every login copies it in (gzip + base64 through the shell, checked with
sha256sum) unless it is already there: a reboot may have emptied ``/tmp``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
import shlex
import socket
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aexpect import remote

from avocado_iofuzz.guest.build import GUEST_MARKER_PARAM
from avocado_iofuzz.settings import ParamError
from avocado_iofuzz.vm.vt import VtGuest

DRIVE_INTERFACES = ("virtio", "ide", "scsi")
LOGINS = ("serial", "ssh")
B64_LINE = 76  # well below a tty's 4095-character canonical line limit
SSH_RETRY_WAIT = 2.0


@dataclass(frozen=True)
class ImageGuestParams:
    image: Path
    image_format: str
    drive_interface: str
    kernel: Path | None
    initrd: Path | None
    kernel_params: str
    login: str
    ssh_port: int
    username: str
    password: str
    prompt: str
    executor_path: str

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ImageGuestParams:
        def get(key: str, default: str = "") -> str:
            return str(params.get(key, "") or default).strip()

        image = get("iofuzz_image")
        if not image:
            raise ParamError(
                "param iofuzz_image is empty: guest_os 'image' needs a disk image path "
                "(--vt-extra-params iofuzz_image=/path/disk.qcow2, or image = ... in [iofuzz] of avocado.conf)"
            )
        kernel, initrd = get("iofuzz_kernel"), get("iofuzz_initrd")
        for key, path in (("iofuzz_image", image), ("iofuzz_kernel", kernel), ("iofuzz_initrd", initrd)):
            if path and not Path(path).is_file():
                raise ParamError(f"param {key} = {path!r}: no such file")
        if initrd and not kernel:
            raise ParamError(f"param iofuzz_initrd = {initrd!r}: an initrd needs iofuzz_kernel too")
        image_format = get("iofuzz_image_format", "qcow2")
        if not re.fullmatch(r"[a-z0-9_-]+", image_format):
            raise ParamError(f"param iofuzz_image_format = {image_format!r}: not a QEMU image format name")
        interface = get("iofuzz_drive_interface", "virtio")
        if interface not in DRIVE_INTERFACES:
            raise ParamError(f"param iofuzz_drive_interface = {interface!r}: expected {', '.join(DRIVE_INTERFACES)}")
        login = get("iofuzz_login", "serial")
        if login not in LOGINS:
            raise ParamError(f"param iofuzz_login = {login!r}: expected serial or ssh")
        port_text = get("iofuzz_ssh_port", "0")
        if not port_text.isdigit() or int(port_text) > 65535:
            raise ParamError(f"param iofuzz_ssh_port = {port_text!r}: expected a port number (0 = any free one)")
        prompt = get("iofuzz_prompt", r"^.*[\#\$]\s*$")
        try:
            re.compile(prompt)
        except re.error as err:
            raise ParamError(f"param iofuzz_prompt = {prompt!r}: not a regex: {err}") from None
        executor_path = get("iofuzz_executor_path", "/tmp/iofuzz-exec")
        if not executor_path.startswith("/") or any(c.isspace() or c in "'\"" for c in executor_path):
            raise ParamError(f"param iofuzz_executor_path = {executor_path!r}: expected an absolute path, no quotes")
        return cls(
            image=Path(image),
            image_format=image_format,
            drive_interface=interface,
            kernel=Path(kernel) if kernel else None,
            initrd=Path(initrd) if initrd else None,
            kernel_params=get("iofuzz_kernel_params", "console=ttyS0"),
            login=login,
            ssh_port=int(port_text),
            username=get("iofuzz_username", "root"),
            password=str(params.get("iofuzz_password", "") or ""),
            prompt=prompt,
            executor_path=executor_path,
        )


def _qemu_path(path: Path) -> str:
    """A path as a QEMU option value: commas doubled, then shell-quoted."""
    return shlex.quote(str(path.resolve()).replace(",", ",,"))


def disk_args(p: ImageGuestParams) -> str:
    drive = f"file={_qemu_path(p.image)},format={p.image_format},snapshot=on"
    if p.drive_interface == "scsi":
        return (
            "-device virtio-scsi-pci,id=iofuzzscsi "
            f"-drive {drive},if=none,id=iofuzzdisk -device scsi-hd,drive=iofuzzdisk,bus=iofuzzscsi.0"
        )
    return f"-drive {drive},if={p.drive_interface}"


def ssh_net_args(port: int) -> str:
    # user networking; the single forward listens on loopback only
    return f"-netdev user,id=iofuzznet,hostfwd=tcp:127.0.0.1:{port}-:22 -device e1000,netdev=iofuzznet"


def free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def apply_image_params(p: ImageGuestParams, params: MutableMapping[str, Any]) -> int:
    """Set the avocado-vt params that boot the image; returns the SSH port (0 for serial)."""
    extra = [str(params.get("extra_params", "") or ""), disk_args(p)]
    port = 0
    if p.login == "ssh":
        port = p.ssh_port or free_local_port()
        extra.append(ssh_net_args(port))
    params["extra_params"] = " ".join(part for part in extra if part)
    if p.kernel:
        params["kernel"] = str(p.kernel)
        params["kernel_params"] = f"{p.kernel_params} {GUEST_MARKER_PARAM}".strip()
        if p.initrd:
            params["initrd"] = str(p.initrd)
    params["shell_prompt"] = p.prompt
    params["username"] = p.username
    params["password"] = p.password
    return port


def executor_upload_lines(binary: bytes, guest_path: str) -> list[str]:
    """Shell lines that recreate ``binary`` at ``guest_path`` (gzip, base64 here-document)."""
    encoded = base64.b64encode(gzip.compress(binary, compresslevel=9, mtime=0)).decode()
    staging = f"{guest_path}.b64"
    lines = [f"rm -f {guest_path} {staging}; cat > {staging} <<'IOFUZZ_EOF'"]
    lines += [encoded[i : i + B64_LINE] for i in range(0, len(encoded), B64_LINE)]
    lines += ["IOFUZZ_EOF", f"base64 -d {staging} | gunzip > {guest_path} && chmod 755 {guest_path}; rm -f {staging}"]
    return lines


class GuestNotMarked(RuntimeError):
    """The guest's kernel command line lacks the marker the executor insists on."""


class ImageGuest(VtGuest):
    """VtGuest for a user's image: SSH or serial login, executor copied in on login."""

    def __init__(self, vm: Any, login_timeout: float, image: ImageGuestParams, ssh_port: int, executor: Path):
        super().__init__(vm, login_timeout)
        self.image = image
        self.ssh_port = ssh_port
        self.executor = executor.read_bytes()
        self.executor_sha256 = hashlib.sha256(self.executor).hexdigest()

    def login(self, timeout: float | None = None) -> Any:
        timeout = timeout or self.login_timeout
        session = self._ssh_login(timeout) if self.image.login == "ssh" else super().login(timeout)
        # before the upload: without the marker the executor would refuse anyway
        if not guest_cmdline_has_marker(session):
            raise GuestNotMarked(
                f"the guest's kernel command line lacks {GUEST_MARKER_PARAM}: the executor refuses to touch ports "
                "without it. Add it to the image's bootloader entry, or boot it with iofuzz_kernel (we append it)."
            )
        self.ensure_executor(session)
        return session

    def _ssh_login(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return remote.remote_login(
                    "ssh",
                    "127.0.0.1",
                    self.ssh_port,
                    self.image.username,
                    self.image.password,
                    self.image.prompt,
                    timeout=max(1.0, min(30.0, deadline - time.monotonic())),
                )
            except remote.LoginError:
                # sshd not up yet (booting) or the connection dropped: try again
                if time.monotonic() + SSH_RETRY_WAIT >= deadline:
                    raise
                time.sleep(SSH_RETRY_WAIT)

    def ensure_executor(self, session: Any) -> None:
        path = self.image.executor_path
        if self._guest_sha256(session, path) == self.executor_sha256:
            return
        for line in executor_upload_lines(self.executor, path):
            session.sendline(line)
        session.read_until_last_line_matches([self.image.prompt], timeout=300)
        found = self._guest_sha256(session, path)
        if found != self.executor_sha256:
            raise RuntimeError(
                f"copying the executor to {path} in the guest failed (sha256 {found or 'none'}): "
                "the guest needs a shell with base64, gunzip and sha256sum, and a writable, executable path"
            )

    @staticmethod
    def _guest_sha256(session: Any, path: str) -> str:
        output = session.cmd_output(f"sha256sum {path} 2>/dev/null", timeout=60)
        match = re.search(r"\b([0-9a-f]{64})\b", output)
        return match[1] if match else ""


def guest_cmdline_has_marker(session: Any) -> bool:
    return GUEST_MARKER_PARAM in session.cmd_output("cat /proc/cmdline", timeout=30).split()
