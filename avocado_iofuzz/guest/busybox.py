"""The busybox guest: a static busybox, an init script and the caller's extra files in one initramfs.

Its shell runs as root on ttyS0, respawned whenever it exits, behind a prompt
no kernel message looks like, so an aexpect session finds it reliably.
"""

from __future__ import annotations

import io
import os
import stat
import struct
from collections.abc import Mapping
from pathlib import Path

from avocado_iofuzz.guest import debian_packages
from avocado_iofuzz.guest.cache import cached_entry, sha256_file
from avocado_iofuzz.guest.cpio import CpioWriter, normalize_archive_path

SYSTEM_BUSYBOX = Path("/bin/busybox")
BUSYBOX_STATIC_PACKAGE = "busybox-static"
PT_INTERP = 3
EM_X86_64 = 62

PROMPT_TEXT = "iofuzz-guest# "
# busybox ash may query the cursor position (ESC [6n) right after printing the prompt.
SHELL_PROMPT_REGEX = r"iofuzz-guest# (?:\x1b\[6n)?\s*$"

# Directories the init script and the executor expect to exist before anything is mounted.
BASE_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run", "root", "etc")

DIR_PERMS = {"root": 0o700, "tmp": 0o1777}

# Paths the guest itself owns; extra files may not replace them.
RESERVED_PATHS = frozenset({"init", "bin/busybox"})

INIT_SCRIPT = f"""#!/bin/busybox sh
# init of the avocado-iofuzz busybox guest (PID 1).
# There are no device nodes in the initramfs: mount devtmpfs first, then
# take the console as stdio (the kernel could not open it for us).
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=vt100
export PS1='{PROMPT_TEXT}'
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
hostname iofuzz-guest
cd /root
# The boot log went to the console in full; from now on only warnings and
# worse (oopses, panics) do, so that info messages arriving late (clocksource
# switches, device chatter while fuzzing) do not land in command output.
# `dmesg -n 8` in the guest brings everything back.
dmesg -n 5
echo "iofuzz-guest: init done, kernel $(uname -r), starting a root shell on the console"
# A root shell on the console, respawned forever: setsid + cttyhack give it
# the console as controlling tty, so Ctrl-C from the host reaches its jobs.
# A wide terminal stops the line editor from wrapping long commands.
while :; do
    setsid cttyhack sh -c 'stty cols 4000 rows 50 2>/dev/null; exec sh'
    echo "iofuzz-guest: shell exited with status $?, respawning"
    sleep 0.2
done
"""


class BusyboxGuestError(RuntimeError):
    """The busybox guest cannot be assembled from the given inputs."""


def is_static_x86_64_elf(data: bytes) -> bool:
    """True for an x86-64 ELF executable with no program interpreter (statically linked)."""
    if data[:4] != b"\x7fELF" or len(data) < 64 or data[4] != 2 or data[5] != 1:
        return False
    (machine,) = struct.unpack_from("<H", data, 0x12)
    if machine != EM_X86_64:
        return False
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for index in range(phnum):
        (p_type,) = struct.unpack_from("<I", data, phoff + index * phentsize)
        if p_type == PT_INTERP:
            return False
    return True


def static_busybox(cache_root: Path) -> Path:
    """A statically linked x86-64 busybox: the host's if it is one, else Debian's busybox-static."""
    if SYSTEM_BUSYBOX.is_file() and is_static_x86_64_elf(SYSTEM_BUSYBOX.read_bytes()):
        return SYSTEM_BUSYBOX
    pkg = debian_packages.candidate_package(BUSYBOX_STATIC_PACKAGE, memo_dir=cache_root / "busybox")

    def build(staged: Path) -> dict[str, object]:
        deb = debian_packages.download(pkg, cache_root / "debs")
        debian_packages.extract_members(deb, ["bin/busybox"], staged)
        if not is_static_x86_64_elf((staged / "busybox").read_bytes()):
            raise BusyboxGuestError(f"bin/busybox in {deb.name} is not a static x86-64 executable")
        return {"source": f"debian:{pkg.ident}"}

    entry, _ = cached_entry(cache_root / "busybox", pkg.ident.replace("=", "_").replace(":", "%3a"), build)
    return entry / "busybox"


def check_extra_files(extra_files: Mapping[str, Path]) -> dict[str, tuple[Path, int]]:
    """Validate extra files: archive path → (host file, permissions in the guest).

    Executable host files become 0755 in the guest, others 0644.
    """
    checked: dict[str, tuple[Path, int]] = {}
    for guest_path, host_path in extra_files.items():
        if not str(guest_path).startswith("/"):
            raise BusyboxGuestError(f"extra file's guest path {guest_path!r} must be absolute")
        archive_path = normalize_archive_path(str(guest_path))
        if archive_path in RESERVED_PATHS:
            raise BusyboxGuestError(f"extra file {guest_path!r} would replace the guest's own /{archive_path}")
        if archive_path in BASE_DIRS:
            raise BusyboxGuestError(f"extra file {guest_path!r} would replace the guest directory /{archive_path}")
        host_path = Path(host_path)
        if not host_path.is_file():
            raise BusyboxGuestError(f"extra file for {guest_path!r}: {host_path} is not a regular file")
        executable = bool(host_path.stat().st_mode & stat.S_IXUSR)
        checked[archive_path] = (host_path, 0o755 if executable else 0o644)
    return checked


def busybox_inputs(busybox: Path, extra: Mapping[str, tuple[Path, int]]) -> dict[str, object]:
    """Everything the initramfs's bytes depend on, for the cache key."""
    return {
        "busybox_sha256": sha256_file(busybox),
        "init": INIT_SCRIPT,
        "extra": {path: [sha256_file(host), perms] for path, (host, perms) in sorted(extra.items())},
    }


def write_initramfs(target: Path, busybox: Path, extra: Mapping[str, tuple[Path, int]]) -> None:
    """An uncompressed newc initramfs: the kernel unpacks it faster than a compressed one under TCG."""
    buffer = io.BytesIO()
    with CpioWriter(buffer) as archive:
        for directory in BASE_DIRS:
            archive.add_dir(directory, perms=DIR_PERMS.get(directory, 0o755))
        archive.add_file("init", INIT_SCRIPT.encode(), perms=0o755)
        archive.add_file("bin/busybox", busybox.read_bytes(), perms=0o755)
        for path, (host, perms) in sorted(extra.items()):
            archive.add_file(path, host.read_bytes(), perms=perms)
    tmp = target.with_name(target.name + ".part")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, target)
