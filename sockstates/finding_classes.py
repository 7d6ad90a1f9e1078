"""The CRIU failure classes sockstates has found, as data, and their pages with standalone reproducers.

Each class names one state that shows it (its shortest sequence comes from
the explorer), the CRIU its selftest runs the reproducer with and the exit
status that reproducer must give (1: restored differently, 2: refused or
crashed, 0: restored intact, for a class fixed in that version), and what is
known of it: where it fails, the newest CRIU we build, its status upstream.

    python -m sockstates.finding_classes docs/criu-findings     # (re)writes the pages and scripts

``selftests/functional/test_sockstates_finding_classes.py`` runs every
reproducer with the CRIU it names; a unit test checks the pages are what
this table renders.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from sockstates import actions, criu, criu_repro, explore
from sockstates.inet import rules as inet_rules

# where a class was seen: the guest's 3.17.1 on Debian's 6.1, the host's builds on 6.18
EVERYWHERE = "3.17.1 on 6.1 (guest), 4.1.1 and 4.2.1 on 6.18 (host)"
GUEST_AND_HOST = "3.17.1 on 6.1 (guest), 4.2.1 on 6.18 (host)"
HOST_ONLY = "4.2.1 on 6.18 (host); the guest not checked at this depth yet"

# Upstream status of a class: what a search of checkpoint-restore/criu's issues and pull requests found (2026-12)
UNREPORTED = "unreported: no issue or pull request of checkpoint-restore/criu describes it (searched 2026-12)"
UNHELD = "unreported as such (searched 2026-12): {} is held by no process, so CRIU never sees it"
UDP_QUEUE_STATUS = ("known limitation: checkpoint-restore/criu issue 1130 (the kernel has no API to refill a UDP "
                    "receive queue); pull request 1571 (UDP queues through a proposed UDP_REPAIR) is not merged")


@dataclass(frozen=True)
class FindingClass:
    slug: str
    title: str
    state: str
    depth: int  # the explorer finds the state within this depth (3 sockets)
    expected: str  # what the state should be after C/R
    actual: str  # what CRIU makes of it
    criu: str  # the CRIU the selftest runs the reproducer with: "4.1.1" (trixie) or "4.2.1" (sid)
    exit_status: int  # the reproducer's exit status with it
    fails_on: str
    upstream: str

    def found(self) -> explore.Found:
        inet = self.state[:1] in ("T", "U")
        bounds = inet_rules.Bounds(max_sockets=3) if inet else actions.Bounds(max_sockets=3)
        for f in explore.explore(bounds, self.depth):
            if f.description == self.state:
                return f
        raise LookupError(f"{self.state} is not within depth {self.depth}")


CLASSES: tuple[FindingClass, ...] = (
    FindingClass(
        "unix-socketpair-name", "A socketpair end bound to a name comes back unnamed", "SA-C2_SB@1-C1", 3,
        "the bound end still carries @1 (and a path name keeps its socket file)",
        "both ends unnamed (SA-C2_SA-C1); with a path name the socket file is deleted too",
        "4.1.1", 1, EVERYWHERE,
        "known limitation: bind_unix_sk() in criu/sk-unix.c does not bind connected non-datagram sockets "
        "(a FIXME there); criu.org's Sockets page says names are not preserved"),
    FindingClass(
        "unix-dead-datagram-peer", "A datagram socket whose peer is gone comes back unconnected", "DB@1-CX", 5,
        "still connected to its dead peer: send() fails with ECONNREFUSED, a stranger's sendto(@1) with EPERM",
        "unconnected (DB@1): send() fails with ENOTCONN, a stranger's datagram is accepted and queued",
        "4.1.1", 1, EVERYWHERE, UNREPORTED),
    FindingClass(
        "unix-pending-econnreset", "A pending ECONNRESET is lost", "SARW!-CX", 3,
        "SO_ERROR gives ECONNRESET (the peer closed with data unread)", "SO_ERROR gives 0 (SARW-CX)",
        "4.1.1", 1, EVERYWHERE, UNREPORTED + "; CRIU saves no pending socket error"),
    FindingClass(
        "unix-cant-find-sender", "criu restore refuses: Can't find sender", "DB@1-M1+1", 3,
        "a queued message carrying a descriptor whose sender is the receiver itself comes back",
        "CRIU 3.17.1 refuses the restore (\"unix: Can't find sender for N\"); 4.1.1 and 4.2.1 restore it intact",
        "4.1.1", 0, "3.17.1 on 6.1 (guest)", "fixed in 3.18 (commit 5cd7092fd)"),
    FindingClass(
        "unix-empty-list-crash", "criu restore crashes: Empty list on file desc id", "SA-C2-M2+2_S~A-C1", 3,
        "a socket whose only reference is a message in its own peer's queue comes back",
        "restore logs \"Empty list on file desc id\", hits BUG at criu/files.c:244, the restored task dies of SIGSEGV",
        "4.1.1", 2, EVERYWHERE, UNREPORTED),
    FindingClass(
        "inet-so-passcred", "CRIU 4.1 dumps no TCP or UDP socket on kernels >= 6.16", "U", 1,
        "a process holding a UDP (or TCP) socket is dumped",
        "criu dump refuses: \"sockets: Can't get 1:16 opt: Operation not supported\" (SO_PASSCRED, "
        "refused for inet sockets since Linux 6.16)",
        "4.1.1", 2, "4.1.1 on 6.18 (host; 3.17.1 on 6.1 and 4.2.1 on 6.18 dump them)",
        "fixed in 4.2 (checkpoint-restore/criu issues 2705 and 2718); 4.2.1 dumps them"),
    FindingClass(
        "inet-pending-error", "A pending TCP/UDP socket error is lost", "T:e.CLRW!f", 2,
        "a refused connect() leaves ECONNREFUSED pending (SO_ERROR); likewise ECONNRESET, EPIPE, and a "
        "connected UDP socket's ICMP error", "SO_ERROR gives 0 (T:e.CLRW)",
        "4.2.1", 1, GUEST_AND_HOST, UNREPORTED + "; like the unix class, CRIU saves no pending socket error"),
    FindingClass(
        "inet-in-flight-connection", "criu dump refuses a listener with a connection not yet accepted",
        "T:1.LI-I3_T:e.ES-C3_T~:1.ES-C2", 5,
        "the connection the kernel completed waits in the listener's queue and is accepted after restore",
        "criu dump refuses: \"inet: In-flight connection (l)\"", "4.2.1", 2, HOST_ONLY,
        "known limitation: an explicit refusal in criu/sk-inet.c"),
    FindingClass(
        "inet-half-closed-delivery", "A half-closed TCP connection no longer delivers",
        "T:1.CWR-C3_T:1.LI_T:e.F2W-C1", 7,
        "after shutdown(WR) on one end, the other end's send() arrives there",
        "after restore the bytes never arrive", "4.2.1", 1, HOST_ONLY, UNREPORTED),
    FindingClass(
        "inet-fin-wait2-orphan", "The FIN_WAIT2 orphan of a closed end is lost", "T:1.CWR-C3_T:1.LI_T~:e.F2-C1", 7,
        "the closed end lingers in FIN_WAIT2 and its close-wait peer stays connected to it",
        "the orphan is gone and the peer is connected to nobody (T:1.CWR-CX_T:1.LI)", "4.2.1", 1, HOST_ONLY,
        UNHELD.format("an orphan") + " (closing states of held sockets: checkpoint-restore/criu issues 62, 262)"),
    FindingClass(
        "inet-time-wait", "A TIME_WAIT socket is lost", "T:1.LI_T~:e.TW", 8,
        "the connection's TIME_WAIT socket stays (60 s)", "it is gone: its port pair is free at once",
        "4.2.1", 1, HOST_ONLY, UNHELD.format("a TIME_WAIT socket")),
    FindingClass(
        "inet-udp-queue", "Queued UDP datagrams are lost", "U:1-M1", 3,
        "the datagram waiting in the socket's receive queue is read after restore",
        "the queue is empty (U:1)", "4.2.1", 1, GUEST_AND_HOST, UDP_QUEUE_STATUS),
)


def script(cls: FindingClass) -> str:
    f = cls.found()
    result = criu.StateResult(0, f.description, f.depth, [str(c) for c in f.syscalls], verdict="failed",
                              stage="", reasons=[f"expected: {cls.expected}; CRIU: {cls.actual}"])
    text = criu_repro.render(result, criu.CriuConfig(criu="criu"))
    # no machine's criu path in a page: the script looks at its argument, $CRIU and PATH
    lines = ["CRIU_USED = None  # give criu as the argument or $CRIU" if line.startswith("CRIU_USED =")
             else line for line in text.splitlines()]
    return "\n".join(lines) + "\n"


def page(cls: FindingClass) -> str:
    f = cls.found()
    title = cls.title
    calls = "\n".join(f"    {c}" for c in f.syscalls)
    status = {0: "same (restored intact: fixed)", 1: "different", 2: "CRIU refused or crashed"}[cls.exit_status]
    return f"""{title}
{"=" * len(title)}

State ``{cls.state}``, reached by::

{calls}

:Expected: {cls.expected}
:CRIU: {cls.actual}
:Fails with: CRIU {cls.fails_on}
:Newest CRIU we build: 4.2.1 (Debian sid's source, ``python3 -m avocado_iofuzz.guest.host_criu --suite sid``)
:Upstream: {cls.upstream}

Reproducer: `{cls.slug}.py <{cls.slug}.py>`_ (python3, root, nothing of this project). It
performs the calls twice in fresh network namespaces, once straight through
and once with ``criu dump`` / ``criu restore`` in between, and prints both
views and their difference::

    python3 {cls.slug}.py /path/to/criu        # or CRIU=/path/to/criu python3 {cls.slug}.py

With CRIU {cls.criu} its exit status is {cls.exit_status} ({status});
``selftests/functional/test_sockstates_finding_classes.py`` checks that.
"""


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    index = ["CRIU findings", "=============", "", "One page per class of loss sockstates --criu found, each with",
             "a standalone reproducer.", "", ".. toctree::", ""]
    for cls in CLASSES:
        for name, text in ((f"{cls.slug}.rst", page(cls)), (f"{cls.slug}.py", script(cls))):
            (directory / name).write_text(text)
            written.append(directory / name)
        index.append(f"   {cls.slug}")
    (directory / "index.rst").write_text("\n".join(index) + "\n")
    return [*written, directory / "index.rst"]


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/criu-findings")):
        print(path)
