"""The process CRIU dumps and restores for `--criu`: reach a state, wait, check what came back.

Started by `criu` as ``python3 -S -m sockstates.criu_target WORKDIR`` in a
session of its own with no terminal (CRIU cannot dump a process holding the
console), it reads the sequence from ``WORKDIR/sequence.json``, enters a
network namespace of its own, performs the calls in ``WORKDIR/names`` with the
runner's executor, and writes ``ready.json``: its pid, the inode of every
socket it created and every message it sent. Then it waits, holding nothing
but its sockets, until ``WORKDIR/go`` appears — by then it has been dumped,
killed and restored — and checks itself:

* its sockets are described by the same probe as ``--run``, with one
  translation: a message's payload names its sender by inode, and restored
  sockets have new inodes, so senders are mapped old inode → socket handle →
  new inode (a handle's new inode comes from its descriptor, or, for a socket
  in flight, from the message that carries it);
* every message read back must be byte for byte one that was sent, each
  queue in the order of sending, none twice;
* every connected pair still delivers: a fresh message from each end that may
  send arrives at the other.

The verdict goes to ``result.json``; the driver (`criu`) compares it with the
view of a twin that performed the same sequence without C/R.
"""

from __future__ import annotations

import array
import errno
import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path

from sockstates import canon, netlink, probe, run, strangers
from sockstates.syscall import parse_line

GO_POLL_SECONDS = 0.01
PING = b"sockstates-criu-ping"


def write_json(path: Path, data: dict) -> None:
    """Write, then rename: the driver never reads half a file."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def reach(workdir: Path) -> tuple[run.SyscallExecutor, dict]:
    spec = json.loads((workdir / "sequence.json").read_text())
    syscalls = [parse_line(line) for line in spec["syscalls"]]
    run.unshare_net()
    os.chdir(workdir / "names")
    ex = run.SyscallExecutor()
    inodes: dict[int, int] = {}
    sends: dict[int, dict] = {}
    mismatches: list[str] = []
    for step, call in enumerate(syscalls, 1):
        sender_ino = os.fstat(ex.sock(call.handle).fileno()).st_ino if call.op in ("send", "sendto") else None
        try:
            ex.perform(call)
            got = None
        except OSError as e:
            got = errno.errorcode.get(e.errno or 0, str(e.errno))
        if got != call.error:
            mismatches.append(f"step {step} {call}: kernel said {got or 'success'}, expected {call.error or 'success'}")
            break
        for handle in call.result:
            inodes[handle] = os.fstat(ex.handles[handle].fileno()).st_ino
        if sender_ino is not None:
            sends[ex.serial] = {
                "sender": call.fd,
                "passes": call.passes,
                "payload": probe.PAYLOAD.pack(sender_ino, ex.serial).hex(),
                "delivered": got is None,
            }
    return ex, {"pid": os.getpid(), "inodes": inodes, "sends": sends, "mismatches": mismatches}


class _RecordingReader(probe.SocketReader):
    """The probe's reader, keeping each message's serial and raw bytes too."""

    def __init__(self) -> None:
        super().__init__()
        self.raw: dict[int, list[tuple[bytes, int | None]]] = {}  # inode -> (payload, carried inode)

    def _drain(self, ino: int, sock: socket.socket) -> list[tuple[int, int | None]]:
        out = []
        raw = self.raw.setdefault(ino, [])
        fd_size = socket.CMSG_SPACE(array.array("i").itemsize * 4)
        while True:
            try:
                data, anc, _flags, _addr = sock.recvmsg(probe.PAYLOAD.size, fd_size)
            except BlockingIOError:
                break
            except OSError as e:
                self.notes.append(f"reading queue of inode {ino}: {errno.errorcode.get(e.errno or 0, e.errno)}")
                break
            if not data:
                break
            carried = None
            for fd in probe.passed_fds(anc):
                carried = self.visit(socket.socket(fileno=fd))
            raw.append((data, carried))
            if len(data) == probe.PAYLOAD.size:
                sender, _serial = probe.PAYLOAD.unpack(data)
                out.append((sender, carried))
        return out


def check_messages(reader: _RecordingReader, sends: dict[int, dict]) -> list[str]:
    """Every message must be one that was sent, unchanged, in order, once."""
    problems = []
    seen: set[int] = set()
    for ino, messages in sorted(reader.raw.items()):
        last = 0
        for data, _carried in messages:
            if len(data) != probe.PAYLOAD.size:
                problems.append(f"socket inode {ino}: {len(data)} bytes ({data[:32].hex()}) that were never sent")
                continue
            _sender, serial = probe.PAYLOAD.unpack(data)
            sent = sends.get(serial)
            if sent is None or not sent["delivered"]:
                problems.append(f"socket inode {ino}: message {data.hex()} does not match any message sent")
                continue
            if data.hex() != sent["payload"]:
                problems.append(f"socket inode {ino}: message {serial} is {data.hex()}, was {sent['payload']}")
            if serial in seen:
                problems.append(f"socket inode {ino}: message {serial} came back twice")
            if serial < last:
                problems.append(f"socket inode {ino}: message {serial} came back after message {last}")
            seen.add(serial)
            last = max(last, serial)
    return problems


def translate_senders(reader: _RecordingReader, before: dict, now_by_handle: dict[int, int]) -> None:
    """Rewrite the senders in the reader's queues from pre-dump inodes to restored ones."""
    sends = before["sends"]
    new_by_handle = dict(now_by_handle)
    for messages in reader.raw.values():
        for data, carried in messages:
            if carried is None or len(data) != probe.PAYLOAD.size:
                continue
            sent = sends.get(probe.PAYLOAD.unpack(data)[1])
            if sent is not None and sent["passes"] is not None:
                new_by_handle.setdefault(sent["passes"], carried)
    old_to_new = {old: new_by_handle[h] for h, old in before["inodes"].items() if h in new_by_handle}
    for ino, queue in reader.queues.items():
        reader.queues[ino] = [(old_to_new.get(sender, sender), carried) for sender, carried in queue]


def check_reachability(reader: _RecordingReader, diag: dict[int, netlink.DiagSocket]) -> list[str]:
    """A fresh message from each end of a connection that may send must arrive at the other."""
    problems = []
    for ino, sock in sorted(reader.socks.items()):
        d = diag.get(ino)
        if d is None or not d.peer or d.peer not in reader.socks or d.peer not in diag:
            continue
        p = diag[d.peer]
        if d.shutdown & 2 or p.shutdown & 1:
            continue  # we may not send, or the peer may not receive
        if d.type in ("S", "P"):
            if p.peer != ino:
                continue  # a connection's ends point at each other
        elif p.peer and p.peer != ino:
            continue  # a datagram socket connected elsewhere accepts nothing from us
        try:
            sock.send(PING, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except OSError as e:
            problems.append(f"socket inode {ino} ({d.type}) cannot send to its peer {d.peer}: "
                            f"{errno.errorcode.get(e.errno or 0, e.errno)}")
            continue
        try:
            got = reader.socks[d.peer].recv(len(PING) + 16, socket.MSG_DONTWAIT)
        except OSError as e:
            got = errno.errorcode.get(e.errno or 0, str(e.errno)).encode()
        if got != PING:
            problems.append(f"socket inode {ino} ({d.type}) sent to its peer {d.peer}, which read {got!r}")
    return problems


def verify(ex: run.SyscallExecutor, before: dict, names_dir: Path, syscalls: list) -> dict:
    now_by_handle = {h: os.fstat(s.fileno()).st_ino for h, s in ex.handles.items()}
    reader = _RecordingReader()
    with_fd = {reader.visit(s) for s in ex.handles.values()}
    diag = {d.ino: d for d in netlink.dump_unix()}
    translate_senders(reader, before, now_by_handle)
    files = probe.socket_files(str(names_dir))
    descriptions = sorted(
        {canon.describe(probe.snapshot_of(diag, reader, with_fd, files, holders))
         for holders in probe.abstract_holders(diag, reader)}
    )
    return {
        "descriptions": descriptions,
        "messages": check_messages(reader, before["sends"]),
        "reachability": check_reachability(reader, diag),
        "notes": reader.notes,
        "strangers": strangers.reach(syscalls, run.address),  # last: it may queue a datagram
    }


def main(argv: list[str]) -> int:
    workdir = Path(argv[0])
    try:
        ex, before = reach(workdir)
    except Exception as e:
        write_json(workdir / "ready.json", {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()})
        return 1
    write_json(workdir / "ready.json", before)
    if before["mismatches"]:
        return 0
    go = workdir / "go"
    while not go.exists():
        time.sleep(GO_POLL_SECONDS)
    try:
        spec = json.loads((workdir / "sequence.json").read_text())
        result = verify(ex, before, workdir / "names", [parse_line(line) for line in spec["syscalls"]])
    except OSError as e:  # a restored socket that does not behave: CRIU's doing
        result = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc(), "os_error": True}
    except Exception as e:  # our own bug: not a finding about CRIU
        result = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc(), "os_error": False}
    write_json(workdir / "result.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
