#!/usr/bin/env python3
"""sockstates --criu reproducer: does CRIU bring back this state intact?

state:  SARW!-CX
verdict when found: failed at : expected: SO_ERROR gives ECONNRESET (the peer closed with data unread); CRIU: SO_ERROR gives 0 (SARW-CX)
syscalls:
    socketpair(S) = 1, 2
    send(1)
    close(2)
Run as root: python3 THIS_FILE [path to criu]  (else $CRIU, the sweep's criu, criu on PATH)
Exit status 0: same; 1: different; 2: CRIU failed; 3: cannot run here (no criu, not root).
"""
from __future__ import annotations

import array
import ctypes
import difflib
import errno
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

# --- state values ---
SYSCALLS = [{'op': 'socketpair', 'type': 'S', 'result': [1, 2]}, {'op': 'send', 'fd': 1}, {'op': 'close', 'fd': 2}]
NETWORK_LOCK = 'nftables'
CRIU_USED = None  # give criu as the argument or $CRIU
CRIU_OPTIONS = []  # --tcp-established for TCP states
# --- end of state values ---


KINDS = {"S": socket.SOCK_STREAM, "D": socket.SOCK_DGRAM, "P": socket.SOCK_SEQPACKET}
HOWS = {"RD": socket.SHUT_RD, "WR": socket.SHUT_WR, "RDWR": socket.SHUT_RDWR}
PAYLOAD = struct.Struct("<QQ")  # sender handle, serial


def address(label: str) -> bytes | str:
    return b"\0repro-" + label[1:].encode() if label[0] == "@" else "s" + label[1:]


def perform(handles: dict[int, socket.socket], call: dict[str, Any], serial: int) -> None:
    op, fd = call["op"], call.get("fd", -1)  # -1: no descriptor (socket, socketpair, unlink)
    if op == "socket":
        handles[call["result"][0]] = socket.socket(socket.AF_UNIX, KINDS[call["type"]])
    elif op == "socketpair":
        a, b = socket.socketpair(socket.AF_UNIX, KINDS[call["type"]])
        handles[call["result"][0]], handles[call["result"][1]] = a, b
    elif op == "bind":
        handles[fd].bind(address(call["name"]))
    elif op == "listen":
        handles[fd].listen(64)
    elif op == "connect":
        handles[fd].setblocking(False)
        handles[fd].connect(address(call["name"]))
    elif op == "accept":
        handles[fd].setblocking(False)
        handles[call["result"][0]] = handles[fd].accept()[0]
    elif op in ("send", "sendto"):
        anc = []
        if call.get("passes") is not None:
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [handles[call["passes"]].fileno()]))]
        args = [address(call["name"])] if op == "sendto" else []
        handles[fd].sendmsg([PAYLOAD.pack(fd, serial)], anc, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL, *args)
    elif op == "shutdown":
        handles[fd].shutdown(HOWS[call["how"]])
    elif op == "close":
        handles.pop(fd).close()
    elif op == "unlink":
        os.unlink(address(call["name"]))


def reach(workdir: str) -> dict[int, socket.socket]:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) != 0:
        sys.exit("cannot enter a new network namespace: run as root")
    os.chdir(workdir)
    handles: dict[int, socket.socket] = {}
    for serial, call in enumerate(SYSCALLS, 1):
        try:
            perform(handles, call, serial)
        except OSError:
            if call.get("error") is None:
                raise
    return handles


def report(handles: dict[int, socket.socket]) -> list[str]:
    """What can be read, labelled by handle (h1) or by order of discovery (x1, x2, ...)."""
    lines: list[str] = []
    labels: dict[int, str] = {}
    extra: list[socket.socket] = []

    def label(sock: socket.socket) -> str:
        ino = os.fstat(sock.fileno()).st_ino
        if ino not in labels:
            labels[ino] = "x%d" % (len(labels) + 1)
            extra.append(sock)
        return labels[ino]

    for handle, sock in sorted(handles.items()):
        labels.setdefault(os.fstat(sock.fileno()).st_ino, "h%d" % handle)
    todo = [sock for _, sock in sorted(handles.items())]
    visited: list[tuple[str, socket.socket]] = []
    while todo:
        sock = todo.pop(0)
        me = labels[os.fstat(sock.fileno()).st_ino]
        visited.append((me, sock))
        sock.setblocking(False)
        try:
            peer = repr(sock.getpeername())
        except OSError as e:
            peer = errno.errorcode.get(e.errno or 0, str(e.errno))
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        lines.append("%s type=%d error=%d name=%r peer=%s" % (me, sock.type, error, sock.getsockname(), peer))
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            while True:
                try:
                    child = sock.accept()[0]
                except BlockingIOError:
                    break
                lines.append("%s accepts %s" % (me, label(child)))
                todo.append(child)
            continue
        while True:
            try:
                data, anc, _, _ = sock.recvmsg(PAYLOAD.size, socket.CMSG_SPACE(16))
            except BlockingIOError:
                break
            except OSError as e:
                lines.append("%s read error %s" % (me, e.strerror))
                break
            if not data:
                lines.append("%s end of stream" % me)
                break
            carried = []
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    for fd in array.array("i", payload[: len(payload) - len(payload) % 4]):
                        new = socket.socket(fileno=fd)
                        fresh = os.fstat(new.fileno()).st_ino not in labels
                        carried.append(label(new))
                        if fresh:
                            todo.append(new)
            sender, serial = PAYLOAD.unpack(data) if len(data) == PAYLOAD.size else (-1, -1)
            lines.append("%s message %d from h%d bytes %s carrying %s" % (me, serial, sender, data.hex(), carried))
    # last, as it changes queues: may each socket still send (to its peer)?
    for me, sock in visited:
        try:
            sock.send(b"ping", socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            lines.append("%s send: ok" % me)
        except OSError as e:
            lines.append("%s send: %s" % (me, errno.errorcode.get(e.errno or 0, str(e.errno))))
    return lines


def target(workdir: str) -> None:
    handles = reach(workdir)
    open(os.path.join(workdir, "ready"), "w").close()
    while not os.path.exists(os.path.join(workdir, "go")):
        time.sleep(0.01)
    with open(os.path.join(workdir, "report.tmp"), "w") as f:
        json.dump(report(handles), f)
    os.rename(os.path.join(workdir, "report.tmp"), os.path.join(workdir, "report.json"))  # seen whole or not


def find_criu() -> tuple[str | None, list[str]]:
    """The criu to run and the places tried: the argument, $CRIU, the one the sweep ran, criu on PATH."""
    if len(sys.argv) > 1:  # named explicitly: that one or none
        candidates: list[tuple[str, str | None]] = [("the argument", sys.argv[1])]
    else:
        candidates = [("$CRIU", os.environ.get("CRIU")), ("the sweep's criu", CRIU_USED),
                      ("PATH", shutil.which("criu"))]
    tried: list[str] = []
    for where, path in candidates:
        if not path:
            continue
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path, tried
        tried.append("%s (%s)" % (path, where))
    return None, tried


def kill_if_ours(pid: int) -> None:
    """SIGKILL a process this script started (checked by its command line: pids are reused) and reap it."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if os.path.abspath(__file__).encode() not in f.read():
                return
        os.kill(pid, 9)
    except OSError:
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # restored by criu: not our child, init reaps it; it is gone once it has exited
        deadline = time.monotonic() + 10
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.01)


def running(pid: int) -> bool:
    """Whether ``pid`` has not exited yet (a zombie has: only its parent's wait is left)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def main() -> int | None:
    if len(sys.argv) == 3 and sys.argv[1] in ("--reference", "--target"):
        if sys.argv[1] == "--target":
            target(sys.argv[2])
            return None  # exit status 0, as sys.exit(None)
        print(json.dumps(report(reach(sys.argv[2]))))
        return 0
    criu, tried = find_criu()
    if criu is None:
        print("cannot find criu%s.\nGive its path: python3 %s /path/to/criu (or set CRIU=/path/to/criu);"
              " on kernels >= 6.13 it must be CRIU >= 4.1." % (": tried " + ", ".join(tried) if tried else
                                                               " (no argument, no $CRIU, none on PATH)",
                                                               sys.argv[0]), file=sys.stderr)
        return 3
    if os.geteuid() != 0:
        print("criu dump and restore need root: run this as root", file=sys.stderr)
        return 3
    work = tempfile.mkdtemp(prefix="sockstates-repro-")
    names, images = os.path.join(work, "names"), os.path.join(work, "images")
    os.mkdir(names)
    os.mkdir(images)
    reference = json.loads(subprocess.run([sys.executable, __file__, "--reference", names],
                                          check=True, capture_output=True, text=True).stdout)
    names = os.path.join(work, "names2")
    os.mkdir(names)
    pidfile = os.path.join(work, "restored.pid")
    with open(os.path.join(work, "target.log"), "wb") as log:
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--target", names],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    try:
        return check(criu, proc, names, images, pidfile, reference, work)
    finally:  # whatever happened, no target (before or after C/R) is left waiting
        kill_if_ours(proc.pid)
        if os.path.exists(pidfile):
            with open(pidfile) as f:
                kill_if_ours(int(f.read().strip() or 0))


def print_cause(log: str) -> None:
    """The lines that say why: a BUG, a task's death, and the last errors before CRIU gave up.

    (The first Error line is often a harmless one that successful runs log too.)
    """
    try:
        with open(log, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return
    errors = [line for line in lines if "Error (" in line]
    cause = [line for line in errors if "BUG at" in line or "killed by signal" in line] or errors[-3:]
    for line in cause:
        print("    " + line.strip())


def check(criu: str, proc: subprocess.Popen[bytes], names: str, images: str, pidfile: str, reference: list[str],
          work: str) -> int:
    while not os.path.exists(os.path.join(names, "ready")):
        if proc.poll() is not None:
            print("the target died before reaching the state: see " + os.path.join(work, "target.log"))
            return 2
        time.sleep(0.01)
    dump = [criu, "dump", "-t", str(proc.pid), "-D", images, "-o", "dump.log", "-v4", "--network-lock", NETWORK_LOCK,
            *CRIU_OPTIONS]
    restore = [criu, "restore", "-d", "-D", images, "-o", "restore.log", "-v4", "--pidfile", pidfile, *CRIU_OPTIONS]
    for argv in (dump, restore):
        print("+", " ".join(argv))
        if subprocess.run(argv).returncode != 0:
            log = os.path.join(images, argv[1] + ".log")
            print("criu %s failed: see %s" % (argv[1], log))
            print_cause(log)
            return 2
        if argv is dump:
            proc.wait()
    open(os.path.join(names, "go"), "w").close()
    deadline = time.monotonic() + 60
    path = os.path.join(names, "report.json")
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    restored = ["(the restored process did not report)"]
    if os.path.exists(path):
        with open(path) as f:
            restored = json.load(f)
    print("without C/R:", *reference, sep="\n    ")
    print("after C/R:", *restored, sep="\n    ")
    diff = list(difflib.unified_diff(reference, restored, "without C/R", "after C/R", lineterm=""))
    print("\n".join(diff) if diff else "same: CRIU restored this state intact")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
