"""One syscall of a sequence, as data and as the text line that is printed.

Sequences are the interface between the model (which writes them) and the
runner (which performs them): the runner only reads these records, so it never
needs the model.  Sockets are named by handles (1, 2, ...: the order in which
the sequence creates them), names by labels (@3 is an abstract name, /3 a path
in the run's temporary directory, :3 a TCP/UDP port on loopback); a line may
end with the error the call is expected to fail with, e.g.
``send(2) = ECONNREFUSED``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeVar

OPS = ("socket", "socketpair", "bind", "listen", "connect", "accept", "send", "sendto",
       "shutdown", "close", "unlink",
       "abort", "disconnect")  # inet: SO_LINGER 0 then close(); connect(AF_UNSPEC)
HOWS = ("RD", "WR", "RDWR")
TYPE_NAMES = {"S": "SOCK_STREAM", "D": "SOCK_DGRAM", "P": "SOCK_SEQPACKET",
              "T": "TCP (AF_INET, SOCK_STREAM)", "U": "UDP (AF_INET, SOCK_DGRAM)"}


_T = TypeVar("_T")


class SyscallError(ValueError):
    """A syscall line that does not parse."""


@dataclass(frozen=True, slots=True)
class Syscall:
    op: str
    fd: int | None = None  # the handle the call works on
    type: str | None = None  # S, D or P for socket/socketpair
    name: str | None = None  # label: "@N" or "/N"; inet: ":N", a port on 127.0.0.1
    how: str | None = None  # shutdown: RD, WR or RDWR
    passes: int | None = None  # handle whose descriptor rides along (SCM_RIGHTS)
    result: tuple[int, ...] = ()  # handles the call creates
    error: str | None = None  # errno name the call is expected to fail with

    # The fields a call of its op always carries (parse_line and the rules see to
    # it); these read them as the types they then have.
    @property
    def handle(self) -> int:
        return _required(self.fd, self, "handle")

    @property
    def label(self) -> str:
        return _required(self.name, self, "name label")

    @property
    def kind(self) -> str:
        return _required(self.type, self, "socket type")

    @property
    def shut(self) -> str:
        return _required(self.how, self, "shutdown direction")

    def __str__(self) -> str:
        args: list[str] = []
        if self.type is not None:
            args.append(self.type)
        if self.fd is not None:
            args.append(str(self.fd))
        if self.name is not None:
            args.append(self.name)
        if self.how is not None:
            args.append(self.how)
        if self.passes is not None:
            args.append(f"[{self.passes}]")
        text = f"{self.op}({', '.join(args)})"
        if self.result:
            text += " = " + ", ".join(map(str, self.result))
        elif self.error:
            text += " = " + self.error
        return text


def _required(value: _T | None, call: Syscall, what: str) -> _T:
    if value is None:
        raise SyscallError(f"{call.op}: a {what} is required")
    return value


_LINE = re.compile(r"(?P<op>[a-z]+)\((?P<args>[^)]*)\)(?:\s*=\s*(?P<ret>[A-Z0-9, ]+))?")


def parse_line(line: str) -> Syscall:
    """Read one syscall line back; raises SyscallError saying what is wrong."""
    m = _LINE.fullmatch(line.strip())
    if not m:
        raise SyscallError(f"not a syscall line: {line.strip()!r}")
    op = m["op"]
    if op not in OPS:
        raise SyscallError(f"unknown syscall {op!r} in {line.strip()!r}; known: {', '.join(OPS)}")
    fields: dict = {"op": op}
    for arg in (a.strip() for a in m["args"].split(",") if a.strip()):
        if arg in TYPE_NAMES:
            fields["type"] = arg
        elif arg in HOWS:
            fields["how"] = arg
        elif arg.isdigit():
            fields["fd"] = int(arg)
        elif re.fullmatch(r"[@/:]\d+", arg):
            fields["name"] = arg
        elif re.fullmatch(r"\[\d+\]", arg):
            fields["passes"] = int(arg[1:-1])
        else:
            raise SyscallError(f"bad argument {arg!r} in {line.strip()!r}")
    ret = (m["ret"] or "").strip()
    if ret:
        if ret[0].isdigit():
            fields["result"] = tuple(int(x) for x in ret.split(","))
        elif re.fullmatch(r"E[A-Z]+", ret):
            fields["error"] = ret
        else:
            raise SyscallError(f"bad result {ret!r} in {line.strip()!r}")
    return Syscall(**fields)
