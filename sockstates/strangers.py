"""Who can reach a socket by its name: a stranger's sendto() and connect() to every name a sequence bound.

A socket's description says what it holds, not who may reach it. Some C/R
losses show only there: a datagram socket bound to a name whose connected
peer is gone refuses a stranger's datagram (EPERM: it is still connected),
and accepts it once it comes back unconnected. So after the probe, the twin
(without C/R) and the restored target each try, from fresh sockets of every
unix type, ``sendto()`` (datagram) and a non-blocking ``connect()`` (stream,
seqpacket) to each name the sequence bound, and the driver compares the
answers. It runs after the probe: an accepted datagram or connection changes
the state, and nothing reads it afterwards.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Sequence

from sockstates.syscall import Syscall

KINDS = (("stream", socket.SOCK_STREAM), ("dgram", socket.SOCK_DGRAM), ("seqpacket", socket.SOCK_SEQPACKET))
PROBE_BYTES = b"stranger"


def bound_names(syscalls: Sequence[Syscall]) -> list[str]:
    """The labels the sequence bound (abstract and path), in first-bound order."""
    out: list[str] = []
    for call in syscalls:
        if call.op == "bind" and call.name and call.name[0] in "@/" and call.name not in out:
            out.append(call.name)
    return out


def _answer(kind: int, address: bytes | str) -> str:
    with socket.socket(socket.AF_UNIX, kind) as s:
        s.setblocking(False)
        try:
            if kind == socket.SOCK_DGRAM:
                s.sendto(PROBE_BYTES, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL, address)
            else:
                s.connect(address)
        except OSError as e:
            return errno.errorcode.get(e.errno or 0, str(e.errno))
    return "ok"


def reach(syscalls: Sequence[Syscall], address: Callable[[str], bytes | str]) -> list[str]:
    """One line per name and stranger type: ``@1 dgram sendto: EPERM``; ``address`` maps a label to the real name."""
    lines = []
    for label in bound_names(syscalls):
        for word, kind in KINDS:
            verb = "sendto" if kind == socket.SOCK_DGRAM else "connect"
            lines.append(f"{label} {word} {verb}: {_answer(kind, address(label))}")
    return lines
