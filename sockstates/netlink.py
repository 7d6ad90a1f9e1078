"""sock_diag (NETLINK_SOCK_DIAG, UNIX_DIAG) dump of the unix sockets of the
current network namespace: the kernel's own table of every live AF_UNIX socket,
including those no process has a descriptor for (in flight).

Layouts follow include/uapi/linux/unix_diag.h and sock_diag.h.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3

UDIAG_SHOW_NAME, UDIAG_SHOW_VFS, UDIAG_SHOW_PEER = 0x1, 0x2, 0x4
UDIAG_SHOW_ICONS, UDIAG_SHOW_RQLEN = 0x8, 0x10
UNIX_DIAG_NAME, UNIX_DIAG_VFS, UNIX_DIAG_PEER, UNIX_DIAG_ICONS = 0, 1, 2, 3
UNIX_DIAG_RQLEN, UNIX_DIAG_SHUTDOWN = 4, 6

TCP_ESTABLISHED, TCP_CLOSE, TCP_LISTEN = 1, 7, 10
SOCK_TYPES = {socket.SOCK_STREAM: "S", socket.SOCK_DGRAM: "D", socket.SOCK_SEQPACKET: "P"}

_NLMSGHDR = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBHIIIII")
_MSG = struct.Struct("=BBBBIII")
_ATTR = struct.Struct("=HH")


@dataclass(frozen=True)
class DiagSocket:
    ino: int
    type: str  # S, D, P
    state: int  # TCP_ESTABLISHED, TCP_CLOSE or TCP_LISTEN
    name: bytes | None  # address as bound: abstract names start with NUL
    vfs_ino: int | None  # inode of the socket file, for path names
    peer: int | None  # peer's inode; 0 when the peer is gone or not yet accepted
    icons: tuple[int, ...]  # listeners: inodes of the sockets waiting to be accepted
    rqueue: int
    shutdown: int  # RCV_SHUTDOWN 1 | SEND_SHUTDOWN 2


def dump_unix() -> list[DiagSocket]:
    """Every AF_UNIX socket of this network namespace, by inode order."""
    show = UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN
    req = _REQ.pack(socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0, show, 0xFFFFFFFF, 0xFFFFFFFF)
    hdr = _NLMSGHDR.pack(_NLMSGHDR.size + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
    out: list[DiagSocket] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG) as nl:
        nl.send(hdr + req)
        while True:
            data = nl.recv(1 << 16)
            if not data:
                raise OSError("sock_diag: netlink socket closed before NLMSG_DONE")
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, off)
                if kind == NLMSG_DONE:
                    return sorted(out, key=lambda d: d.ino)
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, off + _NLMSGHDR.size)
                    raise OSError(-code, "sock_diag dump of AF_UNIX failed")
                out.append(_parse(data, off + _NLMSGHDR.size, off + length))
                off += (length + 3) & ~3


def _parse(data: bytes, start: int, end: int) -> DiagSocket:
    _family, stype, state, _pad, ino, _c0, _c1 = _MSG.unpack_from(data, start)
    attrs: dict[int, bytes] = {}
    pos = start + _MSG.size
    while pos + _ATTR.size <= end:
        alen, atype = _ATTR.unpack_from(data, pos)
        attrs[atype] = data[pos + _ATTR.size:pos + alen]
        pos += (alen + 3) & ~3
    icons = attrs.get(UNIX_DIAG_ICONS, b"")
    return DiagSocket(
        ino=ino,
        type=SOCK_TYPES.get(stype, "?"),
        state=state,
        name=attrs.get(UNIX_DIAG_NAME),
        vfs_ino=struct.unpack("=II", attrs[UNIX_DIAG_VFS])[0] if UNIX_DIAG_VFS in attrs else None,
        peer=struct.unpack("=I", attrs[UNIX_DIAG_PEER])[0] if UNIX_DIAG_PEER in attrs else None,
        icons=struct.unpack(f"={len(icons) // 4}I", icons),
        rqueue=struct.unpack("=II", attrs[UNIX_DIAG_RQLEN])[0] if UNIX_DIAG_RQLEN in attrs else 0,
        shutdown=attrs[UNIX_DIAG_SHUTDOWN][0] if UNIX_DIAG_SHUTDOWN in attrs else 0,
    )
