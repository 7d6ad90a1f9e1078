"""The model: AF_UNIX sockets of one process, and what the kernel does to them.

A `State` is every socket alive in the process (reachable from a file
descriptor, pending in a listener, or in flight inside a queue), the socket files
on paths, and counters that hand out handles and labels.  States are immutable;
`Kernel` is a working copy on which one syscall's effects are applied, written
after the kernel's own code (net/unix/af_unix.c) and checked against the real
kernel by `--run`.

This module knows nothing about how states are explored or run.
"""

from __future__ import annotations

from typing import NamedTuple

from sockstates import canon

DEAD = canon.DEAD  # peer or sender that is gone
RD, WR = 1, 2  # shutdown bits, as the kernel's RCV_SHUTDOWN and SEND_SHUTDOWN
CONNECTION_TYPES = ("S", "P")  # listen/accept/connected pairs


# A name: kind "@" (abstract) or "/" (path), the label number, and for paths the
# socket file (inode) bound.  A message: sender id (or DEAD) and the id of the
# socket whose fd it carries.  The same tuples `canon` describes.
Name = canon.NameRef
Msg = canon.Msg


class Sock(NamedTuple):
    type: str
    fd: int | None = None
    name: Name | None = None
    holder: bool = False  # bound the name itself (accepted sockets only inherit it)
    listening: bool = False
    peer: int | None = None  # socket id, DEAD or None
    established: bool = False  # datagram sk_state TCP_ESTABLISHED
    icons: tuple[int, ...] = ()  # embryos waiting for accept(), in order
    queue: tuple[Msg, ...] = ()
    shut: int = 0
    error: bool = False  # sk_err = ECONNRESET pending


class State(NamedTuple):
    socks: dict[int, Sock]
    files: dict[int, int]  # path string label -> file id now linked there
    next_id: int = 1
    next_fd: int = 1
    next_label: int = 1
    next_file: int = 1

    def alive(self) -> int:
        return len(self.socks)

    def by_fd(self) -> dict[int, int]:
        return {s.fd: i for i, s in self.socks.items() if s.fd is not None}


EMPTY = State({}, {})


class Kernel:
    """A mutable copy of a state on which one syscall is applied."""

    def __init__(self, st: State) -> None:
        self.socks = dict(st.socks)
        self.files = dict(st.files)
        self.next_id, self.next_fd = st.next_id, st.next_fd
        self.next_label, self.next_file = st.next_label, st.next_file

    def freeze(self) -> State:
        return State(self.socks, self.files, self.next_id, self.next_fd, self.next_label, self.next_file)

    def set(self, sid: int, **changes) -> None:
        self.socks[sid] = self.socks[sid]._replace(**changes)

    def new_sock(self, sock: Sock) -> int:
        sid = self.next_id
        self.next_id += 1
        self.socks[sid] = sock
        return sid

    def new_fd(self) -> int:
        fd = self.next_fd
        self.next_fd += 1
        return fd

    def new_label(self) -> int:
        label = self.next_label
        self.next_label += 1
        return label

    def new_file(self) -> int:
        f = self.next_file
        self.next_file += 1
        return f

    # -- references and release -------------------------------------------------

    def refs(self, sid: int) -> int:
        """Descriptor + in-flight copies + being a pending connection: what keeps a socket alive."""
        n = 1 if self.socks[sid].fd is not None else 0
        for s in self.socks.values():
            n += s.icons.count(sid)
            for m in s.queue:
                n += m.carried == sid
        return n

    def drop_queue(self, sid: int) -> None:
        """Purge a socket's receive queue; sockets that only lived in it are released."""
        carried = [m.carried for m in self.socks[sid].queue if m.carried is not None]
        self.set(sid, queue=())
        self.release_unreferenced(carried)

    def release_unreferenced(self, candidates: list[int]) -> None:
        for c in candidates:
            if c in self.socks and self.refs(c) == 0:
                self.release(c)

    def release(self, sid: int, embryo: bool = False) -> None:
        """unix_release_sock(): the socket goes; its connected peer is told, its
        pending connections and the sockets in flight in its queue follow."""
        s = self.socks.pop(sid)
        if s.peer is not None and s.peer != DEAD and s.peer in self.socks and s.type in CONNECTION_TYPES:
            p = self.socks[s.peer]
            self.set(s.peer, shut=RD | WR, error=p.error or bool(s.queue) or embryo)
        for k, o in list(self.socks.items()):
            changes: dict[str, object] = {}
            if o.peer == sid:
                changes["peer"] = DEAD
            if any(m.sender == sid for m in o.queue):
                changes["queue"] = tuple(Msg(DEAD, m.carried) if m.sender == sid else m for m in o.queue)
            if changes:
                self.set(k, **changes)
        for e in s.icons:
            if e in self.socks:
                self.release(e, embryo=True)
        self.release_unreferenced([m.carried for m in s.queue if m.carried is not None])

    def garbage(self) -> bool:
        """Sockets kept alive only by an unreachable in-flight cycle.  The kernel
        frees those lazily (its GC does not run on close), so such states are
        left out of the space: see docs, "what is left out"."""
        if not any(m.carried is not None for s in self.socks.values() for m in s.queue):
            return False  # without sockets in flight every live socket is reachable
        seen = set()
        todo = [k for k, s in self.socks.items() if s.fd is not None]
        while todo:
            k = todo.pop()
            if k in seen:
                continue
            seen.add(k)
            s = self.socks[k]
            todo.extend(s.icons)
            todo.extend(m.carried for m in s.queue if m.carried is not None)
        return len(seen) != len(self.socks)

    # -- names --------------------------------------------------------------------

    def resolve(self, kind: str, string: int, sock_type: str) -> int | None:
        """The socket a connect()/sendto() to this name reaches, or None."""
        if kind == "@":
            for k, s in self.socks.items():
                name = s.name
                if s.holder and name is not None and s.type == sock_type and name.kind == "@" and name.string == string:
                    return k
            return None
        f = self.files.get(string)
        if f is None:
            return None
        for k, s in self.socks.items():
            if s.holder and s.name is not None and s.name.file == f:
                return k if s.type == sock_type else None
        return None

    def abstract_held(self, string: int, sock_type: str) -> bool:
        return self.resolve("@", string, sock_type) is not None


def snapshot(st: State) -> canon.Snapshot:
    """What of a model state the kernel shows: the neutral form `canon` describes."""
    facts = {}
    files = st.files
    for k, s in st.socks.items():
        name = s.name
        # whether the name reaches this socket depends on the files only for paths
        linked = name is not None and name.kind == "/" and files.get(name.string) == name.file
        key = (s, linked)
        f = _FACTS.get(key)
        if f is None:
            if len(_FACTS) > 1 << 20:
                _FACTS.clear()
            reached = s.holder and name is not None and (name.kind == "@" or (linked and (
                s.type == "D" or s.listening or s.peer is None)))
            f = _FACTS[key] = canon.SockFacts(
                s.type, s.fd is None, name, reached, s.listening,
                s.type == "D" and s.established and s.peer is None,
                bool(s.shut & RD), bool(s.shut & WR), s.error, s.peer, s.icons, s.queue)
        facts[k] = f
    return canon.Snapshot(facts, files)


_FACTS: dict[tuple[Sock, bool], canon.SockFacts] = {}


def describe(st: State) -> str:
    """The canonical description of a state.  The same raw state (same ids,
    labels, everything) recurs often in a search, through actions that commute:
    its description is remembered."""
    key = (tuple(st.socks.items()), tuple(st.files.items()))
    text = _DESCRIPTIONS.get(key)
    if text is None:
        if len(_DESCRIPTIONS) > 1 << 20:
            _DESCRIPTIONS.clear()
        text = _DESCRIPTIONS[key] = canon.describe(snapshot(st), check=False)
    return text


_DESCRIPTIONS: dict[tuple, str] = {}


def invariants(st: State) -> list[str]:
    """What must hold in every state the rules make; the broken ones, worded."""
    broken = []
    pending = [e for s in st.socks.values() for e in s.icons]
    inflight = [m.carried for s in st.socks.values() for m in s.queue if m.carried is not None]
    fds = [s.fd for s in st.socks.values() if s.fd is not None]
    if len(fds) != len(set(fds)):
        broken.append("two sockets share a descriptor")
    if len(pending) != len(set(pending)):
        broken.append("a connection is pending in two places")
    for k, s in st.socks.items():
        if s.fd is None and k not in pending and k not in inflight:
            broken.append(f"socket {k} is alive but nothing holds it")
        if k in pending and (s.fd is not None or s.type not in CONNECTION_TYPES):
            broken.append(f"pending socket {k} has a descriptor or is not a connection type")
        if s.peer not in (None, DEAD) and s.peer not in st.socks:
            broken.append(f"socket {k} points at a peer that is not alive")
        if s.type in CONNECTION_TYPES and s.peer not in (None, DEAD) and st.socks[s.peer].peer != k:
            broken.append(f"stream/seqpacket socket {k} and its peer disagree")
        if s.listening and (s.name is None or s.peer is not None or s.type not in CONNECTION_TYPES):
            broken.append(f"listener {k} is unbound, connected or a datagram socket")
        if s.icons and not s.listening:
            broken.append(f"socket {k} has pending connections but does not listen")
        for m in s.queue:
            if m.sender != DEAD and m.sender not in st.socks:
                broken.append(f"a message in {k}'s queue names a sender that is gone")
    holders = [(s.name.string, s.type) for s in st.socks.values()
               if s.holder and s.name is not None and s.name.kind == "@"]
    if len(holders) != len(set(holders)):
        broken.append("two sockets of one type hold one abstract name")
    return broken
