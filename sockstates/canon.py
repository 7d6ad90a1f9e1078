"""Canonical description strings of socket states, and their parser.

Both the model and the kernel probe express what they know as a `Snapshot`, a
small graph of sockets whose identities (model ids, kernel inodes, name strings)
are arbitrary keys.  `describe` turns a snapshot into the one string that every
isomorphic snapshot gets, so a state reached with other socket numbers, other
name strings or in another order prints the same; `parse` reads a string back
into a snapshot (keys are then the 1-based token positions and the labels).

Grammar of a description (documented with a table in docs/user/sockstates.rst, "What a state string means")::

    state   = "empty" | token ("_" token)*
    token   = socket | file
    socket  = TYPE ["~"] NAME FLAGS ["-C" ref] ["-I" ref ("," ref)*] ["-M" msg ("," msg)*]
    TYPE    = "S" | "D" | "P"            stream, datagram, seqpacket
    "~"                                  no file descriptor: pending or in flight only
    NAME    = "A" | ("B" | "b") label    unbound | name it is reached by | name it only carries
    label   = "@" N | "/" N [a-z]        abstract string N | path string N (file letter if shared)
    FLAGS   = ["L"] ["E"] ["R"] ["W"] ["!"]
    ref     = N | "X"                    socket N (1-based position) | a socket that is gone
    msg     = ref ["+" N]                sender, and the socket whose fd rides along
    file    = "F" label                  a socket file on a path that reaches no live socket
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

TYPES = ("S", "D", "P")
DEAD = "X"
EMPTY = "empty"

# Above this many orderings to try among sockets the refinement cannot tell
# apart we stop: with the few live sockets this tool explores it never happens,
# and a silent fallback would break canonicity.
MAX_TIE_ORDERINGS = 40320


class DescriptionError(ValueError):
    """A state string that does not parse, or a snapshot that cannot be described."""


# A socket's key in a snapshot: a model id, an inode, a parsed handle, a name's string or file. Keys
# are only hashed and compared, never looked into, and each producer uses its
# own key type, which Mapping's invariant key type would otherwise refuse.
SockKey = Any


# Named tuples rather than dataclasses: the explorer builds millions of them.
class NameRef(NamedTuple):
    """The name a socket carries: abstract ("@") or path ("/"), the string, and for
    paths the socket file (inode) it was bound to."""

    kind: str
    string: SockKey
    file: SockKey = None


class Msg(NamedTuple):
    sender: SockKey  # a socket key, or DEAD
    carried: SockKey = None  # key of the socket whose fd is in the message


class SockFacts(NamedTuple):
    type: str
    fdless: bool = False
    name: NameRef | None = None
    reached: bool = False  # the name resolves to this socket
    listening: bool = False
    established: bool = False  # datagram marked connected although it has no peer
    shut_rd: bool = False
    shut_wr: bool = False
    error: bool = False  # a pending socket error (ECONNRESET)
    peer: SockKey = None  # a socket key, DEAD, or None
    icons: tuple[SockKey, ...] = ()  # keys of pending (not yet accepted) connections, queue order
    queue: tuple[Msg, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    socks: Mapping[SockKey, SockFacts]
    # path string -> file currently linked there; only path strings with a file
    files: Mapping[SockKey, SockKey] = field(default_factory=dict)


def _local(f: SockFacts) -> str:
    """What a socket looks like on its own, without the identity of anything it points at."""
    name = "-" if f.name is None else f.name.kind + ("B" if f.reached else "b")
    peer = "n" if f.peer is None else ("x" if f.peer == DEAD else "p")
    queue = "".join(("x" if m.sender == DEAD else "s") + ("c" if m.carried is not None else "")
                    for m in f.queue)
    return (f"{f.type}{f.fdless:d}{name}{f.listening:d}{f.established:d}{f.shut_rd:d}{f.shut_wr:d}"
            f"{f.error:d}{peer}{len(f.icons)}{queue}")


def _refine(snap: Snapshot, local: Mapping[Hashable, str]) -> dict[Hashable, int]:
    """Colour refinement: a colour per socket, invariant under renaming, that
    separates sockets as far as their neighbourhoods (peers, pending
    connections, messages, shared names, incoming references) allow."""
    socks = snap.socks
    keys = list(socks)
    colour = _rank(local)
    by_string: dict[Hashable, list] = {}
    by_file: dict[Hashable, list] = {}
    for k in keys:
        n = socks[k].name
        if n is not None:
            by_string.setdefault((n.kind, n.string), []).append(k)
            if n.file is not None:
                by_file.setdefault((n.string, n.file), []).append(k)
    linked = {(("/", s)): f for s, f in snap.files.items()}
    rounds = 0
    while True:
        rounds += 1
        incoming: dict[Hashable, list] = {k: [] for k in keys}
        for k in keys:
            f = socks[k]
            if f.peer is not None and f.peer != DEAD:
                incoming[f.peer].append(("C", colour[k]))
            for i, e in enumerate(f.icons):
                incoming[e].append(("I", i, colour[k]))
            for i, m in enumerate(f.queue):
                if m.sender != DEAD:
                    incoming[m.sender].append(("M", i, colour[k]))
                if m.carried is not None:
                    incoming[m.carried].append(("F", i, colour[k]))
        sig = {}
        for k in keys:
            f = socks[k]
            n = f.name
            names: tuple[object, ...] = ()
            if n is not None:
                sk = (n.kind, n.string)
                names = (
                    tuple(sorted(colour[o] for o in by_string[sk] if o != k)),
                    tuple(sorted(colour[o] for o in by_file.get((n.string, n.file), ()) if o != k)),
                    linked.get(sk) == n.file if n.file is not None else None,
                )
            sig[k] = (
                colour[k],
                _ref_colour(f.peer, colour),
                tuple(colour[e] for e in f.icons),
                tuple((_ref_colour(m.sender, colour), _ref_colour(m.carried, colour)) for m in f.queue),
                tuple(sorted(incoming[k])),
                names,
            )
        new = _rank(sig)
        if len(set(new.values())) == len(set(colour.values())) or rounds > len(keys) + 1:
            return new
        colour = new


def _ref_colour(ref: Hashable, colour: Mapping) -> object:
    if ref is None:
        return -1
    if ref == DEAD:
        return -2
    return colour[ref]


def _rank(sig: Mapping[Hashable, object]) -> dict[Hashable, int]:
    texts = {k: repr(v) for k, v in sig.items()}
    order = {t: i for i, t in enumerate(sorted(set(texts.values())))}
    return {k: order[t] for k, t in texts.items()}


def describe(snap: Snapshot, check: bool = True) -> str:
    """The canonical description string of a snapshot.  `check=False` skips the
    consistency check, for callers that build snapshots they trust."""
    if check:
        _check(snap)
    socks = snap.socks
    if not socks and not snap.files:
        return EMPTY
    local = {}
    heads = {}
    for k, f in socks.items():
        # sockets recur unchanged across many states: remember their looks
        known = _LOOKS.get(f)
        if known is None:
            if len(_LOOKS) > 1 << 20:
                _LOOKS.clear()
            known = _LOOKS[f] = (_local(f), _head(f))
        local[k], heads[k] = known
    if len(set(local.values())) == len(local):
        # every socket looks different on its own: that order is canonical
        return _render(snap, sorted(local, key=local.__getitem__), heads)
    colour = _refine(snap, local)
    classes: dict[int, list] = {}
    for k, c in colour.items():
        classes.setdefault(c, []).append(k)
    groups = [classes[c] for c in sorted(classes)]
    count = 1
    for g in groups:
        for n in range(2, len(g) + 1):
            count *= n
    if count > MAX_TIE_ORDERINGS:
        raise DescriptionError(f"state too symmetric to describe ({count} orderings)")
    best = None
    for choice in itertools.product(*(itertools.permutations(g) for g in groups)):
        order = [k for g in choice for k in g]
        text = _render(snap, order, heads)
        if best is None or text < best:
            best = text
    assert best is not None  # groups is never empty: there is always one ordering
    return best


_LOOKS: dict[SockFacts, tuple[str, tuple[str, str]]] = {}


def _head(f: SockFacts) -> tuple[str, str]:
    """The parts of a token that need no numbering: before and after the name label."""
    before = f.type + ("~" if f.fdless else "") + ("A" if f.name is None else ("B" if f.reached else "b"))
    after = (("L" if f.listening else "") + ("E" if f.established else "") + ("R" if f.shut_rd else "")
             + ("W" if f.shut_wr else "") + ("!" if f.error else ""))
    return before, after


def _render(snap: Snapshot, order: list, heads: Mapping) -> str:
    index = {k: str(i + 1) for i, k in enumerate(order)}
    index[DEAD] = DEAD
    labels = _Labels(snap) if snap.files or _has_paths(snap) else None
    abstract: dict = {}  # the common case, without the path bookkeeping
    tokens = []
    for k in order:
        f = snap.socks[k]
        before, after = heads[k]
        t = before
        name = f.name
        if name is not None:
            if labels is not None:
                t += labels.of(name)
            else:
                n = abstract.get(name.string)
                if n is None:
                    n = abstract[name.string] = "@" + str(len(abstract) + 1)
                t += n
        t += after
        if f.peer is not None:
            t += "-C" + index[f.peer]
        if f.icons:
            t += "-I" + ",".join([index[e] for e in f.icons])
        if f.queue:
            t += "-M" + ",".join([
                index[m.sender] if m.carried is None else index[m.sender] + "+" + index[m.carried]
                for m in f.queue])
        tokens.append(t)
    if labels is not None and snap.files:
        tokens.extend(labels.file_tokens(snap))
    return "_".join(tokens)


def _has_paths(snap: Snapshot) -> bool:
    return any(f.name is not None and f.name.kind == "/" for f in snap.socks.values())


class _Labels:
    """Assigns labels to names by first appearance while a description is written."""

    def __init__(self, snap: Snapshot) -> None:
        self.strings: dict[tuple, int] = {}
        self.counts = {"@": 0, "/": 0}
        self.file_letters: dict[tuple, dict] = {}
        self.shared: set = set()
        # path strings whose files are more than one: they need file letters
        files_of: dict[Hashable, set] = {}
        for f in snap.socks.values():
            if f.name is not None and f.name.kind == "/":
                files_of.setdefault(f.name.string, set()).add(f.name.file)
        for s, fl in snap.files.items():
            files_of.setdefault(s, set()).add(fl)
        self.shared = {s for s, fl in files_of.items() if len(fl) > 1}

    def of(self, name: NameRef) -> str:
        key = (name.kind, name.string)
        if key not in self.strings:
            self.counts[name.kind] += 1
            self.strings[key] = self.counts[name.kind]
        text = name.kind + str(self.strings[key])
        if name.kind == "/" and name.string in self.shared:
            letters = self.file_letters.setdefault(key, {})
            if name.file not in letters:
                letters[name.file] = "abcdefghijklmnopqrstuvwxyz"[len(letters)]
            text += letters[name.file]
        return text

    def file_tokens(self, snap: Snapshot) -> list[str]:
        """F tokens: path files whose path reaches no live socket through them."""
        reached_files = {(f.name.string, f.name.file) for f in snap.socks.values()
                         if f.name is not None and f.name.kind == "/" and f.reached}
        pending = [(s, fl) for s, fl in snap.files.items() if (s, fl) not in reached_files]
        known = sorted((self.of(NameRef("/", s, fl)), s, fl) for s, fl in pending
                       if ("/", s) in self.strings)
        # strings no socket carries: all alike, so any order gives the same text
        fresh = [(s, fl) for s, fl in pending if ("/", s) not in self.strings]
        out = ["F" + text for text, _, _ in known]
        out.extend("F" + self.of(NameRef("/", s, fl)) for s, fl in fresh)
        return out


def _check(snap: Snapshot) -> None:
    for k, f in snap.socks.items():
        if f.type not in TYPES:
            raise DescriptionError(f"socket {k!r}: unknown type {f.type!r}")
        refs = [f.peer, *f.icons, *(m.sender for m in f.queue), *(m.carried for m in f.queue)]
        for r in refs:
            if r is not None and r != DEAD and r not in snap.socks:
                raise DescriptionError(f"socket {k!r} refers to unknown socket {r!r}")


_TOKEN = re.compile(
    r"(?P<type>[SDP])(?P<fdless>~?)(?:(?P<anon>A)|(?P<bound>[Bb])(?P<label>@\d+|/\d+[a-z]?))"
    r"(?P<flags>L?E?R?W?!?)(?:-C(?P<peer>\d+|X))?(?:-I(?P<icons>\d+(?:,\d+)*))?"
    r"(?:-M(?P<queue>(?:\d+|X)(?:\+\d+)?(?:,(?:\d+|X)(?:\+\d+)?)*))?"
)
_FILE = re.compile(r"F(?P<label>/\d+[a-z]?)")


def _parse_label(label: str) -> NameRef:
    kind, rest = label[0], label[1:]
    if kind == "@":
        return NameRef("@", int(rest))
    num = rest.rstrip("abcdefghijklmnopqrstuvwxyz")
    return NameRef("/", int(num), rest[len(num):] or "")


def parse(text: str) -> Snapshot:
    """Read a description string back into a snapshot; raises DescriptionError
    naming the token that is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise DescriptionError("empty state string (the state without sockets is written 'empty')")
    text = text.strip()
    if text == EMPTY:
        return Snapshot({}, {})
    raw = text.split("_")
    socks: dict[int, SockFacts] = {}
    files: dict[int, object] = {}
    n_socks = sum(1 for t in raw if not t.startswith("F"))

    def ref(r: str, where: str) -> object:
        if r == DEAD:
            return DEAD
        i = int(r)
        if not 1 <= i <= n_socks:
            raise DescriptionError(f"token {where!r} refers to socket {i}, but there are {n_socks}")
        return i

    seen_file = False
    for pos, tok in enumerate(raw, 1):
        if tok.startswith("F"):
            seen_file = True
            m = _FILE.fullmatch(tok)
            if not m:
                raise DescriptionError(f"token {pos} {tok!r}: a file token is F/<n>[letter]")
            file_name = _parse_label(m["label"])
            if file_name.string in files:
                raise DescriptionError(f"token {pos} {tok!r}: path {file_name.string} has two files")
            files[file_name.string] = file_name.file
            continue
        if seen_file:
            raise DescriptionError(f"token {pos} {tok!r}: socket tokens come before file tokens")
        m = _TOKEN.fullmatch(tok)
        if not m:
            raise DescriptionError(
                f"token {pos} {tok!r} is not a socket: expected TYPE[~](A|B<label>|b<label>)"
                "[L][E][R][W][!][-C<ref>][-I<refs>][-M<msgs>], e.g. SB@1L-I2")
        flags = m["flags"]
        queue: tuple[Msg, ...] = ()
        if m["queue"]:
            items = []
            for item in m["queue"].split(","):
                sender, _, carried = item.partition("+")
                items.append(Msg(ref(sender, tok), ref(carried, tok) if carried else None))
            queue = tuple(items)
        name = _parse_label(m["label"]) if m["bound"] else None
        socks[pos] = SockFacts(
            type=m["type"], fdless=bool(m["fdless"]), name=name, reached=m["bound"] == "B",
            listening="L" in flags, established="E" in flags, shut_rd="R" in flags,
            shut_wr="W" in flags, error="!" in flags,
            peer=ref(m["peer"], tok) if m["peer"] else None,
            icons=tuple(ref(i, tok) for i in m["icons"].split(",")) if m["icons"] else (),
            queue=queue,
        )
    return Snapshot(socks, files)


def canonical(text: str) -> str:
    """Parse and re-describe: the canonical spelling of any valid state string."""
    return describe(parse(text))
