"""The unix half of a reproducer: perform the state's calls, and report what the sockets hold.

The report names sockets by handle (h1) or by order of discovery (x1, x2,
...), lists pending errors, connections a listener can accept, every queued
message with its sender, serial and the descriptors it carries (followed in a
fixed traversal order), and last whether each socket may still send.
"""

from __future__ import annotations

import array
import ctypes
import errno
import os
import socket
import struct
import sys
from typing import Any

# --- state values: render() replaces this block with the state's ---
# the calls as JSON-like records (op, fd, type, name...): Any, as their fields vary by op
SYSCALLS: list[dict[str, Any]] = []
# --- end of state values ---

KINDS = {"S": socket.SOCK_STREAM, "D": socket.SOCK_DGRAM, "P": socket.SOCK_SEQPACKET}
HOWS = {"RD": socket.SHUT_RD, "WR": socket.SHUT_WR, "RDWR": socket.SHUT_RDWR}
PAYLOAD = struct.Struct("<QQ")  # sender handle, serial


def address(label: str) -> bytes | str:
    return b"\0repro-" + label[1:].encode() if label[0] == "@" else "s" + label[1:]


def perform(handles: dict[int, socket.socket], call: dict[str, Any], serial: int) -> None:
    op, fd = call["op"], call.get("fd", -1)  # -1: no descriptor (socket, socketpair, unlink)
    if op == "socket":
        handles[call["result"][0]] = socket.socket(socket.AF_UNIX, KINDS[call["type"]])
    elif op == "socketpair":
        a, b = socket.socketpair(socket.AF_UNIX, KINDS[call["type"]])
        handles[call["result"][0]], handles[call["result"][1]] = a, b
    elif op == "bind":
        handles[fd].bind(address(call["name"]))
    elif op == "listen":
        handles[fd].listen(64)
    elif op == "connect":
        handles[fd].setblocking(False)
        handles[fd].connect(address(call["name"]))
    elif op == "accept":
        handles[fd].setblocking(False)
        handles[call["result"][0]] = handles[fd].accept()[0]
    elif op in ("send", "sendto"):
        anc = []
        if call.get("passes") is not None:
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [handles[call["passes"]].fileno()]))]
        args = [address(call["name"])] if op == "sendto" else []
        handles[fd].sendmsg([PAYLOAD.pack(fd, serial)], anc, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL, *args)
    elif op == "shutdown":
        handles[fd].shutdown(HOWS[call["how"]])
    elif op == "close":
        handles.pop(fd).close()
    elif op == "unlink":
        os.unlink(address(call["name"]))


def reach(workdir: str) -> dict[int, socket.socket]:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) != 0:
        sys.exit("cannot enter a new network namespace: run as root")
    os.chdir(workdir)
    handles: dict[int, socket.socket] = {}
    for serial, call in enumerate(SYSCALLS, 1):
        try:
            perform(handles, call, serial)
        except OSError:
            if call.get("error") is None:
                raise
    return handles


def report(handles: dict[int, socket.socket]) -> list[str]:
    """What can be read, labelled by handle (h1) or by order of discovery (x1, x2, ...)."""
    lines: list[str] = []
    labels: dict[int, str] = {}
    extra: list[socket.socket] = []

    def label(sock: socket.socket) -> str:
        ino = os.fstat(sock.fileno()).st_ino
        if ino not in labels:
            labels[ino] = "x%d" % (len(labels) + 1)
            extra.append(sock)
        return labels[ino]

    for handle, sock in sorted(handles.items()):
        labels.setdefault(os.fstat(sock.fileno()).st_ino, "h%d" % handle)
    todo = [sock for _, sock in sorted(handles.items())]
    visited: list[tuple[str, socket.socket]] = []
    while todo:
        sock = todo.pop(0)
        me = labels[os.fstat(sock.fileno()).st_ino]
        visited.append((me, sock))
        sock.setblocking(False)
        try:
            peer = repr(sock.getpeername())
        except OSError as e:
            peer = errno.errorcode.get(e.errno or 0, str(e.errno))
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        lines.append("%s type=%d error=%d name=%r peer=%s" % (me, sock.type, error, sock.getsockname(), peer))
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            while True:
                try:
                    child = sock.accept()[0]
                except BlockingIOError:
                    break
                lines.append("%s accepts %s" % (me, label(child)))
                todo.append(child)
            continue
        while True:
            try:
                data, anc, _, _ = sock.recvmsg(PAYLOAD.size, socket.CMSG_SPACE(16))
            except BlockingIOError:
                break
            except OSError as e:
                lines.append("%s read error %s" % (me, e.strerror))
                break
            if not data:
                lines.append("%s end of stream" % me)
                break
            carried = []
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    for fd in array.array("i", payload[: len(payload) - len(payload) % 4]):
                        new = socket.socket(fileno=fd)
                        fresh = os.fstat(new.fileno()).st_ino not in labels
                        carried.append(label(new))
                        if fresh:
                            todo.append(new)
            sender, serial = PAYLOAD.unpack(data) if len(data) == PAYLOAD.size else (-1, -1)
            lines.append("%s message %d from h%d bytes %s carrying %s" % (me, serial, sender, data.hex(), carried))
    # last, as it changes queues: may each socket still send (to its peer)?
    for me, sock in visited:
        try:
            sock.send(b"ping", socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            lines.append("%s send: ok" % me)
        except OSError as e:
            lines.append("%s send: %s" % (me, errno.errorcode.get(e.errno or 0, str(e.errno))))
    return lines
