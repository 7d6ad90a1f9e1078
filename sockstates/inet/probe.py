"""Describe what the kernel holds: inet_diag first, then what only a descriptor can tell.

* inet_diag lists every TCP socket in a hash table (listening, bound,
  connected, pending in a listener, orphaned, TIME_WAIT) and every bound UDP
  socket, with state, ports, queues, timer and shutdown bits. Sockets without
  a descriptor (inode 0) are known only from it.
* A TCP socket the kernel has closed (``tcp_done()``: refused, reset, or
  after its peer's FIN in FIN_WAIT2) or never bound is in no table: its state
  comes from ``TCP_INFO``, its port from ``getsockname()`` (the kernel keeps
  it after releasing the port), its unread bytes from ``FIONREAD``, and its
  shutdown from ``poll()``: ``POLLRDHUP`` there means ``tcp_done()`` shut both
  directions.
* Pending errors are read with ``SO_ERROR`` (before any read, which would
  take them); then UDP queues are read to the end (the source port names the
  sender); last, listeners' connections are accepted, which gives their order.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sockstates.inet import canon, diag
from sockstates.inet.canon import DEAD, EPHEMERAL, Facts

PAYLOAD = struct.Struct("<QQ")  # sender handle, serial: every send is one payload
EPHEMERAL_FROM = 32768  # net.ipv4.ip_local_port_range starts here in a new namespace
FIONREAD = 0x541B
TCP_STATE_NAMES = {1: "ES", 5: "F2", 6: "TW", 7: "CL", 8: "CW", 10: "LI"}
ERROR_LETTERS = {errno.ECONNRESET: "r", errno.ECONNREFUSED: "f", errno.EPIPE: "p"}
CONNECTED = ("ES", "CW", "F2")


@dataclass
class KernelView:
    descriptions: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


# a socket's key while probing: ("fd", handle) for a descriptor of ours, ("nofd", proto, sport, dport,
# state) for one inet_diag lists without a descriptor (an orphan, a pending connection)
SockId = tuple[Any, ...]


@dataclass
class _Sock:
    """One socket while the probe gathers facts about it."""

    proto: str
    fdless: bool
    sport: int
    dport: int
    state: str
    shut: int
    error: str = ""
    queue_bytes: int = 0
    senders: list = field(default_factory=list)
    sock: socket.socket | None = None


def _port(port: int) -> object:
    if port == 0:
        return None
    return EPHEMERAL if port >= EPHEMERAL_FROM else port


def _state(number: int, notes: list[str]) -> str:
    name = TCP_STATE_NAMES.get(number)
    if name is None:
        notes.append(f"TCP state {number} is not a settled state of the model")
        return f"S{number}"
    return name


def _error(sock: socket.socket, notes: list[str]) -> str:
    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code and code not in ERROR_LETTERS:
        notes.append(f"pending error {errno.errorcode.get(code, code)} is not in the model")
    return ERROR_LETTERS.get(code, "")


def _from_descriptor(sock: socket.socket, found: diag.InetSocket | None, notes: list[str]) -> _Sock:
    proto = "T" if sock.type == socket.SOCK_STREAM else "U"
    error = _error(sock, notes)
    if found is not None:
        state = _state(found.state, notes) if proto == "T" else ""
        if proto == "T":
            info_state = _state(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0], notes)
            if info_state != state:
                notes.append(f"inet_diag says {state}, TCP_INFO {info_state}")
        queue = found.rqueue if proto == "T" and state != "LI" else 0
        return _Sock(proto, False, found.sport, found.dport, state, found.shutdown, error, queue, sock=sock)
    # in no table: never bound (UDP, TCP) or closed by the kernel (TCP)
    sport = sock.getsockname()[1]
    if proto == "U":
        return _Sock(proto, False, sport, 0, "", 0, error, sock=sock)
    state = _state(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0], notes)
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP)
    # POLLHUP comes with any closed socket; POLLRDHUP only with RCV_SHUTDOWN
    shut = 3 if any(events & select.POLLRDHUP for _, events in poller.poll(0)) else 0
    queue = struct.unpack("i", fcntl.ioctl(sock, FIONREAD, b"\0" * 4))[0]
    return _Sock(proto, False, sport, 0, state, shut, error, queue, sock=sock)


def probe(handles: dict[int, socket.socket], datagrams: dict[int, list[bytes]] | None = None) -> KernelView:
    """The kernel's description of the namespace; ``datagrams`` (by handle) receives what UDP queues held."""
    notes: list[str] = []
    table = diag.dump_all()
    by_inode = {d.inode: d for d in table if d.inode}
    socks: dict[SockId, _Sock] = {}
    for handle, sock in sorted(handles.items()):
        socks[("fd", handle)] = _from_descriptor(sock, by_inode.pop(os.fstat(sock.fileno()).st_ino, None), notes)
    for d in table:
        if d.inode == 0:
            socks[("nofd", d.proto, d.sport, d.dport, d.state)] = _Sock(
                d.proto, True, d.sport, d.dport, _state(d.state, notes) if d.proto == "T" else "", d.shutdown,
                queue_bytes=d.rqueue if d.proto == "T" else 0)
    if by_inode:
        notes.append(f"inet_diag lists sockets no descriptor holds: {sorted(by_inode)}")
    udp_by_port = {s.sport: sid for sid, s in socks.items() if s.proto == "U" and s.sport}
    for sid, s in socks.items():
        if s.proto == "U" and s.sock is not None:  # sid is ("fd", handle)
            kept = (datagrams if datagrams is not None else {}).setdefault(sid[1], [])
            s.senders = _read_datagrams(s.sock, udp_by_port, notes, kept)
    icons = {sid: _accept_order(sid, s, socks, notes) for sid, s in socks.items() if s.state == "LI"}
    snap = {sid: Facts(
        proto=s.proto, fdless=s.fdless, port=_port(s.sport), state=s.state, shut=s.shut, error=s.error,
        peer=_peer(sid, s, socks), icons=icons.get(sid, ()),
        queue=tuple(s.senders) if s.proto == "U" else _sends(s, notes)) for sid, s in socks.items()}
    return KernelView({canon.describe(snap)}, notes)


def _sends(s: _Sock, notes: list[str]) -> tuple:
    count, odd = divmod(s.queue_bytes, PAYLOAD.size)
    if odd:
        notes.append(f"{s.queue_bytes} bytes queued: not a whole number of sends")
    return ("peer",) * count


def _peer(sid: SockId, s: _Sock, socks: dict[SockId, _Sock]) -> object:
    if s.proto == "T":
        if s.state not in CONNECTED:
            return None
        return next((oid for oid, o in socks.items() if o.proto == "T" and o.state in CONNECTED
                     and (o.sport, o.dport) == (s.dport, s.sport)), DEAD)
    if not s.dport:
        return None
    return next((oid for oid, o in socks.items() if o.proto == "U" and o.sport == s.dport), DEAD)


def _read_datagrams(sock: socket.socket, udp_by_port: Mapping[int, object], notes: list[str],
                    kept: list[bytes]) -> list:
    senders: list[object] = []
    while True:
        try:
            data, (_, port) = sock.recvfrom(64, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return senders
        except OSError as e:
            notes.append(f"reading a UDP queue: {e.strerror}")
            return senders
        kept.append(data)
        if len(data) != PAYLOAD.size:
            notes.append(f"a datagram of {len(data)} bytes is not one of ours")
        senders.append(udp_by_port.get(port, DEAD))


def _accept_order(sid: SockId, listener: _Sock, socks: dict[SockId, _Sock], notes: list[str]) -> tuple:
    pending = {o.dport: oid for oid, o in socks.items()
               if o.proto == "T" and o.fdless and o.state in ("ES", "CW") and o.sport == listener.sport}
    if listener.sock is None:
        return tuple(pending.values())
    order = []
    while True:
        try:
            child, (_, port) = listener.sock.accept()
        except (BlockingIOError, InterruptedError):
            break
        child.close()
        if port in pending:
            order.append(pending.pop(port))
        else:
            notes.append(f"accept() gave a connection from port {port} that inet_diag did not list")
    if pending:
        notes.append(f"connections listed but not accepted: {sorted(pending)}")
    return tuple(order)
