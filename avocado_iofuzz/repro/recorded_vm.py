"""A fresh guest of a trace's configuration, outside avocado-vt: for ``avocado iofuzz replay``.

The recorded QEMU command line gives the machine and its devices
(:func:`~avocado_iofuzz.repro.qemu_args.guest_args`); the kernel, initrd,
serial console and QMP monitor are :class:`~avocado_iofuzz.vm.bare.BareQemu`'s,
with the current build of the guest the trace names, so its executor knows
``--script``. The console keeps the recorded serial port (``ttyS0``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from avocado_iofuzz.guest.build import GuestArtifacts
from avocado_iofuzz.repro.qemu_args import CONSOLE_CHARDEV, ReplayArgsError, guest_args
from avocado_iofuzz.vm.bare import BareQemu, BareQemuError

QMP_CHARDEV = "iofuzz_replay_qmp"  # not "qmp": the recorded line may hold a (nulled) chardev of that name


class RecordedQemu(BareQemu):
    """A BareQemu whose machine and devices come from a recorded command line."""

    qmp_chardev = QMP_CHARDEV
    console_chardev = CONSOLE_CHARDEV

    def __init__(self, qemu_cmdline: str, guest: GuestArtifacts, run_dir: Path | None = None, **kwargs: Any) -> None:
        try:
            binary, self.recorded_args, self.has_console = guest_args(qemu_cmdline)
        except ReplayArgsError as err:
            raise BareQemuError(f"recorded qemu_cmdline: {err}") from None
        if "qemu_binary" not in kwargs:
            kwargs["qemu_binary"] = binary if Path(binary).is_file() else (shutil.which(Path(binary).name) or binary)
        super().__init__(guest, run_dir, **kwargs)

    def machine_args(self) -> list[str]:
        return list(self.recorded_args)

    def console_device_args(self) -> list[str]:
        # the recorded line keeps its serial device, now wired to our chardev
        return [] if self.has_console else super().console_device_args()


def guest_for(header: dict[str, Any]) -> GuestArtifacts:
    """The current build of the guest a trace was recorded on (its executor knows ``--script``)."""
    from avocado_iofuzz.guest.build import build_guest, default_guest

    name = str(header.get("guest") or "busybox")
    if name == "busybox":
        return default_guest()
    if name == "image":
        raise BareQemuError(
            "this trace ran on a user's disk image: replay it in the VT test (iofuzz_replay = TRACE) "
            "with the same image params"
        )
    return build_guest(name)
