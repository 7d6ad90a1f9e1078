"""avocado-vt's own ``--vt-*`` run options, read the way this package's tests can honour them.

avocado-vt registers ``--vt-qemu-bin``, ``--vt-machine-type``, ``--vt-guest-os``,
``--vt-arch`` and ``--vt-type`` for every ``avocado run``; its own resolver
reads them, ours must too, or a user's habit is silently ignored. Each one
either picks something of ours (a QEMU binary, a machine or guest_os row) or,
for a value we cannot run, is an error naming what we support.

avocado-vt fills some of them with defaults the user never chose (guest
``JeOS.27``, machine ``i440fx`` on x86, type ``qemu``): those values count as
"not given", since avocado cannot tell us whether they came from the command
line. Pure logic: the resolver passes avocado's job config in.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Keys avocado-vt 113 registers (avocado_vt/plugins/vt_init.py) and the options that set them.
QEMU_BIN_KEY = "vt.qemu.qemu_bin"
MACHINE_KEY = "vt.common.machine_type"
GUEST_OS_KEY = "vt.guest_os"
ARCH_KEY = "vt.common.arch"
TYPE_KEY = "vt.type"

# What avocado-vt puts there when the user gave nothing (virttest.defaults on an x86 host).
AVOCADO_VT_DEFAULT_GUEST_OS = "JeOS.27"
AVOCADO_VT_DEFAULT_MACHINE = "i440fx"

# --vt-machine-type value -> our `machine` variant (avocado-vt names the pc machine i440fx)
MACHINES = {"pc": "pc", "i440fx": "pc", "q35": "q35"}
GUEST_OSES = ("busybox", "debian", "image")
ARCHES = ("x86_64",)  # the executor fuzzes x86 port I/O
VT_TYPES = ("qemu",)  # avocado-vt's qemu_vm starts the VM; libvirt is not used


class VtOptionError(ValueError):
    """A --vt-* option with a value this package cannot run; the message names option and choices."""


@dataclass(frozen=True)
class VtChoices:
    """What the user chose through avocado-vt's options; None: not chosen."""

    qemu_binary: str | None = None
    machine: str | None = None  # a `machine` variant of cfg/devices.cfg: pc or q35
    guest_os: str | None = None  # a `guest_os` variant of cfg/vm.cfg

    def variant_filters(self) -> dict[str, str]:
        """Cartesian dimension -> variant the user's options pick."""
        chosen = {"machine": self.machine, "guest_os": self.guest_os}
        return {dimension: name for dimension, name in chosen.items() if name}

    def describe(self) -> str:
        """The options as the user typed them, for messages."""
        words = []
        if self.machine:
            words.append(f"--vt-machine-type {self.machine}")
        if self.guest_os:
            words.append(f"--vt-guest-os {self.guest_os}")
        return " ".join(words)


def _text(config: Mapping[str, Any], key: str) -> str:
    value = config.get(key)
    return "" if value is None else str(value).strip()


def qemu_binary_choice(value: str) -> str | None:
    """``--vt-qemu-bin`` as an absolute path to an executable; None when not given."""
    if not value:
        return None
    found = shutil.which(value) if os.sep not in value else None
    path = Path(found or value).expanduser()
    if not path.is_file() or not os.access(path, os.X_OK):
        raise VtOptionError(f"--vt-qemu-bin {value!r}: no such executable file")
    return str(path.absolute())


def machine_choice(value: str) -> str | None:
    if not value or value == AVOCADO_VT_DEFAULT_MACHINE:
        return None
    if value not in MACHINES:
        raise VtOptionError(
            f"--vt-machine-type {value!r}: avocado-iofuzz has rows for the machine types "
            f"{', '.join(sorted(MACHINES))} (i440fx is pc)"
        )
    return MACHINES[value]


def guest_os_choice(value: str) -> str | None:
    if not value or value == AVOCADO_VT_DEFAULT_GUEST_OS:
        return None
    if value not in GUEST_OSES:
        raise VtOptionError(
            f"--vt-guest-os {value!r}: avocado-iofuzz boots its own guests, not avocado-vt's; "
            f"choose one of {', '.join(GUEST_OSES)} (docs/user/ci.rst, 'Guest OS matrix'); "
            "set on the command line or in avocado's config ([vt] guest_os), --vt-guest-os overrides it"
        )
    return value


def check_arch(value: str) -> None:
    if value and value not in ARCHES:
        raise VtOptionError(
            f"--vt-arch {value!r}: avocado-iofuzz fuzzes {', '.join(ARCHES)} guests only "
            "(x86 port I/O); leave --vt-arch out or give x86_64"
        )


def check_vt_type(value: str) -> None:
    if value and value not in VT_TYPES:
        raise VtOptionError(
            f"--vt-type {value!r}: avocado-iofuzz starts its VMs through avocado-vt's QEMU support "
            "only; leave --vt-type out or give qemu"
        )


def read_vt_choices(config: Mapping[str, Any]) -> VtChoices:
    """The --vt-* options in avocado's job ``config``; VtOptionError for a value we cannot run."""
    check_vt_type(_text(config, TYPE_KEY))
    check_arch(_text(config, ARCH_KEY))
    return VtChoices(
        qemu_binary=qemu_binary_choice(_text(config, QEMU_BIN_KEY)),
        machine=machine_choice(_text(config, MACHINE_KEY)),
        guest_os=guest_os_choice(_text(config, GUEST_OS_KEY)),
    )
