"""The newc writer: what the kernel (and GNU cpio) read back is what we put in."""

from __future__ import annotations

import io
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from avocado_iofuzz.guest.cpio import CpioError, CpioWriter, normalize_archive_path


def build(entries: list[tuple[str, str, bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with CpioWriter(buffer) as archive:
        for kind, path, data, perms in entries:
            if kind == "dir":
                archive.add_dir(path, perms)
            else:
                archive.add_file(path, data, perms)
    return buffer.getvalue()


def parse_newc(blob: bytes) -> list[dict[str, object]]:
    """An independent reader of the newc fields the kernel uses."""
    entries = []
    pos = 0
    while True:
        assert blob[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(blob[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name = blob[pos + 110 : pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        data = blob[pos : pos + filesize]
        pos = (pos + filesize + 3) & ~3
        if name == "TRAILER!!!":
            assert pos == len(blob)
            return entries
        entries.append({"name": name, "mode": fields[1], "uid": fields[2], "gid": fields[3], "data": data})


def test_entries_round_trip_with_root_owner_and_alignment():
    blob = build([("file", "/usr/bin/tool", b"\x7fELFabc", 0o755), ("file", "etc/x", b"12345", 0o644)])
    assert len(blob) % 4 == 0
    entries = {e["name"]: e for e in parse_newc(blob)}
    # parents come first and are directories
    names = [e["name"] for e in parse_newc(blob)]
    assert names.index("usr") < names.index("usr/bin") < names.index("usr/bin/tool")
    assert stat.S_ISDIR(entries["usr/bin"]["mode"])
    tool = entries["usr/bin/tool"]
    assert tool["data"] == b"\x7fELFabc"
    assert stat.S_ISREG(tool["mode"]) and stat.S_IMODE(tool["mode"]) == 0o755
    assert stat.S_IMODE(entries["etc/x"]["mode"]) == 0o644
    assert all(e["uid"] == 0 and e["gid"] == 0 for e in entries.values())


def test_output_is_reproducible():
    entries = [("dir", "tmp", b"", 0o1777), ("file", "init", b"#!/bin/sh\n", 0o755)]
    assert build(entries) == build(entries)


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio not installed")
def test_gnu_cpio_extracts_what_we_wrote(tmp_path: Path):
    blob = build([("dir", "tmp", b"", 0o1777), ("file", "/usr/bin/iofuzz-exec", b"binary\0data", 0o755)])
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=blob, cwd=tmp_path, check=True)
    extracted = tmp_path / "usr/bin/iofuzz-exec"
    assert extracted.read_bytes() == b"binary\0data"
    assert stat.S_IMODE(extracted.stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "tmp").stat().st_mode) == 0o1777


def test_same_file_twice_is_an_error():
    archive = CpioWriter(io.BytesIO())
    archive.add_file("bin/busybox", b"a")
    with pytest.raises(CpioError, match="bin/busybox added twice"):
        archive.add_file("/bin/busybox", b"b")


def test_file_over_directory_is_an_error():
    archive = CpioWriter(io.BytesIO())
    archive.add_dir("usr/bin")
    with pytest.raises(CpioError, match="usr/bin added twice"):
        archive.add_file("usr/bin", b"x")


@pytest.mark.parametrize("bad", ["", "/", "..", "../etc/passwd", "a/../../b", "x\0y"])
def test_paths_outside_the_archive_are_rejected(bad: str):
    with pytest.raises(CpioError):
        normalize_archive_path(bad)


def test_paths_are_normalised():
    assert normalize_archive_path("/usr//bin/./x") == "usr/bin/x"
    assert normalize_archive_path("usr/bin/../sbin/y") == "usr/sbin/y"


def test_closed_archive_refuses_entries():
    archive = CpioWriter(io.BytesIO())
    archive.close()
    with pytest.raises(CpioError, match="closed"):
        archive.add_file("x", b"")
