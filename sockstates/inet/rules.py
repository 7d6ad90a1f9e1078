"""The TCP and UDP syscalls the model knows, as rules with preconditions (data: `RULES`).

Each rule yields, for every meaningful argument choice, the syscall line and
the settled state it leads to. Cut branches, each reaching no state another
choice does not reach as soon (docs/user/sockstates.rst, "sockstates over TCP and UDP (loopback)"):

* calls that fail and change nothing (EADDRINUSE, EISCONN, ENOTCONN, EINVAL,
  EALREADY, EPIPE) and calls that change nothing (listen() again, shutdown()
  of directions already shut, connect() to the current peer);
* every port label nobody holds is alike: connect() and sendto() a port
  without a listener / socket take one fresh label;
* a TCP socket connects once: a refused or reset one is not connected again;
* SO_LINGER 0 on a socket with unread data, a closed socket or a listener
  does what close() does; sendto() a UDP socket's own peer does what send() does.

Left out on purpose (bounds of scope, not equivalences): shutdown() of
sockets without a connection; a reset reaching a connection still waiting in
a listener's queue (SO_LINGER 0 of its client); sendto() to a UDP socket that
drops the datagram (connected elsewhere: nothing changes but an ICMP the
sender ignores); IPv6, other addresses than 127.0.0.1, socket options.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sockstates.inet.model import CONNECTED, DEAD, EPHEMERAL, RD, RESET_ERROR, WR, Kernel, Sock, State
from sockstates.syscall import Syscall

ALL_TYPES = ("T", "U")
SHUT_BITS = {"RD": RD, "WR": WR, "RDWR": RD | WR}


class BoundsError(ValueError):
    """Bounds that describe no sensible space."""


@dataclass(frozen=True)
class Bounds:
    max_sockets: int = 4  # every socket of the namespace: with a descriptor, pending, or orphaned
    types: tuple[str, ...] = ALL_TYPES
    max_queue: int = 1  # sends waiting per receiving socket

    def __post_init__(self) -> None:
        if not 1 <= self.max_sockets <= 8:
            raise BoundsError(f"max sockets must be 1..8, got {self.max_sockets}")
        if not 0 <= self.max_queue <= 8:
            raise BoundsError(f"max queue must be 0..8, got {self.max_queue}")
        if not self.types or any(t not in ALL_TYPES for t in self.types):
            raise BoundsError(f"inet types must be among {ALL_TYPES}, got {self.types}")


Step = tuple[Syscall, State]


@dataclass(frozen=True)
class Rule:
    name: str
    steps: Callable[[State, Bounds], Iterator[Step]]


def _within(k: Kernel, b: Bounds) -> State | None:
    return k.freeze() if len(k.socks) <= b.max_sockets else None


def _port_after_autobind(s: Sock) -> int | str:
    return s.port if s.port is not None else EPHEMERAL


def _fds(st: State, proto: str) -> Iterator[tuple[int, Sock]]:
    for sid, s in sorted(st.socks.items()):
        if s.fd is not None and s.proto == proto:
            yield sid, s


def _fresh_tcp(s: Sock) -> bool:
    """A TCP socket never connected, listening or shut: the only kind connect() or listen() changes."""
    return s.state == "CL" and not s.tried and not s.shut and not s.error


# -- both ---------------------------------------------------------------------------


def socket_steps(st: State, b: Bounds) -> Iterator[Step]:
    for t in b.types:
        k = Kernel(st)
        fd = k.new_fd()
        k.new_sock(Sock(t, fd=fd, state="CL" if t == "T" else ""))
        if (state := _within(k, b)) is not None:
            yield Syscall("socket", type=t, result=(fd,)), state


def bind_steps(st: State, b: Bounds) -> Iterator[Step]:
    for sid, s in sorted(st.socks.items()):
        if s.fd is None or s.port is not None or (s.proto == "T" and not _fresh_tcp(s)):
            continue
        k = Kernel(st)
        label = k.new_label()
        k.set(sid, port=label)
        yield Syscall("bind", fd=s.fd, name=f":{label}"), k.freeze()


def close_steps(st: State, b: Bounds) -> Iterator[Step]:
    for sid, s in sorted(st.socks.items()):
        if s.fd is None:
            continue
        k = Kernel(st)
        if s.proto == "U" or s.state == "CL":
            k.drop(sid)
        elif s.state == "LI":
            for child in s.icons:  # inet_csk_listen_stop(): each waiting connection is reset
                k.reset_peer_of(child)
                del k.socks[child]
            k.drop(sid)
        elif s.queue:  # unread data: tcp_close() sends RST, not FIN
            k.reset_peer_of(sid)
            k.drop(sid)
        else:
            _close_with_fin(k, sid, s)
        if (state := _within(k, b)) is not None:
            yield Syscall("close", fd=s.fd), state


def _close_with_fin(k: Kernel, sid: int, s: Sock) -> None:
    # an orphan in FIN_WAIT2 is a timewait socket (tcp_time_wait(sk, TCP_FIN_WAIT2)): no shutdown bits to show
    if s.state == "ES":  # FIN, acknowledged at once: an orphan in FIN_WAIT2 until the peer closes
        k.set(sid, fd=None, state="F2", shut=0)
        k.fin_to(s.peer)
    elif s.state == "CW":  # LAST_ACK, acknowledged at once: gone
        k.fin_to(s.peer)
        k.drop(sid)
    else:  # F2 after shutdown(WR): nothing to send, the socket is orphaned
        k.set(sid, fd=None, shut=0)


# -- TCP ----------------------------------------------------------------------------


def listen_steps(st: State, b: Bounds) -> Iterator[Step]:
    for sid, s in _fds(st, "T"):
        if _fresh_tcp(s):
            k = Kernel(st)
            # an unbound socket gets an ephemeral port (inet_autobind()); no label names it, so nothing connects
            k.set(sid, state="LI", port=_port_after_autobind(s))
            yield Syscall("listen", fd=s.fd), k.freeze()


def tcp_connect_steps(st: State, b: Bounds) -> Iterator[Step]:
    for sid, s in _fds(st, "T"):
        if not _fresh_tcp(s):
            continue
        for lid, listener in sorted(st.socks.items()):
            if listener.proto == "T" and listener.state == "LI" and isinstance(listener.port, int):
                k = Kernel(st)
                child = k.new_sock(Sock("T", port=listener.port, state="ES", peer=sid))
                k.set(lid, icons=(*listener.icons, child))
                k.set(sid, state="ES", port=_port_after_autobind(s), peer=child, tried=True)
                if (state := _within(k, b)) is not None:
                    yield Syscall("connect", fd=s.fd, name=f":{listener.port}"), state
        # a port no listener holds answers RST: refused, closed, the error pending
        k = Kernel(st)
        label = k.new_label()
        k.set(sid, port=_port_after_autobind(s), tried=True, state="CL", shut=RD | WR, error="f")
        yield Syscall("connect", fd=s.fd, name=f":{label}"), k.freeze()


def accept_steps(st: State, b: Bounds) -> Iterator[Step]:
    for sid, s in _fds(st, "T"):
        if s.state == "LI" and s.icons:
            k = Kernel(st)
            fd = k.new_fd()
            k.set(s.icons[0], fd=fd)
            k.set(sid, icons=s.icons[1:])
            yield Syscall("accept", fd=s.fd, result=(fd,)), k.freeze()


def tcp_send_steps(st: State, b: Bounds) -> Iterator[Step]:
    for sid, s in _fds(st, "T"):
        if s.state not in ("ES", "CW") or s.shut & WR or not isinstance(s.peer, int):
            continue
        peer = st.socks[s.peer]
        k = Kernel(st)
        if peer.fd is None and peer.state == "F2":
            # data to a closed end: the orphan answers RST and is gone
            k.tcp_done(sid, RESET_ERROR[s.state])
            del k.socks[s.peer]
        elif len(peer.queue) < b.max_queue:
            k.set(s.peer, queue=(*peer.queue, sid))
        else:
            continue
        yield Syscall("send", fd=s.fd), k.freeze()


def shutdown_steps(st: State, b: Bounds) -> Iterator[Step]:
    for sid, s in _fds(st, "T"):
        if s.state not in CONNECTED:
            continue
        for how, bits in SHUT_BITS.items():
            if not bits & ~s.shut:
                continue
            k = Kernel(st)
            k.set(sid, shut=s.shut | bits)
            if bits & ~s.shut & WR:
                if s.state == "ES":
                    k.set(sid, state="F2")
                    k.fin_to(s.peer)
                else:  # close-wait: LAST_ACK, acknowledged at once: done
                    k.fin_to(s.peer)
                    k.tcp_done(sid)
            if (state := _within(k, b)) is not None:
                yield Syscall("shutdown", fd=s.fd, how=how), state


def abort_steps(st: State, b: Bounds) -> Iterator[Step]:
    """SO_LINGER {1, 0} then close(): RST instead of FIN (tcp_disconnect())."""
    for sid, s in _fds(st, "T"):
        if s.state not in CONNECTED or s.queue or not isinstance(s.peer, int):
            continue
        peer = st.socks[s.peer]
        if peer.fd is None and peer.state != "F2":
            continue  # the peer still waits in a listener's queue: out of scope
        k = Kernel(st)
        k.reset_peer_of(sid)
        k.drop(sid)
        yield Syscall("abort", fd=s.fd), k.freeze()


# -- UDP ----------------------------------------------------------------------------


def _accepts(receiver: Sock, sender: int) -> bool:
    """A connected UDP socket only receives from the port it is connected to."""
    return receiver.peer is None or receiver.peer == sender


def udp_connect_steps(st: State, b: Bounds) -> Iterator[Step]:
    for sid, s in _fds(st, "U"):
        if s.error:
            continue
        for hid, holder in sorted(st.socks.items()):
            if holder.proto == "U" and isinstance(holder.port, int) and s.peer != hid:
                k = Kernel(st)
                k.set(sid, peer=hid, port=_port_after_autobind(s))
                yield Syscall("connect", fd=s.fd, name=f":{holder.port}"), k.freeze()
        if s.peer != DEAD:  # connected to a port nobody holds (any such port is alike)
            k = Kernel(st)
            label = k.new_label()
            k.set(sid, peer=DEAD, port=_port_after_autobind(s))
            yield Syscall("connect", fd=s.fd, name=f":{label}"), k.freeze()


def disconnect_steps(st: State, b: Bounds) -> Iterator[Step]:
    """connect(AF_UNSPEC): unconnected again; a port the kernel chose is released (udp_disconnect())."""
    for sid, s in _fds(st, "U"):
        if s.peer is None or s.error or (s.shut and s.port == EPHEMERAL):
            # (a shut socket whose port is released is in no table inet_diag lists, and poll()
            # shows only RCV_SHUTDOWN: the kernel's view could not be checked; left out)
            continue
        k = Kernel(st)
        k.set(sid, peer=None)
        if s.port == EPHEMERAL:
            k.set(sid, port=None)
            k.forget_sender(sid)
        yield Syscall("disconnect", fd=s.fd), k.freeze()


def udp_shutdown_steps(st: State, b: Bounds) -> Iterator[Step]:
    """A connected UDP socket only sets its own bits (inet_shutdown()); nothing is sent."""
    for sid, s in _fds(st, "U"):
        if s.peer is None:
            continue
        for how, bits in SHUT_BITS.items():
            if bits & ~s.shut:
                k = Kernel(st)
                k.set(sid, shut=s.shut | bits)
                yield Syscall("shutdown", fd=s.fd, how=how), k.freeze()


def udp_send_steps(st: State, b: Bounds) -> Iterator[Step]:
    for sid, s in _fds(st, "U"):
        if s.peer is None or s.shut & WR:  # shut for writing: EPIPE, nothing changes
            continue
        k = Kernel(st)
        if s.error:  # the send only collects the ICMP error
            k.set(sid, error="")
            yield Syscall("send", fd=s.fd, error="ECONNREFUSED"), k.freeze()
            continue
        peer_id = s.peer if isinstance(s.peer, int) else None
        peer = st.socks.get(peer_id) if peer_id is not None else None
        if peer_id is None or peer is None or not _accepts(peer, sid):
            k.set(sid, error="f")  # no socket takes it: ICMP port unreachable, reported to connected senders
        elif len(peer.queue) < b.max_queue:
            k.set(peer_id, queue=(*peer.queue, sid))
        else:
            continue
        yield Syscall("send", fd=s.fd), k.freeze()


def sendto_steps(st: State, b: Bounds) -> Iterator[Step]:
    for sid, s in _fds(st, "U"):
        if s.error or s.shut & WR:
            continue
        for hid, holder in sorted(st.socks.items()):
            if (holder.proto != "U" or not isinstance(holder.port, int) or hid == s.peer
                    or not _accepts(holder, sid) or len(holder.queue) >= b.max_queue):
                continue
            k = Kernel(st)
            k.set(sid, port=_port_after_autobind(s))
            k.set(hid, queue=(*k.socks[hid].queue, sid))
            yield Syscall("sendto", fd=s.fd, name=f":{holder.port}"), k.freeze()
        if s.port is None:  # to a port nobody holds: only the autobind remains
            k = Kernel(st)
            label = k.new_label()
            k.set(sid, port=EPHEMERAL)
            yield Syscall("sendto", fd=s.fd, name=f":{label}"), k.freeze()


RULES: tuple[Rule, ...] = (
    Rule("socket", socket_steps),
    Rule("bind", bind_steps),
    Rule("listen", listen_steps),
    Rule("connect (TCP)", tcp_connect_steps),
    Rule("accept", accept_steps),
    Rule("send (TCP)", tcp_send_steps),
    Rule("shutdown", shutdown_steps),
    Rule("close", close_steps),
    Rule("abort (SO_LINGER 0, close)", abort_steps),
    Rule("connect (UDP)", udp_connect_steps),
    Rule("disconnect (connect AF_UNSPEC)", disconnect_steps),
    Rule("shutdown (UDP)", udp_shutdown_steps),
    Rule("send (UDP)", udp_send_steps),
    Rule("sendto", sendto_steps),
)


def successors(st: State, b: Bounds) -> Iterator[Step]:
    for rule in RULES:
        yield from rule.steps(st, b)
