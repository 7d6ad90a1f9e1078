"""The ``image`` guest's params (bring your own disk image), read and checked before boot.

:class:`avocado_iofuzz.vm.image.ImageGuestParams` is the typed record the VM
room works with; this module reads it from the avocado-vt params, and writes
back the avocado-vt params (``extra_params``, ``kernel``...) that boot it.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from avocado_iofuzz.guest.artifacts import GUEST_MARKER_PARAM
from avocado_iofuzz.model.dma import SCRATCH_KERNEL_PARAM
from avocado_iofuzz.vm.image import (
    DRIVE_INTERFACES,
    LOGINS,
    ImageGuestParams,
    disk_args,
    free_local_port,
    ssh_net_args,
)
from avocado_iofuzz.vt.params import ParamError, Params, choice, text


def read_image_guest(params: Params) -> ImageGuestParams:
    """The image guest's record; ParamError names the first param that cannot be used."""
    image = text(params, "iofuzz_image")
    if not image:
        raise ParamError(
            "param iofuzz_image is empty: guest_os 'image' needs a disk image path "
            "(--vt-extra-params iofuzz_image=/path/disk.qcow2, or image = ... in [iofuzz] of avocado.conf)"
        )
    kernel, initrd = text(params, "iofuzz_kernel"), text(params, "iofuzz_initrd")
    for key, path in (("iofuzz_image", image), ("iofuzz_kernel", kernel), ("iofuzz_initrd", initrd)):
        if path and not Path(path).is_file():
            raise ParamError(f"param {key} = {path!r}: no such file")
    if initrd and not kernel:
        raise ParamError(f"param iofuzz_initrd = {initrd!r}: an initrd needs iofuzz_kernel too")
    image_format = text(params, "iofuzz_image_format", "qcow2")
    if not re.fullmatch(r"[a-z0-9_-]+", image_format):
        raise ParamError(f"param iofuzz_image_format = {image_format!r}: not a QEMU image format name")
    login = choice(params, "iofuzz_login", LOGINS, "serial")
    if login == "ssh" and shutil.which("ssh") is None:
        raise ParamError(
            "param iofuzz_login = ssh needs OpenSSH's client on this host: apt-get install openssh-client "
            "(bootstrap.sh installs it)"
        )
    password, password_source = login_password(params)
    return ImageGuestParams(
        image=Path(image),
        image_format=image_format,
        drive_interface=choice(params, "iofuzz_drive_interface", DRIVE_INTERFACES, "virtio"),
        kernel=Path(kernel) if kernel else None,
        initrd=Path(initrd) if initrd else None,
        kernel_params=text(params, "iofuzz_kernel_params", "console=ttyS0"),
        login=login,
        ssh_port=_ssh_port(params),
        username=text(params, "iofuzz_username", "root"),
        password=password,
        prompt=_prompt(params),
        executor_path=_executor_path(params),
        password_source=password_source,
    )


def _ssh_port(params: Params) -> int:
    port_text = text(params, "iofuzz_ssh_port", "0")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ParamError(f"param iofuzz_ssh_port = {port_text!r}: expected a port number (0 = any free one)")
    return int(port_text)


def _prompt(params: Params) -> str:
    prompt = text(params, "iofuzz_prompt", r"^.*[\#\$]\s*$")
    try:
        re.compile(prompt)
    except re.error as err:
        raise ParamError(f"param iofuzz_prompt = {prompt!r}: not a regex: {err}") from None
    return prompt


def _executor_path(params: Params) -> str:
    # the path is quoted into shell commands in the guest: no spaces, no quotes
    path = text(params, "iofuzz_executor_path", "/tmp/iofuzz-exec")
    if not path.startswith("/") or any(c.isspace() or c in "'\"" for c in path):
        raise ParamError(f"param iofuzz_executor_path = {path!r}: expected an absolute path, no quotes")
    return path


def login_password(params: Params) -> tuple[str, str]:
    """The guest login password and how error messages name its source.

    ``iofuzz_password_file`` is read here, in the test, at run time: the
    password itself never enters the params, which avocado-vt logs in full and
    avocado records with the job (its command line, args.json). Only the path
    is in them. ``iofuzz_password`` is the value itself, recorded wherever the
    user gave it.
    """
    path = text(params, "iofuzz_password_file")
    inline = str(params.get("iofuzz_password", "") or "")  # a password's spaces are its own
    if not path:
        return inline, "iofuzz_password"
    source = f"iofuzz_password_file = {path!r}"
    if inline:
        raise ParamError(f"param {source}: iofuzz_password is set too; give the password one way only")
    try:
        file_text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ParamError(f"param {source}: cannot read it: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ParamError(f"param {source}: not UTF-8 text") from None
    # the first line: files written by editors, echo or Jenkins' file credentials may end in a newline
    lines = file_text.splitlines()
    password = lines[0] if lines else ""
    if not password:
        raise ParamError(f"param {source}: its first line is empty; it should hold the password")
    return password, source


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
        # the marker, and the scratch memory of fuzz_values=dma as the embedded guests reserve it
        params["kernel_params"] = f"{p.kernel_params} {GUEST_MARKER_PARAM} {SCRATCH_KERNEL_PARAM}".strip()
        if p.initrd:
            params["initrd"] = str(p.initrd)
    params["shell_prompt"] = p.session_prompt
    # the password stays out of params: avocado-vt saves the VM's params with its env (ImageGuest logs in itself)
    params["username"] = p.username
    return port
