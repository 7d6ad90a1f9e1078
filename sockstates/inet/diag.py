"""inet_diag (NETLINK_SOCK_DIAG) dump of the IPv4 TCP and UDP sockets of this network namespace.

The kernel's own table: it lists sockets no process holds a descriptor for
(pending connections, orphans closing down, TIME_WAIT). Layouts follow
include/uapi/linux/inet_diag.h.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_SHUTDOWN = 8
ALL_STATES = 0xFFFFFFFF

# struct inet_diag_req_v2 and struct inet_diag_msg; the socket id's ports are big endian
_NLMSGHDR = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBBI48s")
_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")
_ATTR = struct.Struct("=HH")
PROTOCOLS = {"T": socket.IPPROTO_TCP, "U": socket.IPPROTO_UDP}


@dataclass(frozen=True)
class InetSocket:
    proto: str  # T or U
    state: int  # TCP state numbers (UDP: 1 connected, 7 not)
    sport: int
    dport: int
    inode: int  # 0: no file (pending, orphaned, TIME_WAIT)
    rqueue: int  # TCP: bytes not yet read (listeners: connections waiting); UDP: memory in use
    wqueue: int  # TCP: bytes not yet acknowledged
    timer: int  # 0 none, 1 retransmit, 2 keepalive/FIN_WAIT2, 3 TIME_WAIT, 4 window probe
    shutdown: int  # RCV_SHUTDOWN 1 | SEND_SHUTDOWN 2 (full sockets only)

    def key(self) -> tuple:
        """Everything but the timers' countdown: what settling waits to stop changing."""
        return (self.proto, self.state, self.sport, self.dport, self.inode, self.rqueue, self.wqueue,
                self.timer, self.shutdown)


def dump(proto: str) -> list[InetSocket]:
    """Every IPv4 socket of protocol ``proto`` (T or U) in this network namespace."""
    req = _REQ.pack(socket.AF_INET, PROTOCOLS[proto], 0, 0, ALL_STATES, bytes(48))
    hdr = _NLMSGHDR.pack(_NLMSGHDR.size + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
    out: list[InetSocket] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG) as nl:
        nl.send(hdr + req)
        while True:
            data = nl.recv(1 << 16)
            if not data:
                raise OSError("inet_diag: netlink socket closed before NLMSG_DONE")
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, off)
                if kind == NLMSG_DONE:
                    return sorted(out, key=InetSocket.key)
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, off + _NLMSGHDR.size)
                    raise OSError(-code, f"inet_diag dump of {proto} failed")
                out.append(_parse(proto, data, off + _NLMSGHDR.size, off + length))
                off += (length + 3) & ~3


def dump_all() -> list[InetSocket]:
    return dump("T") + dump("U")


def _parse(proto: str, data: bytes, start: int, end: int) -> InetSocket:
    (_family, state, timer, _retrans, sport, dport, _src, _dst, _if, _cookie,
     _expires, rqueue, wqueue, _uid, inode) = _MSG.unpack_from(data, start)
    shutdown = 0
    pos = start + _MSG.size
    while pos + _ATTR.size <= end:
        alen, atype = _ATTR.unpack_from(data, pos)
        if atype == INET_DIAG_SHUTDOWN:
            shutdown = data[pos + _ATTR.size]
        pos += (alen + 3) & ~3
    return InetSocket(proto, state, int.from_bytes(sport, "big"), int.from_bytes(dport, "big"), inode,
                      rqueue, wqueue, timer, shutdown)
