"""A disk image that boots by itself: the path a user's image takes (firmware -> bootloader -> kernel).

A FAT file system with syslinux installed in its boot sector, a kernel, an
initrd and the kernel command line in the disk's own ``syslinux.cfg``; no
partition table is needed, SeaBIOS boots the bare file system. No ``-kernel``
is given to QEMU for such a disk.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

MIN_SIZE_MIB = 64
SLACK_MIB = 8  # FAT tables, syslinux's ldlinux.sys and the config


def bootable_disk(path: Path, vmlinuz: Path, initrd: Path, cmdline: str) -> Path:
    """A FAT disk at ``path`` that SeaBIOS boots through syslinux, sized to hold the kernel and initrd."""
    payload_mib = (vmlinuz.stat().st_size + initrd.stat().st_size) >> 20
    size_kib = max(MIN_SIZE_MIB, payload_mib + SLACK_MIB) * 1024
    subprocess.run(["mkfs.fat", "-C", str(path), str(size_kib)], check=True, capture_output=True)
    subprocess.run(["syslinux", "--install", str(path)], check=True, capture_output=True)
    config = path.with_suffix(".cfg")
    config.write_text(f"DEFAULT linux\nPROMPT 0\nLABEL linux\n  KERNEL vmlinuz\n  APPEND initrd=initrd {cmdline}\n")
    for source, name in ((vmlinuz, "vmlinuz"), (initrd, "initrd"), (config, "syslinux.cfg")):
        subprocess.run(["mcopy", "-i", str(path), str(source), f"::{name}"], check=True, capture_output=True)
    return path
