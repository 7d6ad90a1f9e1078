"""The kernel's view of the sockets of this process, as a description.

Runs at the end of a child that performed a sequence (`run`), in a network
namespace and working directory of the run's, so what sock_diag lists is ours
(but for sockets of earlier runs, which the caller names to be ignored).  What
it asks, in an order that keeps later answers true:

1. SO_ERROR of each socket, before anything reads its queue (reading collects
   the error);
2. the queues, read to the end: each message's payload names the inode of the
   socket that sent it, and SCM_RIGHTS hands us the sockets in flight; pending
   connections are accept()ed; every socket so reached is probed the same way,
   so sockets without a descriptor are seen too;
3. sock_diag (`netlink`): every socket with its type, state, name, socket
   file, peer and shutdown bits (after the accepts, so accepted sockets are
   listed, and the order of pending connections is the one accept() gave);
4. names: which socket an abstract name reaches (bind() of a probe socket fails
   with EADDRINUSE while one holds it), and which file each path now links
   (stat()).

These reads change the sockets, so a probe is the last thing a run does.  When
the kernel does not tell which of several sockets carrying the same abstract
name holds it (possible only after that name was bound again while accepted
sockets still carried it, and both are connected), every possible answer is
returned.
"""

from __future__ import annotations

import array
import errno
import itertools
import os
import socket
import stat
import struct
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from sockstates import canon, netlink

# What every message carries: the inode of the socket that sent it, and a serial.
PAYLOAD = struct.Struct("<QQ")


def passed_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors an SCM_RIGHTS message carried (now open in this process)."""
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return list(fds)


@dataclass
class KernelView:
    descriptions: frozenset[str]
    garbage: tuple[int, ...] = ()  # inodes alive but unreachable from any descriptor
    notes: list[str] = field(default_factory=list)


def _sock_error(sock: socket.socket) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


def _fd_inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


class SocketReader:
    """Collects errors, queue contents and pending connections, following every
    socket that turns up in a queue or a listener."""

    def __init__(self) -> None:
        self.socks: dict[int, socket.socket] = {}
        self.errors: dict[int, int] = {}
        self.queues: dict[int, list[tuple[int, int | None]]] = {}
        self.icons: dict[int, list[int]] = {}
        self.notes: list[str] = []

    def visit(self, sock: socket.socket) -> int:
        ino = _fd_inode(sock)
        if ino in self.socks:
            sock.close()  # a second descriptor of a socket already seen
            return ino
        self.socks[ino] = sock
        sock.setblocking(False)
        self.errors[ino] = _sock_error(sock)
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            self.icons[ino] = []
            while True:
                try:
                    child, _ = sock.accept()
                except BlockingIOError:
                    break
                self.icons[ino].append(self.visit(child))
        else:
            self.queues[ino] = self._drain(ino, sock)
        return ino

    def _drain(self, ino: int, sock: socket.socket) -> list[tuple[int, int | None]]:
        out = []
        fd_size = socket.CMSG_SPACE(array.array("i").itemsize * 4)
        while True:
            try:
                # one payload at a time: a stream read then stops at each
                # message, so a passed descriptor is tied to its own message
                data, anc, _flags, _addr = sock.recvmsg(PAYLOAD.size, fd_size)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.ENOTCONN):
                    break  # a stream or seqpacket socket never connected: no queue
                self.notes.append(f"reading queue of inode {ino}: {errno.errorcode.get(e.errno or 0, e.errno)}")
                break
            if not data:
                break
            carried = None
            for fd in passed_fds(anc):
                carried = self.visit(socket.socket(fileno=fd))
            if len(data) != PAYLOAD.size:
                self.notes.append(f"inode {ino}: a message of {len(data)} bytes, not a probe payload")
                continue
            sender, _serial = PAYLOAD.unpack(data)
            out.append((sender, carried))
        return out


def _held_abstract(name: bytes, sock_type: str) -> bool:
    """Does some socket of this type hold this abstract name?  A probe socket's
    bind() fails with EADDRINUSE exactly then (abstract names are per type)."""
    kind = {"S": socket.SOCK_STREAM, "D": socket.SOCK_DGRAM, "P": socket.SOCK_SEQPACKET}[sock_type]
    with socket.socket(socket.AF_UNIX, kind) as s:
        try:
            s.bind(name)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def socket_files(workdir: str) -> dict[bytes, int]:
    """Path (as bound, relative to the run's directory) -> inode, for socket files."""
    out = {}
    for entry in os.scandir(workdir):
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISSOCK(st.st_mode):
            out[os.fsencode(entry.name)] = st.st_ino
    return out


def probe(descriptors: list[socket.socket], workdir: str, ignore: AbstractSet[int] = frozenset()) -> KernelView:
    """Describe what the kernel holds for this process.  `descriptors` are the
    process's open sockets; `workdir` is where path names were bound; `ignore`
    are inodes of sockets in the namespace that are not this run's."""
    reader = SocketReader()
    with_fd = set()
    for sock in descriptors:
        with_fd.add(reader.visit(sock))
    diag = {d.ino: d for d in netlink.dump_unix() if d.ino not in ignore}
    garbage = tuple(sorted(set(diag) - set(reader.socks)))
    files = socket_files(workdir)
    alternatives = abstract_holders(diag, reader)
    descriptions = set()
    for holders in alternatives:
        snap = snapshot_of(diag, reader, with_fd, files, holders)
        descriptions.add(canon.describe(snap))
    return KernelView(frozenset(descriptions), garbage, reader.notes)


def abstract_holders(diag: dict[int, netlink.DiagSocket], reader: SocketReader) -> list[set[int]]:
    """Every consistent choice of which sockets hold their abstract names."""
    carriers: dict[tuple[bytes, str], list[int]] = {}
    for ino, d in diag.items():
        if ino in reader.socks and d.name and d.name[:1] == b"\0":
            carriers.setdefault((d.name, d.type), []).append(ino)
    per_name: list[list[int]] = []
    for (name, sock_type), inos in sorted(carriers.items()):
        if not _held_abstract(name, sock_type):
            continue
        # A listener is its name's holder; so is a socket never connected,
        # since accepted sockets are connected from birth and two live sockets
        # of one type cannot both have bound the name.  Else any could be.
        listening = [i for i in inos if diag[i].state == netlink.TCP_LISTEN]
        unconnected = [i for i in inos if diag[i].peer is None and diag[i].state == netlink.TCP_CLOSE]
        per_name.append(listening or unconnected or sorted(inos))
    return [set(choice) for choice in itertools.product(*per_name)] or [set()]


def snapshot_of(diag, reader: SocketReader, with_fd: set[int], files: dict[bytes, int],
                holders: set[int]) -> canon.Snapshot:
    """The canonical snapshot of the sockets ``reader`` found, given which ones hold their abstract names."""
    alive = set(reader.socks)
    facts = {}
    for ino in sorted(alive):
        d = diag[ino]
        name = None
        reached = False
        if d.name:
            if d.name[:1] == b"\0":
                name = canon.NameRef("@", d.name)
                reached = ino in holders
            else:
                path = d.name.rstrip(b"\0")
                name = canon.NameRef("/", path, d.vfs_ino)
                unconnected = d.peer is None and d.state == netlink.TCP_CLOSE
                reached = files.get(path) == d.vfs_ino and (
                    d.type == "D" or d.state == netlink.TCP_LISTEN or unconnected)
        if d.peer is None:
            peer = None
        elif d.peer in alive:
            peer = d.peer
        else:
            peer = canon.DEAD
        queue = tuple(
            canon.Msg(sender if sender in alive else canon.DEAD, carried)
            for sender, carried in reader.queues.get(ino, ()))
        facts[ino] = canon.SockFacts(
            type=d.type, fdless=ino not in with_fd, name=name, reached=reached,
            listening=d.state == netlink.TCP_LISTEN,
            established=d.type == "D" and d.state == netlink.TCP_ESTABLISHED and d.peer is None,
            shut_rd=bool(d.shutdown & 1), shut_wr=bool(d.shutdown & 2),
            error=reader.errors.get(ino, 0) != 0, peer=peer,
            icons=tuple(reader.icons.get(ino, ())), queue=queue)
    return canon.Snapshot(facts, {p: i for p, i in files.items()})
