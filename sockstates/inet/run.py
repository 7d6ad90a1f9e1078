"""Perform a TCP/UDP sequence in a network namespace of its own, let loopback settle, ask the kernel.

Called in the fresh child `sockstates.run` forks for each sequence. The child
enters a new network namespace with only ``lo`` up (ports of different runs
never clash; nothing can leave the machine), performs each call on 127.0.0.1,
and after each call waits until the kernel's view is *settled* (`settle`),
then the probe (`probe`) describes the state. Reads only `Syscall` records:
it does not know the model.
"""

from __future__ import annotations

import ctypes
import errno
import select
import socket
import struct
import time
from collections.abc import Sequence

from sockstates.inet import diag, probe
from sockstates.inet.netns import enter_loopback_netns
from sockstates.syscall import Syscall

HOST = "127.0.0.1"
PORT_BASE = 10000  # port label N is port PORT_BASE + N: below the ephemeral range (32768-60999)
KINDS = {"T": socket.SOCK_STREAM, "U": socket.SOCK_DGRAM}
HOWS = {"RD": socket.SHUT_RD, "WR": socket.SHUT_WR, "RDWR": socket.SHUT_RDWR}
FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
# states loopback leaves within a moment; a view holding one is not settled
TRANSIENT = {2, 3, 4, 9, 11, 12}  # SYN_SENT, SYN_RECV, FIN_WAIT1, LAST_ACK, CLOSING, NEW_SYN_RECV
TIMER_RETRANSMIT = 1
SETTLE_QUIET = 0.002  # the view must stay the same this long, over SETTLE_READS reads
SETTLE_READS = 2
SETTLE_TIMEOUT = 3.0


class UnsettledError(RuntimeError):
    """Loopback did not settle: a sequence whose state keeps moving is outside the model."""


def is_inet(syscalls: Sequence[Syscall]) -> bool:
    return any(c.type in KINDS or (c.name or "").startswith(":") for c in syscalls)


def address(label: str) -> tuple[str, int]:
    return HOST, PORT_BASE + int(label[1:])


class Executor:
    def __init__(self) -> None:
        self.handles: dict[int, socket.socket] = {}
        self.serial = 0
        self._libc = ctypes.CDLL(None, use_errno=True)

    def perform(self, call: Syscall) -> None:
        op = call.op
        if op == "socket":
            s = socket.socket(socket.AF_INET, KINDS[call.kind])
            s.setblocking(False)
            self.handles[call.result[0]] = s
        elif op == "bind":
            self.handles[call.handle].bind(address(call.label))
        elif op == "listen":
            self.handles[call.handle].listen(64)
        elif op == "connect":
            code = self.handles[call.handle].connect_ex(address(call.label))
            # a non-blocking TCP connect goes on in the kernel: how it ends is the settled state's business
            if code not in (0, errno.EINPROGRESS):
                raise OSError(code, errno.errorcode.get(code, str(code)))
        elif op == "accept":
            child, _ = self.handles[call.handle].accept()
            child.setblocking(False)
            self.handles[call.result[0]] = child
        elif op in ("send", "sendto"):
            self.serial += 1
            data = probe.PAYLOAD.pack(call.handle, self.serial)
            if op == "sendto":
                self.handles[call.handle].sendto(data, FLAGS, address(call.label))
            else:
                self.handles[call.handle].send(data, FLAGS)
        elif op == "shutdown":
            self.handles[call.handle].shutdown(HOWS[call.shut])
        elif op == "close":
            self.handles.pop(call.handle).close()
        elif op == "abort":
            self.handles[call.handle].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.handles.pop(call.handle).close()
        elif op == "disconnect":
            unspec = struct.pack("=H14x", socket.AF_UNSPEC)
            if self._libc.connect(self.handles[call.handle].fileno(), unspec, len(unspec)) != 0:
                code = ctypes.get_errno()
                raise OSError(code, errno.errorcode.get(code, str(code)))
        else:
            raise ValueError(f"not an inet syscall: {call}")


def _view(handles: dict[int, socket.socket]) -> tuple:
    poller = select.poll()
    for s in handles.values():
        poller.register(s, select.POLLIN | select.POLLOUT | select.POLLERR | select.POLLHUP | select.POLLRDHUP)
    return tuple(d.key() for d in diag.dump_all()), tuple(sorted(poller.poll(0)))


def _moving(view: tuple) -> bool:
    return any(key[1] in TRANSIENT or (key[0] == "T" and key[7] == TIMER_RETRANSMIT) for key in view[0])


def settle(handles: dict[int, socket.socket], timeout: float = SETTLE_TIMEOUT) -> float:
    """Wait until inet_diag (states, queues, shutdown, timers) and every descriptor's poll() events
    stay the same over SETTLE_READS reads SETTLE_QUIET apart and no socket is in a passing state.
    Returns the seconds it took; UnsettledError after ``timeout``."""
    start = time.monotonic()
    last, same = None, 0
    while True:
        view = _view(handles)
        same = same + 1 if view == last and not _moving(view) else 0
        if same >= SETTLE_READS:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise UnsettledError(f"the kernel's view still changed after {timeout} s: {view}")
        last = view
        time.sleep(SETTLE_QUIET / SETTLE_READS)


def child(syscalls: Sequence[Syscall], strict: bool, hold: tuple[int, int] | None) -> dict:
    """The body of a run's child for an inet sequence: the same report `sockstates.run` makes for unix."""
    import os

    enter_loopback_netns()
    ex = Executor()
    mismatches = []
    for i, call in enumerate(syscalls, 1):
        try:
            ex.perform(call)
            got = None
        except OSError as e:
            got = errno.errorcode.get(e.errno or 0, str(e.errno))
        except KeyError:
            if strict:
                raise
            continue  # a random sequence using a socket it failed to create or closed
        settle(ex.handles)
        if strict and got != call.error:
            want = call.error or "success"
            mismatches.append(f"step {i} {call}: kernel said {got or 'success'}, model expected {want}")
            break
    if hold is not None:
        ready, go = hold
        os.write(ready, b"R")
        os.read(go, 1)
        settle(ex.handles)
    view = probe.probe(ex.handles)
    return {"descriptions": sorted(view.descriptions), "mismatches": mismatches, "garbage": 0, "notes": view.notes}
