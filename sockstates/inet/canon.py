"""Canonical description strings of TCP and UDP socket states (IPv4 loopback).

The spirit of the unix strings: one token per live socket, joined by ``_``;
sockets refer to each other by their 1-based position in the string.

    TOKEN = PROTO [~] [PORT] [.STATE] [R] [W] [!E] [-C peer] [-I pending] [-Q n | -M senders]

``T U``         TCP, UDP
``~``           no file descriptor: a connection waiting in a listener's queue,
                or an orphan the kernel keeps after close() (FIN_WAIT2, TIME_WAIT)
``:1``          a port bound by label (labels numbered by first appearance);
                ``:e`` an ephemeral port the kernel chose (connect, sendto);
                none: no port
``.CL .LI``     TCP state: closed (fresh, refused or reset), listening,
``.ES .CW``     established, close-wait (the peer sent FIN),
``.F2 .TW``     fin-wait-2 (our FIN acknowledged), time-wait
``R W``         shut down for reading / writing (a closed TCP socket is both)
``!r !f !p``    a pending error: ECONNRESET, ECONNREFUSED, EPIPE
``-C2``         connected to socket 2 (TCP: the other end; UDP: the socket
                holding the port connected to); ``-CX``: nobody holds it
``-I3,4``       a listener's connections waiting for accept(), in accept order
``-Q2``         TCP: bytes waiting to be read, in sends (2 sends of one payload)
``-M2,X``       UDP: datagrams waiting, by sender in order; ``X``: a sender
                whose port nobody holds any more

Examples::

    T:1.LI-I3_T:e.ES-C3_T~:1.ES-C2   a listener, a client, its connection not yet accepted
    T:1.CWR-C3_T:1.LI_T~:e.F2-C1     accepted; the client closed: its orphan waits in FIN_WAIT2
    T:1.LI_T~:e.TW                   both ends closed, the client first: its TIME_WAIT remains
    T:1.CLRW_T:1.LI_T~:1.TW          the accepted end shut for writing, then the client closed
    T:e.CLRW!f                       a connect() refused: closed, ECONNREFUSED pending
    T:e.CLRW!r                       a client whose listener closed before accept(): reset
    U:1-M2_U:e                       a datagram from socket 2 waits at port 1
    U:e!f-CX                         connected to a port nobody holds; a send got ICMP back

Tokens are ordered so that the string does not depend on socket numbering or
creation order: by their own text without references first, and among equal
ones by the least resulting string.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Hashable, Mapping
from typing import Any, NamedTuple

DEAD = "X"
EMPTY = "empty"
EPHEMERAL = "e"
TCP_STATES = ("CL", "LI", "ES", "CW", "F2", "TW")
ERRORS = {"r": "ECONNRESET", "f": "ECONNREFUSED", "p": "EPIPE"}
MAX_TIE_ORDERINGS = 40320


class DescriptionError(ValueError):
    """A string that is not an inet state description."""


class Facts(NamedTuple):
    """One socket as both the model and the kernel probe see it; references are ids of the snapshot."""

    proto: str  # T or U
    fdless: bool = False
    port: Hashable | None = None  # a label (any hashable id), EPHEMERAL, or None
    state: str = ""  # TCP_STATES for T, "" for U
    shut: int = 0  # 1 RD, 2 WR
    error: str = ""  # a key of ERRORS
    peer: Hashable | None = None  # socket id, DEAD, or None
    icons: tuple[Hashable, ...] = ()
    queue: tuple[Hashable, ...] = ()  # UDP: sender ids or DEAD; TCP: one entry per send


# keys are socket ids of whatever type the producer uses (model ids, probe tuples): hashed and
# compared only, and Mapping's invariant key type would refuse each producer's own
Snapshot = Mapping[Any, Facts]


def _local(f: Facts) -> str:
    """The token without references and with labels blanked: what ordering starts from."""
    port = "" if f.port is None else (":e" if f.port == EPHEMERAL else ":#")
    return _token(f, port, "", "", "")


def _token(f: Facts, port: str, peer: str, icons: str, queue: str) -> str:
    text = f.proto + ("~" if f.fdless else "") + port
    if f.proto == "T":
        text += "." + f.state
    text += ("R" if f.shut & 1 else "") + ("W" if f.shut & 2 else "")
    text += f"!{f.error}" if f.error else ""
    return text + peer + icons + queue


def describe(snap: Snapshot) -> str:
    if not snap:
        return EMPTY
    ids = list(snap)
    local = {i: _local(snap[i]) for i in ids}
    groups = [list(g) for _, g in itertools.groupby(sorted(ids, key=lambda i: (local[i], str(i))),
                                                      key=lambda i: local[i])]
    orderings = 1
    for g in groups:
        for n in range(2, len(g) + 1):
            orderings *= n
    if orderings > MAX_TIE_ORDERINGS:
        raise DescriptionError(f"too many equal sockets to order ({orderings} orderings)")
    best: str | None = None
    for choice in itertools.product(*(itertools.permutations(g) for g in groups)):
        order = [i for part in choice for i in part]
        text = _render(snap, order)
        if best is None or text < best:
            best = text
    assert best is not None
    return best


def _render(snap: Snapshot, order: list[Hashable]) -> str:
    index = {sid: n for n, sid in enumerate(order, 1)}
    labels: dict[Hashable, int] = {}

    def ref(r: Hashable) -> str:
        return DEAD if r == DEAD else str(index[r])

    tokens = []
    for sid in order:
        f = snap[sid]
        if f.port is None:
            port = ""
        elif f.port == EPHEMERAL:
            port = ":e"
        else:
            port = f":{labels.setdefault(f.port, len(labels) + 1)}"
        peer = "" if f.peer is None else f"-C{ref(f.peer)}"
        icons = f"-I{','.join(ref(i) for i in f.icons)}" if f.icons else ""
        if f.proto == "T":
            queue = f"-Q{len(f.queue)}" if f.queue else ""
        else:
            queue = f"-M{','.join(ref(s) for s in f.queue)}" if f.queue else ""
        tokens.append(_token(f, port, peer, icons, queue))
    return "_".join(tokens)


_TOKEN = re.compile(
    r"(?P<proto>[TU])(?P<fdless>~)?(?::(?P<port>\d+|e))?(?:\.(?P<state>[A-Z][A-Z0-9]))?"
    r"(?P<r>R)?(?P<w>W)?(?:!(?P<error>[rfp]))?(?:-C(?P<peer>\d+|X))?(?:-I(?P<icons>\d+(?:,\d+)*))?"
    r"(?:-Q(?P<qlen>\d+)|-M(?P<senders>(?:\d+|X)(?:,(?:\d+|X))*))?")


def parse(text: str) -> dict[int, Facts]:
    """A description back to a snapshot (ids: positions); DescriptionError naming what is wrong."""
    text = text.strip()
    if text == EMPTY:
        return {}
    tokens = text.split("_")
    out: dict[int, Facts] = {}

    def ref(r: str) -> Hashable:
        if r == DEAD:
            return DEAD
        if not 1 <= int(r) <= len(tokens):
            raise DescriptionError(f"{text!r}: reference {r} to no socket")
        return int(r)

    for n, token in enumerate(tokens, 1):
        m = _TOKEN.fullmatch(token)
        if not m:
            raise DescriptionError(f"{text!r}: bad token {token!r}")
        proto = m["proto"]
        if (proto == "T") != (m["state"] is not None) or (m["state"] and m["state"] not in TCP_STATES):
            raise DescriptionError(f"{text!r}: {token!r}: TCP needs a state among {TCP_STATES}, UDP none")
        if (m["qlen"] and proto != "T") or (m["senders"] and proto != "U"):
            raise DescriptionError(f"{text!r}: {token!r}: -Q is for TCP, -M for UDP")
        port = m["port"]
        out[n] = Facts(
            proto=proto, fdless=bool(m["fdless"]),
            port=None if port is None else (EPHEMERAL if port == "e" else f"label{port}"),
            state=m["state"] or "", shut=(1 if m["r"] else 0) | (2 if m["w"] else 0), error=m["error"] or "",
            peer=None if m["peer"] is None else ref(m["peer"]),
            icons=tuple(ref(i) for i in m["icons"].split(",")) if m["icons"] else (),
            queue=(tuple(ref(s) for s in m["senders"].split(",")) if m["senders"]
                   else (n,) * int(m["qlen"] or 0)),
        )
    return out


def canonical(text: str) -> str:
    return describe(parse(text))


def is_inet(text: str) -> bool:
    """Whether a description names TCP/UDP sockets (the unix ones start S, D, P or F)."""
    return text.strip()[:1] in ("T", "U")
