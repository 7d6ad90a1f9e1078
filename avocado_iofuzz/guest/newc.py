"""A Debian root tree (a tarball) turned into a cpio "newc" archive the kernel unpacks as initramfs.

``cpio.CpioWriter`` writes the small busybox guest from files and directories;
a Debian tree also has symlinks (merged /usr: ``/bin -> usr/bin``), hard
links, device nodes and owners other than root, so it is converted entry by
entry from the tar that mmdebstrap writes, without extracting it (which
would need root for the device nodes and the owners).

Hard links: the kernel's unpacker (init/initramfs.c) remembers a regular
file under its (inode, device) when its link count is at least 2, and links
every later entry with the same inode to it. So the first entry of a group
carries the data and ``nlink`` 2, the later ones the same inode and no data.
"""

from __future__ import annotations

import posixpath
import stat
import tarfile
from pathlib import Path
from typing import BinaryIO

from avocado_iofuzz.guest.cpio import NEWC_MAGIC, TRAILER

COPY_CHUNK = 1 << 20


class NewcError(ValueError):
    """A tar entry that cannot be represented in the initramfs."""


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _archive_path(name: str) -> str:
    """``./usr/bin/x`` → ``usr/bin/x``; "" for the root entry itself."""
    path = posixpath.normpath(name.lstrip("/")).removeprefix("./")
    if path == ".":
        return ""
    if path.startswith("../") or path == "..":
        raise NewcError(f"tar entry {name!r} leaves the root")
    return path


class NewcStream:
    """Writes newc entries with explicit inode numbers, owners and device numbers."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.bytes_written = 0

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.bytes_written += len(data)

    def entry(
        self,
        path: str,
        mode: int,
        *,
        ino: int,
        size: int = 0,
        nlink: int = 1,
        uid: int = 0,
        gid: int = 0,
        mtime: int = 0,
        rdev: tuple[int, int] = (0, 0),
    ) -> None:
        """The header of one entry; the caller writes ``size`` bytes of data after it, then :meth:`pad`."""
        encoded = path.encode() + b"\0"
        fields = (ino, mode, uid, gid, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = NEWC_MAGIC + b"".join(b"%08X" % field for field in fields)
        self._write(header + encoded + _pad4(len(header) + len(encoded)))

    def pad(self, size: int) -> None:
        self._write(_pad4(size))

    def data(self, chunk: bytes) -> None:
        self._write(chunk)

    def trailer(self, ino: int) -> None:
        self.entry(TRAILER, 0, ino=ino)


def tar_to_newc(tar_path: Path, out: BinaryIO) -> int:
    """Write every entry of the tar at ``tar_path`` to ``out`` as newc; returns the entry count."""
    with tarfile.open(tar_path, mode="r:*") as archive:
        members = archive.getmembers()
        link_targets = {_archive_path(m.linkname) for m in members if m.islnk()}
        writer = NewcStream(out)
        inodes: dict[str, int] = {}
        next_ino = 1
        count = 0
        for member in members:
            path = _archive_path(member.name)
            if not path:
                continue  # the root directory itself: the kernel's rootfs already exists
            perms = member.mode & 0o7777
            owner = {"uid": member.uid, "gid": member.gid, "mtime": int(member.mtime)}
            if member.islnk():
                target = _archive_path(member.linkname)
                if target not in inodes:
                    raise NewcError(f"hard link {member.name!r} to {member.linkname!r}, which is not before it")
                writer.entry(path, stat.S_IFREG | perms, ino=inodes[target], nlink=2, **owner)
                count += 1
                continue
            ino, next_ino = next_ino, next_ino + 1
            if member.isdir():
                writer.entry(path, stat.S_IFDIR | perms, ino=ino, nlink=2, **owner)
            elif member.isreg():
                inodes[path] = ino
                nlink = 2 if path in link_targets else 1
                writer.entry(path, stat.S_IFREG | perms, ino=ino, size=member.size, nlink=nlink, **owner)
                source = archive.extractfile(member)
                assert source is not None
                while chunk := source.read(COPY_CHUNK):
                    writer.data(chunk)
                writer.pad(member.size)
            elif member.issym():
                target_bytes = member.linkname.encode()
                writer.entry(path, stat.S_IFLNK | 0o777, ino=ino, size=len(target_bytes), **owner)
                writer.data(target_bytes)
                writer.pad(len(target_bytes))
            elif member.ischr() or member.isblk():
                kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
                writer.entry(path, kind | perms, ino=ino, rdev=(member.devmajor, member.devminor), **owner)
            elif member.isfifo():
                writer.entry(path, stat.S_IFIFO | perms, ino=ino, **owner)
            else:
                raise NewcError(f"tar entry {member.name!r} has a type ({member.type!r}) an initramfs cannot hold")
            count += 1
        writer.trailer(next_ino)
    return count
