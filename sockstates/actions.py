"""The syscalls the model knows, as rules with preconditions.

Each rule looks at a state and yields, for every argument choice that is
*meaningful*, the syscall line and the state it leads to.  A choice is left out
(a "cut branch") only when it cannot reach a state that another choice does not
reach in as few steps; docs/user/sockstates.rst, "The model", lists every cut with its
reason.  In short:

* a call that fails and changes nothing (EINVAL, EADDRINUSE, ECONNREFUSED on
  connect, EPIPE, EPERM, EISCONN, ENOTCONN, EPROTOTYPE, ENOENT) reaches no new
  state; the failing calls that *do* change the socket are rules of their own
  (a datagram send to a closed peer, a send that collects a pending error);
* a call that succeeds but changes nothing (listen() again, connect() to the
  current peer, shutdown() of directions already shut) likewise;
* sendto() a datagram socket's own peer by name does what send() does;
* any unused name string is as good as any other: bind() takes the next fresh
  label or one that some live socket still carries (reuse).

Bounds, which do cut states on purpose, are in `Bounds`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sockstates.model import CONNECTION_TYPES, DEAD, RD, WR, Kernel, Msg, Name, Sock, State
from sockstates.syscall import Syscall

ALL_TYPES = ("S", "D", "P")
ALL_NAMES = ("abstract", "path")
SHUT_BITS = {"RD": RD, "WR": WR, "RDWR": RD | WR}


class BoundsError(ValueError):
    """Bounds that describe no sensible space."""


@dataclass(frozen=True)
class Bounds:
    max_sockets: int = 3  # live sockets: with a descriptor, pending, or in flight
    types: tuple[str, ...] = ALL_TYPES
    names: tuple[str, ...] = ("abstract",)
    max_queue: int = 1  # messages per receive queue
    max_inflight: int = 1  # descriptors in flight (inside queues) at once; 0: no SCM_RIGHTS
    # shutdown() of sockets without a connection (datagram, unconnected,
    # listening) only sets their own flags; left out unless asked for, as it
    # multiplies the space by four per socket
    shutdown_any: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.max_sockets <= 8:
            raise BoundsError(f"max sockets must be 1..8, got {self.max_sockets}")
        if not 0 <= self.max_inflight <= 8:
            raise BoundsError(f"max in-flight must be 0..8, got {self.max_inflight}")
        if not 0 <= self.max_queue <= 8:
            raise BoundsError(f"max queue must be 0..8, got {self.max_queue}")
        if not self.types or any(t not in ALL_TYPES for t in self.types):
            raise BoundsError(f"types must be among {ALL_TYPES}, got {self.types}")
        if any(n not in ALL_NAMES for n in self.names):
            raise BoundsError(f"names must be among {ALL_NAMES}, got {self.names}")


Step = tuple[Syscall, State]


@dataclass(frozen=True)
class Rule:
    name: str
    steps: Callable[[State, Bounds], Iterator[Step]]


# -- helpers ---------------------------------------------------------------------


def _label(name: Name) -> str:
    return f"{name.kind}{name.string}"


def _known_strings(k: Kernel) -> set[tuple[str, int]]:
    out = {(s.name.kind, s.name.string) for s in k.socks.values() if s.name is not None}
    out.update(("/", p) for p in k.files)
    return out


def _finish(k: Kernel) -> State | None:
    """The state after a call, or None if it leaves garbage (out of scope)."""
    return None if k.garbage() else k.freeze()


def _may_send(k: Kernel, sender: int, target: int) -> bool:
    """unix_may_send(): a datagram socket connected elsewhere accepts nothing from us."""
    peer = k.socks[target].peer
    return peer is None or peer == sender


# -- rules ---------------------------------------------------------------------------


def socket_steps(st: State, b: Bounds) -> Iterator[Step]:
    if st.alive() + 1 > b.max_sockets:
        return
    for t in b.types:
        k = Kernel(st)
        fd = k.new_fd()
        k.new_sock(Sock(t, fd=fd))
        yield Syscall("socket", type=t, result=(fd,)), k.freeze()


def socketpair_steps(st: State, b: Bounds) -> Iterator[Step]:
    if st.alive() + 2 > b.max_sockets:
        return
    for t in b.types:
        k = Kernel(st)
        fa, fb = k.new_fd(), k.new_fd()
        a = k.new_sock(Sock(t, fd=fa, established=True))
        c = k.new_sock(Sock(t, fd=fb, established=True))
        k.set(a, peer=c)
        k.set(c, peer=a)
        yield Syscall("socketpair", type=t, result=(fa, fb)), k.freeze()


def bind_steps(st: State, b: Bounds) -> Iterator[Step]:
    base = Kernel(st)
    known = _known_strings(base)
    for sid, s in st.socks.items():
        if s.fd is None or s.name is not None:
            continue
        choices: list[tuple[str, int | None]] = []
        if "abstract" in b.names:
            choices.append(("@", None))
            choices += [("@", n) for kind, n in sorted(known)
                        if kind == "@" and not base.abstract_held(n, s.type)]
        if "path" in b.names:
            # files outlive their sockets; bound them as sockets are bounded
            if len(st.files) < b.max_sockets:
                choices.append(("/", None))
            choices += [("/", n) for kind, n in sorted(known) if kind == "/" and n not in st.files]
        for kind, string in choices:
            k = Kernel(st)
            if string is None:
                string = k.new_label()
            name = Name(kind, string)
            if kind == "/":
                name = Name(kind, string, k.new_file())
                k.files[string] = name.file
            k.set(sid, name=name, holder=True)
            yield Syscall("bind", fd=s.fd, name=_label(name)), k.freeze()


def listen_steps(st: State, b: Bounds) -> Iterator[Step]:
    for sid, s in st.socks.items():
        if (s.fd is not None and s.type in CONNECTION_TYPES and s.name is not None
                and s.peer is None and not s.listening):
            k = Kernel(st)
            k.set(sid, listening=True)
            yield Syscall("listen", fd=s.fd), k.freeze()


def connect_steps(st: State, b: Bounds) -> Iterator[Step]:
    base = Kernel(st)
    strings = sorted(_known_strings(base))
    for sid, s in st.socks.items():
        if s.fd is None or s.listening:
            continue
        for kind, string in strings:
            target = base.resolve(kind, string, s.type)
            if target is None:
                continue
            label = f"{kind}{string}"
            if s.type in CONNECTION_TYPES:
                step = _connect_stream(st, b, sid, target)
            else:
                step = _connect_dgram(st, sid, target)
            if step is not None:
                yield Syscall("connect", fd=s.fd, name=label), step


def _connect_stream(st: State, b: Bounds, sid: int, target: int) -> State | None:
    s, t = st.socks[sid], st.socks[target]
    if s.peer is not None or not t.listening or t.shut & RD or st.alive() + 1 > b.max_sockets:
        return None
    k = Kernel(st)
    embryo = k.new_sock(Sock(s.type, name=t.name, peer=sid))
    k.set(target, icons=(*t.icons, embryo))
    k.set(sid, peer=embryo)
    return k.freeze()


def _connect_dgram(st: State, sid: int, target: int) -> State | None:
    s = st.socks[sid]
    k = Kernel(st)
    if s.peer == target or not _may_send(k, sid, target):
        return None
    old = s.peer
    k.set(sid, peer=target, established=True)
    k.set(target, established=True)
    if old is not None:
        # unix_dgram_disconnected(): the old link is broken, our queue is lost,
        # and an old peer that was connected back to us learns it by an error
        if k.socks[sid].queue:
            if old != DEAD and k.socks[old].peer == sid:
                k.set(old, error=True)
            k.drop_queue(sid)
        if old != DEAD and old in k.socks and k.socks[old].peer is None:
            k.set(old, established=False)
    return _finish(k)


def accept_steps(st: State, b: Bounds) -> Iterator[Step]:
    for sid, s in st.socks.items():
        if s.fd is not None and s.listening and s.icons:
            k = Kernel(st)
            embryo = s.icons[0]
            fd = k.new_fd()
            k.set(sid, icons=s.icons[1:])
            k.set(embryo, fd=fd)
            yield Syscall("accept", fd=s.fd, result=(fd,)), k.freeze()


def _passengers(st: State, b: Bounds) -> list[tuple[int | None, int | None]]:
    """(socket id, handle) of what may ride along a message: nothing, or any
    socket that has a descriptor."""
    out: list[tuple[int | None, int | None]] = [(None, None)]
    inflight = sum(m.carried is not None for s in st.socks.values() for m in s.queue)
    if inflight < b.max_inflight:
        carriers: list[tuple[int, int]] = [(k, s.fd) for k, s in st.socks.items() if s.fd is not None]
        carriers.sort(key=lambda x: x[1])  # by handle
        out += carriers
    return out


def _deliver(st: State, b: Bounds, sender: int, target: int, carried: int | None) -> State | None:
    t = st.socks[target]
    if len(t.queue) >= b.max_queue:
        return None
    k = Kernel(st)
    k.set(target, queue=(*t.queue, Msg(sender, carried)))
    return k.freeze()


def send_steps(st: State, b: Bounds) -> Iterator[Step]:
    for sid, s in st.socks.items():
        if s.fd is None or s.peer is None:
            continue
        if s.type == "D" and s.error:
            # sock_alloc_send_pskb() collects the pending error first: the call
            # fails and only clears it
            k = Kernel(st)
            k.set(sid, error=False)
            yield Syscall("send", fd=s.fd, error="ECONNRESET"), k.freeze()
            continue
        if s.type == "D" and s.peer == DEAD:
            # the peer is gone: the kernel disconnects us and drops our queue
            k = Kernel(st)
            k.set(sid, peer=None, established=False)
            k.drop_queue(sid)
            state = _finish(k)
            if state is not None:
                yield Syscall("send", fd=s.fd, error="ECONNREFUSED"), state
            continue
        if s.peer == DEAD or s.shut & WR:
            continue  # EPIPE
        p = st.socks[s.peer]
        if p.shut & RD:
            continue  # EPIPE
        if s.type == "D" and not _may_send(Kernel(st), sid, s.peer):
            continue  # EPERM
        for carried, handle in _passengers(st, b):
            state = _deliver(st, b, sid, s.peer, carried)
            if state is not None:
                yield Syscall("send", fd=s.fd, passes=handle), state


def sendto_steps(st: State, b: Bounds) -> Iterator[Step]:
    base = Kernel(st)
    strings = sorted(_known_strings(base))
    for sid, s in st.socks.items():
        if s.fd is None or s.type != "D" or s.error or s.shut & WR:
            continue  # with a pending error send() covers it; EPIPE when shut
        for kind, string in strings:
            target = base.resolve(kind, string, "D")
            if target is None or target == s.peer:
                continue
            t = st.socks[target]
            if t.shut & RD or not _may_send(base, sid, target):
                continue
            for carried, handle in _passengers(st, b):
                state = _deliver(st, b, sid, target, carried)
                if state is not None:
                    yield Syscall("sendto", fd=s.fd, name=f"{kind}{string}", passes=handle), state


def shutdown_steps(st: State, b: Bounds) -> Iterator[Step]:
    for sid, s in st.socks.items():
        if s.fd is None or not (b.shutdown_any or (s.type in CONNECTION_TYPES and s.peer is not None)):
            continue
        live_peer = s.peer if s.type in CONNECTION_TYPES and s.peer not in (None, DEAD) else None
        for how, bits in SHUT_BITS.items():
            mirrored = (RD if bits & WR else 0) | (WR if bits & RD else 0)
            changes_self = s.shut | bits != s.shut
            changes_peer = live_peer is not None and st.socks[live_peer].shut | mirrored != st.socks[live_peer].shut
            if not (changes_self or changes_peer):
                continue
            k = Kernel(st)
            k.set(sid, shut=s.shut | bits)
            if live_peer is not None:
                k.set(live_peer, shut=k.socks[live_peer].shut | mirrored)
            yield Syscall("shutdown", fd=s.fd, how=how), k.freeze()


def close_steps(st: State, b: Bounds) -> Iterator[Step]:
    for sid, s in st.socks.items():
        if s.fd is None:
            continue
        k = Kernel(st)
        k.set(sid, fd=None)
        k.release_unreferenced([sid])
        state = _finish(k)
        if state is not None:
            yield Syscall("close", fd=s.fd), state


def unlink_steps(st: State, b: Bounds) -> Iterator[Step]:
    for string in sorted(st.files):
        k = Kernel(st)
        del k.files[string]
        yield Syscall("unlink", name=f"/{string}"), k.freeze()


RULES: tuple[Rule, ...] = (
    Rule("socket", socket_steps),
    Rule("socketpair", socketpair_steps),
    Rule("bind", bind_steps),
    Rule("listen", listen_steps),
    Rule("connect", connect_steps),
    Rule("accept", accept_steps),
    Rule("send", send_steps),
    Rule("sendto", sendto_steps),
    Rule("shutdown", shutdown_steps),
    Rule("close", close_steps),
    Rule("unlink", unlink_steps),
)


def successors(st: State, b: Bounds) -> Iterator[Step]:
    """Every meaningful syscall from a state, in a fixed order."""
    for rule in RULES:
        yield from rule.steps(st, b)
