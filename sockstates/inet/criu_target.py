"""The process CRIU dumps and restores for a TCP/UDP state: reach it, wait, check what came back.

The same protocol as the unix target (`sockstates.criu_target`): started in a
session of its own as ``python3 -S -m sockstates.inet.criu_target WORKDIR``,
it reads ``WORKDIR/sequence.json``, enters a network namespace of its own
with only ``lo`` up, performs the calls (settling after each, as ``--run``
does) and writes ``ready.json``. Once ``WORKDIR/go`` appears (it has been
dumped, killed and restored by then) it checks itself and writes
``result.json``:

* its state described by the same probe as ``--run`` (inet_diag after the
  view settled), for the driver to compare with a twin's;
* every byte waiting in a TCP socket and every datagram waiting in a UDP one
  is a payload that was sent, each queue in the order of sending, none twice;
* every connection, and every connected UDP socket whose peer takes from it,
  still delivers: a fresh payload sent at one end arrives at the other.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path

from sockstates.criu_target import write_json
from sockstates.inet import diag, probe
from sockstates.inet import run as inet_run
from sockstates.inet.netns import enter_loopback_netns
from sockstates.syscall import parse_line

GO_POLL_SECONDS = 0.01
PING = b"sockstates-ping!"  # as long as a payload, so queues stay whole payloads


def reach(workdir: Path) -> tuple[inet_run.Executor, dict]:
    spec = json.loads((workdir / "sequence.json").read_text())
    syscalls = [parse_line(line) for line in spec["syscalls"]]
    enter_loopback_netns()
    ex = inet_run.Executor()
    sent: dict[str, str] = {}  # payload (hex) -> the handle that sent it
    mismatches: list[str] = []
    for step, call in enumerate(syscalls, 1):
        try:
            ex.perform(call)
            got = None
        except OSError as e:
            got = errno.errorcode.get(e.errno or 0, str(e.errno))
        inet_run.settle(ex.handles)
        if got != call.error:
            mismatches.append(f"step {step} {call}: kernel said {got or 'success'}, expected {call.error or 'success'}")
            break
        if call.op in ("send", "sendto") and got is None:
            sent[probe.PAYLOAD.pack(call.fd, ex.serial).hex()] = str(call.fd)
    return ex, {"pid": os.getpid(), "sent": sent, "mismatches": mismatches}


def _read_all(sock: socket.socket) -> tuple[bytes, str | None]:
    data = b""
    while True:
        try:
            chunk = sock.recv(4096, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return data, None
        except OSError as e:
            return data, errno.errorcode.get(e.errno or 0, str(e.errno))
        if not chunk:
            return data, None
        data += chunk


def check_tcp_queues(handles: dict[int, socket.socket], sent: dict[str, str]) -> list[str]:
    """TCP bytes waiting: whole payloads that were sent, in order, none twice."""
    problems = []
    for handle, sock in sorted(handles.items()):
        if sock.type != socket.SOCK_STREAM or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            continue
        data, error = _read_all(sock)
        if error and error not in ("ENOTCONN", "ECONNRESET", "EPIPE"):
            problems.append(f"handle {handle}: reading its queue: {error}")
        problems += _check_payloads(f"handle {handle}", [data[i:i + probe.PAYLOAD.size]
                                                          for i in range(0, len(data), probe.PAYLOAD.size)], sent)
    return problems


def _check_payloads(where: str, payloads: list[bytes], sent: dict[str, str]) -> list[str]:
    problems, last = [], 0
    for data in payloads:
        if data.hex() not in sent:
            problems.append(f"{where}: {len(data)} bytes {data[:32].hex()} that were never sent")
            continue
        serial = probe.PAYLOAD.unpack(data)[1]
        if serial <= last:
            problems.append(f"{where}: payload {serial} came back after payload {last}")
        last = max(last, serial)
    return problems


def verify(ex: inet_run.Executor, before: dict) -> dict:
    inet_run.settle(ex.handles)
    datagrams: dict[int, list[bytes]] = {}  # the probe's read of the UDP queues is the only one there is
    view = probe.probe(dict(ex.handles), datagrams)
    problems = []
    for handle, payloads in sorted(datagrams.items()):
        problems += _check_payloads(f"handle {handle}", payloads, before["sent"])
    problems += check_tcp_queues(ex.handles, before["sent"])
    return {"descriptions": sorted(view.descriptions), "messages": problems,
            "reachability": check_reachability(ex.handles), "notes": view.notes}


def check_reachability(handles: dict[int, socket.socket]) -> list[str]:
    """A fresh payload from each connected end that may send must arrive at the other end."""
    by_inode = {os.fstat(s.fileno()).st_ino: (h, s) for h, s in handles.items()}
    table = {d.inode: d for d in diag.dump_all() if d.inode}
    problems = []
    for ino, (handle, sock) in sorted(by_inode.items()):
        d = table.get(ino)
        if d is None or d.shutdown & 2 or d.dport == 0 or d.state not in (1, 8):  # ES or CW, may send
            continue
        if d.proto == "T":  # the other end: the same ports, swapped
            peer_ino = next((i for i, p in table.items()
                             if p.proto == "T" and (p.sport, p.dport) == (d.dport, d.sport)), None)
        else:  # whoever holds the port connected to, if it takes from us
            peer_ino = next((i for i, p in table.items() if p.proto == "U" and p.sport == d.dport), None)
            if peer_ino is not None and table[peer_ino].dport not in (0, d.sport):
                continue
        if peer_ino not in by_inode or table[peer_ino].shutdown & 1:
            continue  # no descriptor to read with, or shut for reading
        peer_handle, peer = by_inode[peer_ino]
        try:
            sock.send(PING, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except OSError as e:
            problems.append(f"handle {handle} cannot send to handle {peer_handle}: "
                            f"{errno.errorcode.get(e.errno or 0, e.errno)}")
            continue
        deadline = time.monotonic() + 1.0
        got = b""
        while time.monotonic() < deadline and len(got) < len(PING):
            try:
                got += peer.recv(len(PING) - len(got), socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                time.sleep(0.005)
            except OSError as e:
                got = errno.errorcode.get(e.errno or 0, str(e.errno)).encode()
                break
        if got != PING:
            problems.append(f"handle {handle} sent to handle {peer_handle}, which read {got!r}")
    return problems


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
        result = verify(ex, before)
    except OSError as e:  # a restored socket that does not behave: CRIU's doing
        result = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc(), "os_error": True}
    except Exception as e:  # our own bug: not a finding about CRIU
        result = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc(), "os_error": False}
    write_json(workdir / "result.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
