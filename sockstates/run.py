"""Perform syscall sequences for real and ask the kernel what came of them.

Each sequence runs in a fresh child process (fork), in a network namespace of
its own (so abstract names and the sock_diag dump hold only its sockets) and a
temporary directory of its own (path names), which is removed afterwards.  The
child performs the calls, checks each call's outcome against the one the
sequence expects, probes the kernel (`probe`), and reports through a pipe.

This module reads only `Syscall` records: it does not know the model.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from sockstates import netlink, probe, strangers
from sockstates.syscall import Syscall

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
SOCK_KINDS = {"S": socket.SOCK_STREAM, "D": socket.SOCK_DGRAM, "P": socket.SOCK_SEQPACKET}
SHUT_HOWS = {"RD": socket.SHUT_RD, "WR": socket.SHUT_WR, "RDWR": socket.SHUT_RDWR}
ABSTRACT_PREFIX = b"\0sockstates-"
READY = b"R"  # the child's word that the state is reached (before its JSON report)


# Set by `enter_private_netns`: runs then share this process's namespace
# instead of making one each (namespace creation is the slowest part of a run).
_SHARED_NETNS = False


def enter_private_netns() -> None:
    """Move this process into a network namespace of its own; later runs from
    it share that namespace rather than each making a new one."""
    global _SHARED_NETNS
    unshare_net()
    _SHARED_NETNS = True


class RunError(RuntimeError):
    """The runner itself could not work (no namespace, child died, timeout)."""


@dataclass
class Outcome:
    """What one run found."""

    descriptions: frozenset[str] = frozenset()  # the kernel's view (several when ambiguous)
    call_mismatches: list[str] = field(default_factory=list)  # calls that did not do as expected
    garbage: int = 0  # sockets alive but unreachable: a sequence outside the model's scope
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # the child failed in a way that is not a finding
    strangers: list[str] = field(default_factory=list)  # who reaches each bound name (`strangers`), after the probe

    def matches(self, description: str) -> bool:
        return not self.error and not self.call_mismatches and description in self.descriptions


def address(label: str) -> bytes | str:
    """The real address of a name label: abstract names live in the run's
    network namespace, paths in its working directory."""
    if label.startswith("@"):
        # the pid keeps apart runs that share a namespace (see `worker`)
        return ABSTRACT_PREFIX + f"{os.getpid()}-{label[1:]}".encode()
    if label.startswith("/"):
        return "s" + label[1:]
    raise ValueError(f"not a name label: {label!r}")


def unshare_net() -> None:
    """Enter a new network namespace (a user namespace too when not root), so abstract names do not clash."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) == 0:
        return
    first = ctypes.get_errno()
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        raise RunError(f"cannot enter a new network namespace ({os.strerror(first)}): "
                       "run as root or allow unprivileged user namespaces")
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


class UnknownHandle(RunError):
    """A call names a handle that is not open."""


class SyscallExecutor:
    """Performs syscalls on numbered socket handles, as a sequence's text names them."""

    def __init__(self) -> None:
        self.handles: dict[int, socket.socket] = {}
        self.serial = 0

    def sock(self, handle: int) -> socket.socket:
        try:
            return self.handles[handle]
        except KeyError:
            raise UnknownHandle(f"sequence uses handle {handle}, which is not open") from None

    def perform(self, call: Syscall) -> None:
        op = call.op
        if op == "socket":
            self.handles[call.result[0]] = socket.socket(socket.AF_UNIX, SOCK_KINDS[call.kind])
        elif op == "socketpair":
            a, b = socket.socketpair(socket.AF_UNIX, SOCK_KINDS[call.kind])
            self.handles[call.result[0]], self.handles[call.result[1]] = a, b
        elif op == "bind":
            self.sock(call.handle).bind(address(call.label))
        elif op == "listen":
            self.sock(call.handle).listen(64)
        elif op == "connect":
            s = self.sock(call.handle)
            s.setblocking(False)
            s.connect(address(call.label))
        elif op == "accept":
            s = self.sock(call.handle)
            s.setblocking(False)
            child, _ = s.accept()
            self.handles[call.result[0]] = child
        elif op in ("send", "sendto"):
            self.send(call)
        elif op == "shutdown":
            self.sock(call.handle).shutdown(SHUT_HOWS[call.shut])
        elif op == "close":
            self.sock(call.handle)
            self.handles.pop(call.handle).close()
        elif op == "unlink":
            os.unlink(address(call.label))
        else:
            raise RunError(f"unknown syscall {op!r}")

    def send(self, call: Syscall) -> None:
        s = self.sock(call.handle)
        self.serial += 1
        payload = probe.PAYLOAD.pack(os.fstat(s.fileno()).st_ino, self.serial)
        anc = []
        if call.passes is not None:
            fds = self.sock(call.passes).fileno().to_bytes(4, "little", signed=True)
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)]
        flags = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
        if call.op == "sendto":
            s.sendmsg([payload], anc, flags, address(call.label))
        else:
            s.sendmsg([payload], anc, flags)


def _child(syscalls: Sequence[Syscall], workdir: str, strict: bool, hold: tuple[int, int] | None) -> dict:
    from sockstates.inet import run as inet_run  # imports this module: not at the top

    if inet_run.is_inet(syscalls):  # TCP/UDP: a namespace of its own per sequence, lo up, settling
        return inet_run.child(syscalls, strict, hold)
    if _SHARED_NETNS:
        # sockets earlier runs left to the lazy garbage collector are not ours
        ignore = {d.ino for d in netlink.dump_unix()}
    else:
        unshare_net()
        ignore = set()
    os.chdir(workdir)
    ex = SyscallExecutor()
    mismatches = []
    for i, call in enumerate(syscalls, 1):
        try:
            ex.perform(call)
            got = None
        except OSError as e:
            got = errno.errorcode.get(e.errno or 0, str(e.errno))
        except UnknownHandle:
            if strict:
                raise
            continue  # a random sequence using a socket it failed to create or closed
        if strict and got != call.error:
            want = call.error or "success"
            mismatches.append(f"step {i} {call}: kernel said {got or 'success'}, model expected {want}")
            break
    if hold is not None:
        # the state is reached: tell the parent and wait until it is done with us
        # (a checkpoint/restore, for instance) before the probe changes anything
        ready, go = hold
        os.write(ready, READY)
        os.read(go, 1)
    view = probe.probe(list(ex.handles.values()), workdir, ignore)
    return {
        "descriptions": sorted(view.descriptions),
        "mismatches": mismatches,
        "garbage": len(view.garbage),
        "notes": view.notes,
        "strangers": strangers.reach(syscalls, address),  # last: an accepted stranger changes the state
    }


def _start(syscalls: Sequence[Syscall], strict: bool = True,
           go: int | None = None) -> tuple[int, int, str]:
    workdir = tempfile.mkdtemp(prefix="sockstates-")
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into the caller's code
        code = 0
        try:
            os.close(rd)
            try:
                result = _child(syscalls, workdir, strict, None if go is None else (wr, go))
            except Exception as e:  # reported to the parent, which decides
                result = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
            data = json.dumps(result).encode()
            while data:
                data = data[os.write(wr, data):]
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(wr)
    return pid, rd, workdir


def _finish(pid: int, rd: int, workdir: str, timeout: float, already: bytes = b"") -> Outcome:
    chunks = [already] if already else []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([rd], [], [], left)[0]:
                os.kill(pid, 9)
                return Outcome(error=f"child did not finish within {timeout} s")
            chunk = os.read(rd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(rd)
        os.waitpid(pid, 0)
        shutil.rmtree(workdir, ignore_errors=True)
    if not chunks:
        return Outcome(error="child died without a report")
    result = json.loads(b"".join(chunks))
    if "error" in result:
        return Outcome(error=result["error"], notes=[result.get("trace", "")])
    return Outcome(frozenset(result["descriptions"]), result["mismatches"], result["garbage"], result["notes"],
                   strangers=result.get("strangers", []))


def run_sequence(syscalls: Sequence[Syscall], timeout: float = 10.0, strict: bool = True,
                 between: Callable[[int], None] | None = None) -> Outcome:
    """Perform one sequence in a fresh child and return the kernel's view.
    `strict`: stop at the first call whose outcome differs from the one the
    sequence expects, and report it; otherwise perform every call whatever
    it returns (random sequences), skipping calls on handles not open.
    `between(pid)` is called once the child has reached the state and before it
    probes: the place for a checkpoint/restore of the child."""
    if between is None:
        return _finish(*_start(syscalls, strict), timeout)
    go_r, go_w = os.pipe()
    pid, rd, workdir = _start(syscalls, strict, go_r)
    os.close(go_r)
    first = b""
    try:
        if select.select([rd], [], [], timeout)[0]:
            first = os.read(rd, len(READY))
        if first == READY:
            first = b""
            between(pid)
    finally:
        # a child that failed early may be gone already: nothing left to release
        with contextlib.suppress(BrokenPipeError):
            os.write(go_w, b"g")
        os.close(go_w)
    return _finish(pid, rd, workdir, timeout, first)  # a child that failed early sent its report


def run_many(sequences: Iterable[Sequence[Syscall]], jobs: int = 0, timeout: float = 10.0,
             strict: bool = True) -> Iterator[Outcome]:
    """run_sequence() for each sequence, `jobs` at once (0: one per CPU), yielding
    outcomes in the order of the sequences.  The children are forked by small
    worker processes (`worker`), not by this one, which may be large."""
    jobs = jobs or os.cpu_count() or 1
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    workers = [subprocess.Popen([sys.executable, "-m", "sockstates.worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=env) for _ in range(jobs)]
    try:
        batch: list[Sequence[Syscall]] = []
        for seq in sequences:
            batch.append(seq)
            if len(batch) == jobs:
                yield from _run_batch(workers, batch, timeout, strict)
                batch = []
        if batch:
            yield from _run_batch(workers, batch, timeout, strict)
    finally:
        for w in workers:
            assert w.stdin is not None  # started with pipes
            w.stdin.close()
        for w in workers:
            try:
                w.wait(timeout=timeout + 5)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
            assert w.stdout is not None  # started with pipes
            w.stdout.close()


def _run_batch(workers, batch, timeout: float, strict: bool) -> Iterator[Outcome]:
    for w, seq in zip(workers, batch, strict=False):
        w.stdin.write(json.dumps({"calls": [str(c) for c in seq], "timeout": timeout, "strict": strict}) + "\n")
        w.stdin.flush()
    for w, _ in zip(workers, batch, strict=False):
        line = w.stdout.readline()
        if not line:
            raise RunError(f"worker {w.pid} died (exit {w.wait()})")
        reply = json.loads(line)
        reply["descriptions"] = frozenset(reply["descriptions"])
        yield Outcome(**reply)
