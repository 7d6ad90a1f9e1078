"""tar → newc: every entry type a Debian tree holds, read back with an independent newc parser."""

from __future__ import annotations

import io
import stat
import tarfile
from pathlib import Path

import pytest

from avocado_iofuzz.guest.newc import NewcError, tar_to_newc


def parse_newc(data: bytes) -> list[dict]:
    """Entries of a newc archive, in order, up to the trailer."""
    entries = []
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        ino, mode, uid, gid, nlink, _mtime, size, _dmaj, _dmin, rmaj, rmin, namesize, _check = fields
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode()
        data_start = name_start + namesize + (-(110 + namesize) % 4)
        body = data[data_start : data_start + size]
        pos = data_start + size + (-size % 4)
        if name == "TRAILER!!!":
            return entries
        entries.append({"name": name, "ino": ino, "mode": mode, "uid": uid, "gid": gid, "nlink": nlink,
                        "body": body, "rdev": (rmaj, rmin)})


def add(archive: tarfile.TarFile, name: str, kind: bytes, data: bytes = b"", **fields) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    for key, value in fields.items():
        setattr(info, key, value)
    archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


@pytest.fixture
def tree_tar(tmp_path: Path) -> Path:
    path = tmp_path / "tree.tar"
    with tarfile.open(path, "w") as archive:
        add(archive, "./", tarfile.DIRTYPE, mode=0o755)
        add(archive, "./usr", tarfile.DIRTYPE, mode=0o755)
        add(archive, "./usr/bin", tarfile.DIRTYPE, mode=0o755)
        add(archive, "./bin", tarfile.SYMTYPE, linkname="usr/bin")
        add(archive, "./usr/bin/gunzip", tarfile.REGTYPE, b"#!/bin/sh\necho gz\n", mode=0o755)
        add(archive, "./usr/bin/uncompress", tarfile.LNKTYPE, linkname="./usr/bin/gunzip", mode=0o755)
        add(archive, "./var", tarfile.DIRTYPE, mode=0o755)
        add(archive, "./var/mail", tarfile.DIRTYPE, mode=0o2775, gid=8)
        add(archive, "./dev", tarfile.DIRTYPE, mode=0o755)
        add(archive, "./dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3)
        add(archive, "./dev/initctl", tarfile.FIFOTYPE, mode=0o600)
        add(archive, "./etc", tarfile.DIRTYPE, mode=0o755)
        add(archive, "./etc/odd", tarfile.REGTYPE, b"12345", mode=0o640)
    return path


def test_every_entry_type_survives(tree_tar: Path) -> None:
    out = io.BytesIO()
    count = tar_to_newc(tree_tar, out)
    entries = {e["name"]: e for e in parse_newc(out.getvalue())}
    assert count == len(entries) == 12  # the root entry "./" is left out
    assert "" not in entries and "." not in entries
    assert stat.S_ISLNK(entries["bin"]["mode"]) and entries["bin"]["body"] == b"usr/bin"
    assert stat.S_ISCHR(entries["dev/null"]["mode"]) and entries["dev/null"]["rdev"] == (1, 3)
    assert stat.S_ISFIFO(entries["dev/initctl"]["mode"])
    assert entries["var/mail"]["mode"] == stat.S_IFDIR | 0o2775 and entries["var/mail"]["gid"] == 8
    assert entries["etc/odd"]["body"] == b"12345" and entries["etc/odd"]["mode"] & 0o7777 == 0o640


def test_hard_links_share_an_inode_and_the_first_carries_the_data(tree_tar: Path) -> None:
    out = io.BytesIO()
    tar_to_newc(tree_tar, out)
    entries = {e["name"]: e for e in parse_newc(out.getvalue())}
    first, link = entries["usr/bin/gunzip"], entries["usr/bin/uncompress"]
    assert first["ino"] == link["ino"]
    # the kernel only remembers files with nlink >= 2, so both must say so
    assert first["nlink"] >= 2 and link["nlink"] >= 2
    assert first["body"] == b"#!/bin/sh\necho gz\n" and link["body"] == b""
    others = [e["ino"] for name, e in entries.items() if name not in ("usr/bin/gunzip", "usr/bin/uncompress")]
    assert first["ino"] not in others


def test_a_hard_link_to_a_later_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as archive:
        add(archive, "./a", tarfile.LNKTYPE, linkname="./b")
        add(archive, "./b", tarfile.REGTYPE, b"x")
    with pytest.raises(NewcError, match=r"'\./a'"):
        tar_to_newc(path, io.BytesIO())


def test_an_entry_leaving_the_root_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as archive:
        add(archive, "../etc/passwd", tarfile.REGTYPE, b"x")
    with pytest.raises(NewcError, match="leaves the root"):
        tar_to_newc(path, io.BytesIO())
