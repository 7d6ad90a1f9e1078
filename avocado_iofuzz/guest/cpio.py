"""A writer for the cpio "newc" format the Linux kernel unpacks as an initramfs.

Written here rather than shelling out to ``cpio`` so that owners are root and
timestamps fixed without needing root, and so the archive is byte-for-byte
reproducible from its inputs. ``NewcStream`` writes single entries (any
type, explicit inodes and owners: what a Debian tree needs, see newc.py);
``CpioWriter`` builds the busybox guest on it from directories and regular
files only: the guest's init mounts devtmpfs before it opens any device.
"""

from __future__ import annotations

import posixpath
import stat
from typing import IO

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"


class CpioError(ValueError):
    """An entry cannot be put into the archive."""


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def normalize_archive_path(path: str) -> str:
    """``/usr/bin/x`` → ``usr/bin/x``; rejects paths that leave the archive root."""
    if not path or "\0" in path:
        raise CpioError(f"invalid archive path {path!r}")
    normalized = posixpath.normpath(path.lstrip("/"))
    if not normalized or normalized == "." or ".." in normalized.split("/"):
        raise CpioError(f"archive path {path!r} does not name a file inside the archive")
    return normalized


class NewcStream:
    """Writes newc entries with explicit inode numbers, owners and device numbers."""

    def __init__(self, out: IO[bytes]) -> None:
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


class CpioWriter:
    """Writes newc entries to a binary stream; parents of files are added as needed."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._newc = NewcStream(stream)
        self._next_inode = 1
        self._entries: dict[str, int] = {}  # archive path -> mode
        self._closed = False

    def _header(self, name: str, mode: int, size: int, nlink: int) -> None:
        # root-owned, mtime 0: the archive is a pure function of its inputs
        self._newc.entry(name, mode, ino=self._next_inode, size=size, nlink=nlink)
        self._next_inode += 1

    def _ensure_parents(self, path: str) -> None:
        parent = posixpath.dirname(path)
        if parent and parent not in self._entries:
            self.add_dir(parent)

    def _claim(self, path: str, mode: int) -> None:
        if self._closed:
            raise CpioError("archive already closed")
        existing = self._entries.get(path)
        if existing is not None:
            if stat.S_ISDIR(existing) and stat.S_ISDIR(mode):
                return
            raise CpioError(f"archive path /{path} added twice")
        self._entries[path] = mode

    def add_dir(self, path: str, perms: int = 0o755) -> None:
        path = normalize_archive_path(path)
        if stat.S_ISDIR(self._entries.get(path, 0)):
            return
        self._ensure_parents(path)
        mode = stat.S_IFDIR | (perms & 0o7777)
        self._claim(path, mode)
        self._header(path, mode, 0, 2)

    def add_file(self, path: str, data: bytes, perms: int = 0o644) -> None:
        path = normalize_archive_path(path)
        self._ensure_parents(path)
        mode = stat.S_IFREG | (perms & 0o7777)
        self._claim(path, mode)
        self._header(path, mode, len(data), 1)
        self._newc.data(data)
        self._newc.pad(len(data))

    def close(self) -> None:
        """Write the trailer entry that ends the archive."""
        if self._closed:
            return
        self._header(TRAILER, 0, 0, 1)
        self._closed = True

    def __enter__(self) -> CpioWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            self.close()
