"""Grouping `--criu` failures by reason, so a sweep's findings read as a short list.

A state's result names what went wrong in words that carry specifics (inode
numbers, pids, the states' descriptions, CRIU's source lines). The group of a
failure keeps the kind and drops the specifics: for a dump or restore, the
cause `criu_log.fatal` found (a BUG and a crash, or the first error a
successful run does not log too; older records: CRIU's first error line);
for a restored state that differs, which features of the description were
lost or gained (e.g. ``peer gone (-CX) lost``); for a broken message or
connection, the check that failed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from sockstates import canon
from sockstates.inet import canon as inet_canon

TYPE_WORDS = {"S": "stream", "D": "datagram", "P": "seqpacket"}
CRIU_ERROR = re.compile(r"Error \(([^)]*)\):\s*(.*)")
NUMBERS = re.compile(r"\b\d+\b|0x[0-9a-f]+")


INET_STATES = {"CL": "closed", "LI": "listening", "ES": "established", "CW": "close-wait", "F2": "fin-wait-2",
               "TW": "time-wait"}


def inet_features(description: str) -> Counter[str]:
    """The features of a TCP/UDP state: sockets by protocol and TCP state, orphans, errors, peers, queues."""
    counts: Counter[str] = Counter()
    for f in inet_canon.parse(description).values():
        proto = "TCP" if f.proto == "T" else "UDP"
        counts[f"{proto} socket" + (f" {INET_STATES[f.state]} (.{f.state})" if f.state else "")] += 1
        counts["socket without descriptor (~)"] += f.fdless
        counts["ephemeral port (:e)"] += f.port == inet_canon.EPHEMERAL
        counts["shut for reading (R)"] += bool(f.shut & 1)
        counts["shut for writing (W)"] += bool(f.shut & 2)
        if f.error:
            counts[f"pending {inet_canon.ERRORS[f.error]} (!{f.error})"] += 1
        if f.peer == inet_canon.DEAD:
            counts["peer nobody holds (-CX)"] += 1
        elif f.peer is not None:
            counts["peer (-C)"] += 1
        counts["pending connection (-I)"] += len(f.icons)
        counts["unread TCP data (-Q)" if f.proto == "T" else "queued datagram (-M)"] += len(f.queue)
    return +counts


def features(description: str) -> Counter[str]:
    """How many times each feature appears in a state: sockets by type, names, flags, links, messages."""
    if inet_canon.is_inet(description):
        return inet_features(description)
    snap = canon.parse(description)
    counts: Counter[str] = Counter()
    for f in snap.socks.values():
        counts[f"{TYPE_WORDS[f.type]} socket"] += 1
        if f.fdless:
            counts["socket without descriptor (~)"] += 1
        if f.name is not None:
            kind = "abstract name" if f.name.kind == "@" else "path name"
            counts[f"{kind} {'reached (B)' if f.reached else 'only carried (b)'}"] += 1
        for flag, name in ((f.listening, "listening (L)"), (f.established, "established datagram (E)"),
                           (f.shut_rd, "shut for reading (R)"), (f.shut_wr, "shut for writing (W)"),
                           (f.error, "pending error (!)")):
            counts[name] += bool(flag)
        if f.peer == canon.DEAD:
            counts["peer gone (-CX)"] += 1
        elif f.peer is not None:
            counts["peer (-C)"] += 1
        counts["pending connection (-I)"] += len(f.icons)
        for m in f.queue:
            counts["queued message (-M)"] += 1
            counts["descriptor in flight (+)"] += m.carried is not None
            counts["message from a gone sender (X)"] += m.sender == canon.DEAD
    counts["socket file of a gone socket (F)"] += len(snap.files) - sum(
        1 for f in snap.socks.values() if f.name is not None and f.name.kind == "/" and f.reached)
    return +counts


def difference(before: str, after: str) -> str:
    """What a restored description lost and gained, in feature names."""
    was, now = features(before), features(after)
    lost = sorted((was - now).elements())
    gained = sorted((now - was).elements())
    parts = []
    if lost:
        parts.append(", ".join(sorted(set(lost))) + " lost")
    if gained:
        parts.append(", ".join(sorted(set(gained))) + " gained")
    return "; ".join(parts) or "same features, different structure"


def criu_error(log_lines: Iterable[str], which: str) -> str:
    """The first CRIU error message in ``which``'s log (dump or restore), numbers blanked."""
    for line in log_lines:
        if not line.startswith(f"{which}.log:"):
            continue
        match = CRIU_ERROR.search(line)
        if match:
            where = re.sub(r":\d+$", "", match.group(1))
            return f"{where}: {NUMBERS.sub('N', match.group(2)).strip()}"
    return "no error line in its log"


def group(result: Mapping[str, Any]) -> str:
    """The reason group of one failed or erroneous state (a ``results.jsonl`` record)."""
    stage = result.get("stage") or "?"
    reasons = result.get("reasons") or [""]
    if result.get("verdict") == "error":
        return f"error at {stage}: {NUMBERS.sub('N', reasons[0]).split(':')[0]}"
    if stage in ("dump", "restore") and result.get("criu_failure"):
        # the cause criu_log.fatal read from the whole log (records from before it was kept fall through)
        return f"{stage} {'crashed' if result.get('crashed') else 'refused'}: {result['criu_failure']}"
    if stage in ("dump", "restore"):
        return f"{stage} refused: {criu_error(result.get('log_lines', ()), stage)}"
    if stage == "verify":
        first = reasons[0]
        if first.startswith("restored as") and result.get("before") and result.get("after"):
            return "restored differently: " + difference(result["before"][0], result["after"][0])
        if "cannot send" in first or "which read" in first:
            return "a connection no longer delivers"
        if "message" in first:
            return "messages changed"
        return "restored target failed: " + NUMBERS.sub("N", first)[:80]
    return f"{stage}: {NUMBERS.sub('N', reasons[0])[:80]}"


def grouped(results: Iterable[Mapping[str, Any]]) -> list[tuple[str, int, list[str]]]:
    """(group, how many states, up to 3 example descriptions), most frequent first."""
    members: dict[str, list[str]] = {}
    for result in results:
        if result.get("verdict") in ("failed", "error"):
            members.setdefault(group(result), []).append(result["description"])
    return sorted(((g, len(d), d[:3]) for g, d in members.items()), key=lambda item: (-item[1], item[0]))
