#!/usr/bin/env python3
"""sockstates --criu reproducer: does CRIU bring back this state intact?

state:  T:1.CWR-C3_T:1.LI_T~:e.F2-C1
verdict when found: failed at : expected: the closed end lingers in FIN_WAIT2 and its close-wait peer stays connected to it; CRIU: the orphan is gone and the peer is connected to nobody (T:1.CWR-CX_T:1.LI)
syscalls:
    socket(T) = 1
    socket(T) = 2
    bind(1, :1)
    listen(1)
    connect(2, :1)
    accept(1) = 3
    close(2)
Run as root: python3 THIS_FILE [path to criu]  (else $CRIU, the sweep's criu, criu on PATH)
Exit status 0: same; 1: different; 2: CRIU failed; 3: cannot run here (no criu, not root).
"""
from __future__ import annotations

import ctypes
import difflib
import errno
import fcntl
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
SYSCALLS = [{'op': 'socket', 'type': 'T', 'result': [1]}, {'op': 'socket', 'type': 'T', 'result': [2]}, {'op': 'bind', 'fd': 1, 'name': ':1'}, {'op': 'listen', 'fd': 1}, {'op': 'connect', 'fd': 2, 'name': ':1'}, {'op': 'accept', 'fd': 1, 'result': [3]}, {'op': 'close', 'fd': 2}]
NETWORK_LOCK = 'nftables'
CRIU_USED = None  # give criu as the argument or $CRIU
CRIU_OPTIONS = ['--tcp-established']  # --tcp-established for TCP states
# --- end of state values ---


KINDS = {"T": socket.SOCK_STREAM, "U": socket.SOCK_DGRAM}
HOWS = {"RD": socket.SHUT_RD, "WR": socket.SHUT_WR, "RDWR": socket.SHUT_RDWR}
PAYLOAD = struct.Struct("<QQ")  # sender handle, serial
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
              7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}
FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL


def address(label: str) -> tuple[str, int]:
    return ("127.0.0.1", 10000 + int(label[1:]))


def perform(handles: dict[int, socket.socket], call: dict[str, Any], serial: int) -> None:
    op, fd = call["op"], call.get("fd", -1)  # -1: no descriptor (socket)
    if op == "socket":
        handles[call["result"][0]] = socket.socket(socket.AF_INET, KINDS[call["type"]])
        handles[call["result"][0]].setblocking(False)
    elif op == "bind":
        handles[fd].bind(address(call["name"]))
    elif op == "listen":
        handles[fd].listen(64)
    elif op == "connect":
        code = handles[fd].connect_ex(address(call["name"]))
        if code not in (0, errno.EINPROGRESS):
            raise OSError(code, os.strerror(code))
    elif op == "accept":
        handles[call["result"][0]] = handles[fd].accept()[0]
        handles[call["result"][0]].setblocking(False)
    elif op == "send":
        handles[fd].send(PAYLOAD.pack(fd, serial), FLAGS)
    elif op == "sendto":
        handles[fd].sendto(PAYLOAD.pack(fd, serial), FLAGS, address(call["name"]))
    elif op == "shutdown":
        handles[fd].shutdown(HOWS[call["how"]])
    elif op == "close":
        handles.pop(fd).close()
    elif op == "abort":
        handles[fd].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handles.pop(fd).close()
    elif op == "disconnect":
        unspec = struct.pack("=H14x", socket.AF_UNSPEC)
        if ctypes.CDLL(None, use_errno=True).connect(handles[fd].fileno(), unspec, len(unspec)) != 0:
            raise OSError(ctypes.get_errno(), "connect(AF_UNSPEC)")


def reach(workdir: str) -> dict[int, socket.socket]:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) != 0:
        sys.exit("cannot enter a new network namespace: run as root")
    with socket.socket() as s:  # bring lo up: SIOCGIFFLAGS, SIOCSIFFLAGS | IFF_UP
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, struct.pack("16sH14x", b"lo", 0)))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))
    os.chdir(workdir)
    handles: dict[int, socket.socket] = {}
    for serial, call in enumerate(SYSCALLS, 1):
        try:
            perform(handles, call, serial)
        except OSError:
            if call.get("error") is None:
                raise
        time.sleep(0.05)
    return handles


def report(handles: dict[int, socket.socket]) -> list[str]:
    """What each socket holds, ports named by label or by the handle that owns them."""
    owner: dict[tuple[int, int], str] = {}
    for handle, sock in handles.items():
        owner[(sock.type, sock.getsockname()[1])] = "h%d" % handle

    def port(kind: int, number: int) -> str:
        if number == 0:
            return "none"
        if 10000 < number < 32768:
            return ":%d" % (number - 10000)
        return owner.get((kind, number), "an ephemeral port")

    lines: list[str] = []
    for handle, sock in sorted(handles.items()):
        me, kind = "h%d" % handle, sock.type
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        try:
            peer = port(kind, sock.getpeername()[1])
        except OSError as e:
            peer = errno.errorcode.get(e.errno or 0, str(e.errno))
        state = ""
        if kind == socket.SOCK_STREAM:
            state = " " + TCP_STATES.get(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0], "?")
        lines.append("%s %s%s port=%s peer=%s error=%s" % (me, "TCP" if kind == socket.SOCK_STREAM else "UDP",
                     state, port(kind, sock.getsockname()[1]), peer, errno.errorcode.get(error, error)))
    # sockets no descriptor holds: from the namespace's own table
    with open("/proc/net/tcp") as f:
        for row in f.read().splitlines()[1:]:
            cols = row.split()
            if cols[9] != "0":
                continue
            local, remote = (int(a.split(":")[1], 16) for a in cols[1:3])
            lines.append("no descriptor: TCP %s port=%s peer=%s" % (
                TCP_STATES.get(int(cols[3], 16), cols[3]), port(socket.SOCK_STREAM, local),
                port(socket.SOCK_STREAM, remote)))
    lines.sort(key=lambda line: (not line.startswith("h"), line))
    for handle, sock in sorted(handles.items()):
        me = "h%d" % handle
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            while True:
                try:
                    child, (_, p) = sock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                lines.append("%s accepts a connection from %s" % (me, port(socket.SOCK_STREAM, p)))
                child.close()
            continue
        while True:
            try:
                data, source = sock.recvfrom(4096, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                lines.append("%s read error %s" % (me, errno.errorcode.get(e.errno or 0, e.errno)))
                break
            if not data:
                lines.append("%s end of stream" % me)
                break
            chunks = [data[i:i + PAYLOAD.size] for i in range(0, len(data), PAYLOAD.size)]
            for chunk in chunks:
                sender, serial = PAYLOAD.unpack(chunk) if len(chunk) == PAYLOAD.size else (-1, -1)
                origin = port(sock.type, source[1]) if source else "its peer"
                lines.append("%s reads payload %d of h%d (from %s)" % (me, serial, sender, origin))
    for handle, sock in sorted(handles.items()):  # last, as it changes queues: may it still send?
        try:
            sock.send(PAYLOAD.pack(0, 0), FLAGS)
            lines.append("h%d send: ok" % handle)
        except OSError as e:
            lines.append("h%d send: %s" % (handle, errno.errorcode.get(e.errno or 0, str(e.errno))))
    time.sleep(0.05)
    for handle, sock in sorted(handles.items()):  # and does what was sent arrive?
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            continue
        try:
            data = sock.recv(4096, socket.MSG_DONTWAIT)
            got = "%d bytes" % len(data) if data else "end of stream"
        except OSError as e:
            got = errno.errorcode.get(e.errno or 0, str(e.errno))
        lines.append("h%d then reads: %s" % (handle, got))
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
