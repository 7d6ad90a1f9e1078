"""A writer for the cpio "newc" format the Linux kernel unpacks as an initramfs.

Written here rather than shelling out to ``cpio`` so that owners are root and
timestamps fixed without needing root, and so the archive is byte-for-byte
reproducible from its inputs. Only directories and regular files are needed:
the guest's init mounts devtmpfs before it opens any device.
"""

from __future__ import annotations

import posixpath
import stat
from typing import BinaryIO

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


class CpioWriter:
    """Writes newc entries to a binary stream; parents of files are added as needed."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._next_inode = 1
        self._entries: dict[str, int] = {}  # archive path -> mode
        self._closed = False

    def _header(self, name: str, mode: int, size: int, nlink: int) -> None:
        encoded = name.encode() + b"\0"
        fields = (
            self._next_inode,
            mode,
            0,  # uid: root
            0,  # gid: root
            nlink,
            0,  # mtime: fixed for reproducible archives
            size,
            0,  # devmajor
            0,  # devminor
            0,  # rdevmajor
            0,  # rdevminor
            len(encoded),
            0,  # check (unused by newc)
        )
        self._next_inode += 1
        header = NEWC_MAGIC + b"".join(b"%08X" % field for field in fields)
        self._stream.write(header + encoded + _pad4(len(header) + len(encoded)))

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
        self._stream.write(data + _pad4(len(data)))

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
