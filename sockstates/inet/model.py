"""The model of TCP and UDP sockets on loopback: states, and what one settled syscall does to them.

A `State` holds every socket of the network namespace: those with a
descriptor, connections waiting in a listener, and orphans the kernel keeps
after close() (FIN_WAIT2 after our FIN was acknowledged, TIME_WAIT). Loopback
delivers at once, so after each call the model takes the state the kernel
*settles* in (handshakes done, FINs acknowledged, RSTs and ICMP errors
received): SYN_SENT, SYN_RECV, FIN_WAIT1, CLOSING and LAST_ACK never last
and are not states here. TIME_WAIT (60 s) and an orphan's FIN_WAIT2 (60 s)
are states a sequence reaches, not waits.

The effects are written after the kernel (net/ipv4/tcp_input.c tcp_rcv_state_process,
tcp_fin, tcp_reset; tcp.c tcp_close, tcp_shutdown; udp.c), and every one is
checked against the kernel by ``--run``. This module knows nothing of how
states are explored or run.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sockstates.inet import canon
from sockstates.inet.canon import DEAD, EPHEMERAL

RD, WR = 1, 2
# ECONNRESET for a reset in any connected state but close-wait, where the kernel
# reports EPIPE (tcp_reset())
RESET_ERROR = {"ES": "r", "F2": "r", "CW": "p"}
CONNECTED = ("ES", "CW", "F2")


class Sock(NamedTuple):
    proto: str  # T or U
    fd: int | None = None  # handle; None: pending in a listener, or orphaned
    port: int | str | None = None  # port label, EPHEMERAL, or None
    state: str = ""  # TCP: canon.TCP_STATES; UDP: ""
    shut: int = 0
    error: str = ""  # canon.ERRORS key
    peer: int | str | None = None  # socket id or DEAD (UDP: nobody holds the port connected to)
    icons: tuple[int, ...] = ()
    queue: tuple[int | str, ...] = ()  # senders (socket ids, DEAD); TCP: one per send
    tried: bool = False  # TCP: connect() was called once; it is not called again


class State(NamedTuple):
    socks: dict[int, Sock]
    next_id: int = 1
    next_fd: int = 1
    next_label: int = 1

    def alive(self) -> int:
        return len(self.socks)


EMPTY = State({})


class Kernel:
    """A working copy of a state on which one call's effects are applied."""

    def __init__(self, st: State) -> None:
        self.socks = dict(st.socks)
        self.next_id, self.next_fd, self.next_label = st.next_id, st.next_fd, st.next_label

    def new_sock(self, sock: Sock) -> int:
        sid = self.next_id
        self.next_id += 1
        self.socks[sid] = sock
        return sid

    def new_fd(self) -> int:
        self.next_fd += 1
        return self.next_fd - 1

    def new_label(self) -> int:
        self.next_label += 1
        return self.next_label - 1

    def set(self, sid: int, **changes: Any) -> None:
        self.socks[sid] = self.socks[sid]._replace(**changes)

    def freeze(self) -> State:
        return State(self.socks, self.next_id, self.next_fd, self.next_label)

    # -- TCP ---------------------------------------------------------------------

    def tcp_done(self, sid: int, error: str = "") -> None:
        """tcp_done(): closed, both directions shut, the connection forgotten; its queue stays readable."""
        s = self.socks[sid]
        if s.fd is None:
            del self.socks[sid]
            return
        self.set(sid, state="CL", shut=RD | WR, peer=None, error=error or s.error)

    def reset_peer_of(self, sid: int) -> None:
        """``sid`` sends RST: its live peer closes with the error its state gets."""
        peer = self.socks[sid].peer
        if isinstance(peer, int) and peer in self.socks:
            p = self.socks[peer]
            self.tcp_done(peer, RESET_ERROR.get(p.state, "") if p.fd is not None else "")

    def fin_to(self, peer: int | str | None) -> None:
        """The peer of a socket that sent FIN receives it (tcp_fin())."""
        assert isinstance(peer, int), f"FIN to {peer!r}: only a connection's live peer receives one"
        p = self.socks[peer]
        if p.state == "ES":
            self.set(peer, state="CW", shut=p.shut | RD)  # tcp_fin(): RCV_SHUTDOWN
        elif p.state == "F2":
            if p.fd is None:  # an orphan in FIN_WAIT2 goes on in TIME_WAIT
                self.set(peer, state="TW", peer=None)
            else:  # tcp_time_wait(): a TIME_WAIT orphan takes over, the socket itself is done
                self.new_sock(Sock("T", port=p.port, state="TW"))
                self.tcp_done(peer)

    def drop(self, sid: int) -> None:
        """A socket released: UDP sockets connected to its port now reach nobody; its messages stay, from X."""
        s = self.socks.pop(sid)
        if s.proto == "U":
            self.forget_sender(sid)
            for oid, o in self.socks.items():
                if o.proto == "U" and o.peer == sid:
                    self.socks[oid] = o._replace(peer=DEAD)

    def forget_sender(self, sid: int) -> None:
        """Datagrams are known by their source port: once it is released they come from nobody."""
        for oid, o in self.socks.items():
            if sid in o.queue:
                self.socks[oid] = o._replace(queue=tuple(DEAD if m == sid else m for m in o.queue))

    def udp_holder(self, label: int) -> int | None:
        return next((i for i, s in self.socks.items() if s.proto == "U" and s.port == label), None)


def describe(st: State) -> str:
    return canon.describe({sid: canon.Facts(
        proto=s.proto, fdless=s.fd is None, port=s.port, state=s.state, shut=s.shut, error=s.error,
        peer=s.peer, icons=s.icons, queue=s.queue) for sid, s in st.socks.items()})


__all__ = ["CONNECTED", "DEAD", "EMPTY", "EPHEMERAL", "RD", "WR", "Kernel", "Sock", "State", "describe"]
