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
import logging
import re
import shlex
import shutil
import socket
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aexpect import remote
from virttest import utils_logfile

from avocado_iofuzz.guest.build import GUEST_MARKER_PARAM
from avocado_iofuzz.settings import ParamError
from avocado_iofuzz.vm.vt import VtGuest, settle

LOG = logging.getLogger("avocado.test.iofuzz")

DRIVE_INTERFACES = ("virtio", "ide", "scsi")
LOGINS = ("serial", "ssh")
B64_LINE = 76  # well below a tty's 4095-character canonical line limit
SSH_HOST = "127.0.0.1"  # QEMU's forward listens here only
# A slot free on both pc and q35 (whose 0x1f holds the LPC bridge); the guest names the NIC by it.
SSH_NIC_SLOT = 0x1E
SSH_NIC = f"0000:00:{SSH_NIC_SLOT:02x}.0"
SSH_RETRY_WAIT = 2.0
PLAIN_TERMINAL = "export TERM=dumb"  # no bracketed paste, no colours: output as the commands wrote it
# CSI sequences (ESC [ parameters letter), any number of them
CONTROL_SEQUENCES = r"(?:\x1b\[[0-9;?]*[A-Za-z])*"
UPLOAD_TIMEOUT = 300.0  # ≈490 kB of base64 through the tty: 1 s over SSH, 4 s over a TCG guest's serial console


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

    @property
    def session_prompt(self) -> str:
        """The regex the sessions wait for: ``prompt``, control sequences around it allowed."""
        return tolerant_prompt(self.prompt)

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
        if login == "ssh" and shutil.which("ssh") is None:
            raise ParamError(
                "param iofuzz_login = ssh needs OpenSSH's client on this host: apt-get install openssh-client "
                "(bootstrap.sh installs it)"
            )
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


def tolerant_prompt(prompt: str) -> str:
    """``prompt`` with terminal control sequences allowed after its ``^`` and before its ``$``.

    Shells write them around the prompt text: bash 5.2 turns bracketed paste
    on (``ESC[?2004h``) before each prompt of a shell whose terminal is not
    "dumb" (a serial console's), busybox ash asks for the cursor position
    (``ESC[6n``) after it. A user's regex anchored on the prompt's text
    would never match such a line.
    """
    if prompt.startswith("^"):
        prompt = f"^{CONTROL_SEQUENCES}{prompt[1:]}"
    escapes = len(prompt[:-1]) - len(prompt[:-1].rstrip("\\"))
    if prompt.endswith("$") and escapes % 2 == 0:  # an anchor, not a literal \$
        prompt = f"{prompt[:-1]}{CONTROL_SEQUENCES}\\s*$"
    return prompt


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
    # user networking; the single forward listens on loopback only. The NIC sits in a fixed slot so that
    # session_devices() can name it.
    return (
        f"-netdev user,id=iofuzznet,hostfwd=tcp:{SSH_HOST}:{port}-:22 "
        f"-device e1000,netdev=iofuzznet,addr={SSH_NIC_SLOT:#x}"
    )


def session_devices(p: ImageGuestParams) -> tuple[str, ...]:
    """The devices the session runs through, left out of fuzzing (as the serial console's ports are).

    Over SSH that is the e1000: random writes to its registers reset it or
    stop its rings, and the session would die of our own hand, a "hang"
    that says nothing about QEMU.
    """
    return (SSH_NIC,) if p.login == "ssh" else ()


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
    params["shell_prompt"] = p.session_prompt
    params["username"] = p.username
    params["password"] = p.password
    return port


@dataclass(frozen=True)
class ExecutorUpload:
    """How the executor gets into the guest through nothing but its shell and tty.

    ``start`` turns the terminal's echo off and, once it printed a ready
    mark, runs ``head -c`` on the tty for exactly the bytes of ``data``
    (gzip, base64, in lines); ``finish`` decodes them. The tty's own line
    discipline hands the lines over: no shell reads them (a here-document
    makes bash's line editor redraw every line, which took twenty times
    longer than the copy itself over SSH), nothing is echoed back. A byte
    count ends the data, not an end-of-file character: the host side of a
    serial console session (``nc`` on a tty in line mode) would take that
    character for its own end of input.
    """

    start: str
    ready: str  # regex of the mark: the start line spells it with quotes, so its echo cannot match
    data: str
    finish: str


def executor_upload(binary: bytes, guest_path: str, mark: int) -> ExecutorUpload:
    """The commands and data that recreate ``binary`` at ``guest_path``; ``mark`` makes the ready mark unique."""
    encoded = base64.b64encode(gzip.compress(binary, compresslevel=9, mtime=0)).decode()
    staging = f"{guest_path}.b64"
    data = "".join(encoded[i : i + B64_LINE] + "\n" for i in range(0, len(encoded), B64_LINE))
    return ExecutorUpload(
        start=(
            f"rm -f {guest_path} {staging}; stty -echo; echo iofuzz-''ready-{mark}; "
            f"head -c {len(data)} > {staging}; stty echo"
        ),
        ready=rf"iofuzz-ready-{mark}\r?\n",
        data=data,
        finish=f"base64 -d {staging} | gunzip > {guest_path} && chmod 755 {guest_path}; rm -f {staging}",
    )


class GuestNotMarked(RuntimeError):
    """The guest's kernel command line lacks the marker the executor insists on."""


class GuestLoginFailed(RuntimeError):
    """No shell in the guest: its sshd refused the credentials, or never answered in time."""


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
        # A serial console's terminal type makes bash 5.2 wrap every command's output in bracketed-paste
        # codes (ESC[?2004l before it), which would stick to the first word of what we parse.
        session.cmd_output(PLAIN_TERMINAL, timeout=30)
        # before the upload: without the marker the executor would refuse anyway
        if not guest_cmdline_has_marker(session):
            raise GuestNotMarked(
                f"the guest's kernel command line lacks {GUEST_MARKER_PARAM}: the executor refuses to touch ports "
                "without it. Add it to the image's bootloader entry, or boot it with iofuzz_kernel (we append it)."
            )
        self.ensure_executor(session)
        return session

    def _ssh_login(self, timeout: float) -> Any:
        """A shell over SSH through QEMU's loopback forward, retried while the guest boots.

        Retried: the forward accepts connections before the guest's sshd is
        up (the client then sees the connection closed). Not retried: a
        refused password, which another try would only repeat until the
        timeout ran out.
        """
        user, port = self.image.username, self.ssh_port
        where = f"SSH login as {user!r} to {SSH_HOST}:{port} (forwarded to the guest's port 22)"
        # one file per VM in the test's log dir, like avocado-vt's serial-*.log; each login appends to it
        log_file = utils_logfile.get_log_filename(f"ssh-{self.vm.name}.log")
        deadline = time.monotonic() + timeout
        while True:
            try:
                session = remote.remote_login(
                    "ssh",
                    SSH_HOST,
                    port,
                    user,
                    self.image.password,
                    self.image.session_prompt,
                    log_filename=log_file,
                    log_function=_log_ssh_line,
                    timeout=max(1.0, min(30.0, deadline - time.monotonic())),
                )
                break
            except remote.LoginError as err:
                if _credentials_refused(err):
                    raise GuestLoginFailed(
                        f"{where} failed: the guest refused the credentials (iofuzz_username = {user!r}, "
                        f"iofuzz_password): {_last_words(err)}"
                    ) from None
                if time.monotonic() + SSH_RETRY_WAIT >= deadline:
                    raise GuestLoginFailed(
                        f"{where} did not succeed within {timeout:.0f} s: {_last_words(err)}. The guest needs "
                        "an SSH server on port 22 and its e1000 NIC up on QEMU's user network (DHCP, or "
                        "10.0.2.15/24 via 10.0.2.2); iofuzz_prompt must match its shell prompt"
                    ) from None
                time.sleep(SSH_RETRY_WAIT)
        LOG.info("login over SSH: %s (session log %s)", session.command, log_file)
        # avocado-vt's VM cleanup closes these: no ssh client outlives the test
        self.vm.remote_sessions.append(session)
        settle(session, self.image.session_prompt)
        return session

    def ensure_executor(self, session: Any) -> None:
        path = self.image.executor_path
        if self._guest_sha256(session, path) == self.executor_sha256:
            return
        started = time.monotonic()
        upload = executor_upload(self.executor, path, time.monotonic_ns())
        session.sendline(upload.start)
        # Only once head runs is the tty in line mode: before, the shell's line editor would read the data.
        session.read_until_output_matches([upload.ready], timeout=60)
        session.send(upload.data)
        settle(session, self.image.session_prompt, timeout=UPLOAD_TIMEOUT)
        session.cmd_output(upload.finish, timeout=120)
        found = self._guest_sha256(session, path)
        if found != self.executor_sha256:
            raise RuntimeError(
                f"copying the executor to {path} in the guest failed (sha256 {found or 'none'}): "
                "the guest needs a shell with stty, head, base64, gunzip and sha256sum, and a writable, "
                "executable path"
            )
        LOG.info("executor copied to %s in the guest in %.1f s", path, time.monotonic() - started)

    @staticmethod
    def _guest_sha256(session: Any, path: str) -> str:
        output = session.cmd_output(f"sha256sum {path} 2>/dev/null", timeout=60)
        match = re.search(r"(?<![0-9a-f])([0-9a-f]{64})(?![0-9a-f])", output)
        return match[1] if match else ""


def guest_cmdline_has_marker(session: Any) -> bool:
    return GUEST_MARKER_PARAM in session.cmd_output("cat /proc/cmdline", timeout=30).split()


def _log_ssh_line(log_file: str, line: str) -> None:
    # aexpect glues its output prefix, the host name, to every line it logs
    utils_logfile.log_line(log_file, line.removeprefix(SSH_HOST))


def _credentials_refused(err: Exception) -> bool:
    """Whether a failed SSH login was the guest saying no to the user or password (retrying cannot help)."""
    if isinstance(err, remote.LoginAuthenticationError):  # asked for the password again
        return True
    # sshd offered no password authentication at all: ssh gives up with this and exits
    return "Permission denied (" in str(getattr(err, "output", "") or "")


def _last_words(err: Exception) -> str:
    """What the ssh client said last, on one line (aexpect's errors carry the whole transcript)."""
    output = str(getattr(err, "output", "") or "")
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    reason = str(getattr(err, "msg", "") or type(err).__name__)
    return f"{reason}; ssh said: {' / '.join(lines[-3:])}" if lines else reason
