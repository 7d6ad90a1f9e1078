"""The TCP/UDP half of a reproducer: perform the state's calls on 127.0.0.1, and report what the kernel holds.

Performs the calls in a network namespace of its own with only ``lo`` up,
waiting 50 ms after each (loopback settles within milliseconds), and reports
what the kernel holds in words that do not depend on the run: ports by label
(``:N`` is 10000+N) or by the handle whose port it is, since ephemeral ports
differ between the run without C/R and the one with it. Sockets without a
descriptor (connections waiting in a listener, orphans, TIME_WAIT) are read
from ``/proc/net/tcp`` of the namespace.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import sys
import time
from typing import Any

# --- state values: render() replaces this block with the state's ---
# the calls as JSON-like records (op, fd, type, name...): Any, as their fields vary by op
SYSCALLS: list[dict[str, Any]] = []
# --- end of state values ---

KINDS = {"T": socket.SOCK_STREAM, "U": socket.SOCK_DGRAM}
HOWS = {"RD": socket.SHUT_RD, "WR": socket.SHUT_WR, "RDWR": socket.SHUT_RDWR}
PAYLOAD = struct.Struct("<QQ")  # sender handle, serial
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
              7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}
FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL


def address(label: str) -> tuple[str, int]:
    return ("127.0.0.1", 10000 + int(label[1:]))


def perform(handles: dict[int, socket.socket], call: dict[str, Any], serial: int) -> None:
    op, fd = call["op"], call.get("fd", -1)  # -1: no descriptor (socket)
    if op == "socket":
        handles[call["result"][0]] = socket.socket(socket.AF_INET, KINDS[call["type"]])
        handles[call["result"][0]].setblocking(False)
    elif op == "bind":
        handles[fd].bind(address(call["name"]))
    elif op == "listen":
        handles[fd].listen(64)
    elif op == "connect":
        code = handles[fd].connect_ex(address(call["name"]))
        if code not in (0, errno.EINPROGRESS):
            raise OSError(code, os.strerror(code))
    elif op == "accept":
        handles[call["result"][0]] = handles[fd].accept()[0]
        handles[call["result"][0]].setblocking(False)
    elif op == "send":
        handles[fd].send(PAYLOAD.pack(fd, serial), FLAGS)
    elif op == "sendto":
        handles[fd].sendto(PAYLOAD.pack(fd, serial), FLAGS, address(call["name"]))
    elif op == "shutdown":
        handles[fd].shutdown(HOWS[call["how"]])
    elif op == "close":
        handles.pop(fd).close()
    elif op == "abort":
        handles[fd].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handles.pop(fd).close()
    elif op == "disconnect":
        unspec = struct.pack("=H14x", socket.AF_UNSPEC)
        if ctypes.CDLL(None, use_errno=True).connect(handles[fd].fileno(), unspec, len(unspec)) != 0:
            raise OSError(ctypes.get_errno(), "connect(AF_UNSPEC)")


def reach(workdir: str) -> dict[int, socket.socket]:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) != 0:
        sys.exit("cannot enter a new network namespace: run as root")
    with socket.socket() as s:  # bring lo up: SIOCGIFFLAGS, SIOCSIFFLAGS | IFF_UP
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, struct.pack("16sH14x", b"lo", 0)))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))
    os.chdir(workdir)
    handles: dict[int, socket.socket] = {}
    for serial, call in enumerate(SYSCALLS, 1):
        try:
            perform(handles, call, serial)
        except OSError:
            if call.get("error") is None:
                raise
        time.sleep(0.05)
    return handles


def report(handles: dict[int, socket.socket]) -> list[str]:
    """What each socket holds, ports named by label or by the handle that owns them."""
    owner: dict[tuple[int, int], str] = {}
    for handle, sock in handles.items():
        owner[(sock.type, sock.getsockname()[1])] = "h%d" % handle

    def port(kind: int, number: int) -> str:
        if number == 0:
            return "none"
        if 10000 < number < 32768:
            return ":%d" % (number - 10000)
        return owner.get((kind, number), "an ephemeral port")

    lines: list[str] = []
    for handle, sock in sorted(handles.items()):
        me, kind = "h%d" % handle, sock.type
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        try:
            peer = port(kind, sock.getpeername()[1])
        except OSError as e:
            peer = errno.errorcode.get(e.errno or 0, str(e.errno))
        state = ""
        if kind == socket.SOCK_STREAM:
            state = " " + TCP_STATES.get(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0], "?")
        lines.append("%s %s%s port=%s peer=%s error=%s" % (me, "TCP" if kind == socket.SOCK_STREAM else "UDP",
                     state, port(kind, sock.getsockname()[1]), peer, errno.errorcode.get(error, error)))
    # sockets no descriptor holds: from the namespace's own table
    with open("/proc/net/tcp") as f:
        for row in f.read().splitlines()[1:]:
            cols = row.split()
            if cols[9] != "0":
                continue
            local, remote = (int(a.split(":")[1], 16) for a in cols[1:3])
            lines.append("no descriptor: TCP %s port=%s peer=%s" % (
                TCP_STATES.get(int(cols[3], 16), cols[3]), port(socket.SOCK_STREAM, local),
                port(socket.SOCK_STREAM, remote)))
    lines.sort(key=lambda line: (not line.startswith("h"), line))
    for handle, sock in sorted(handles.items()):
        me = "h%d" % handle
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            while True:
                try:
                    child, (_, p) = sock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                lines.append("%s accepts a connection from %s" % (me, port(socket.SOCK_STREAM, p)))
                child.close()
            continue
        while True:
            try:
                data, source = sock.recvfrom(4096, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                lines.append("%s read error %s" % (me, errno.errorcode.get(e.errno or 0, e.errno)))
                break
            if not data:
                lines.append("%s end of stream" % me)
                break
            chunks = [data[i:i + PAYLOAD.size] for i in range(0, len(data), PAYLOAD.size)]
            for chunk in chunks:
                sender, serial = PAYLOAD.unpack(chunk) if len(chunk) == PAYLOAD.size else (-1, -1)
                origin = port(sock.type, source[1]) if source else "its peer"
                lines.append("%s reads payload %d of h%d (from %s)" % (me, serial, sender, origin))
    for handle, sock in sorted(handles.items()):  # last, as it changes queues: may it still send?
        try:
            sock.send(PAYLOAD.pack(0, 0), FLAGS)
            lines.append("h%d send: ok" % handle)
        except OSError as e:
            lines.append("h%d send: %s" % (handle, errno.errorcode.get(e.errno or 0, str(e.errno))))
    time.sleep(0.05)
    for handle, sock in sorted(handles.items()):  # and does what was sent arrive?
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            continue
        try:
            data = sock.recv(4096, socket.MSG_DONTWAIT)
            got = "%d bytes" % len(data) if data else "end of stream"
        except OSError as e:
            got = errno.errorcode.get(e.errno or 0, str(e.errno))
        lines.append("h%d then reads: %s" % (handle, got))
    return lines
