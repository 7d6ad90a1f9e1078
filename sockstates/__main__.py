"""sockstates: every state of AF_UNIX (and TCP/UDP loopback) sockets that a few syscalls can reach.

    python -m sockstates --gen --depth 6            # states and their shortest sequences
    python -m sockstates --run --depth 4 --types stream
    python -m sockstates --stats --closure --max-sockets 2
    python -m sockstates --state 'SB@1L-I2_S~b@1-C3_SA-C2' --run
    python -m sockstates --run --types tcp,udp --depth 4
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from sockstates import actions, canon, criu_cli, explore
from sockstates import run as runner
from sockstates.inet import canon as inet_canon
from sockstates.inet import rules as inet_rules

TYPE_WORDS = {"stream": "S", "dgram": "D", "datagram": "D", "seqpacket": "P", "S": "S", "D": "D", "P": "P",
              "tcp": "T", "udp": "U", "T": "T", "U": "U"}
ALL_TYPES = actions.ALL_TYPES + inet_rules.ALL_TYPES
NAME_WORDS = ("abstract", "path")


def _types(text: str) -> tuple[str, ...]:
    out = []
    for word in filter(None, (w.strip() for w in text.split(","))):
        if word not in TYPE_WORDS:
            raise argparse.ArgumentTypeError(f"unknown socket type {word!r}: use stream, dgram, seqpacket, tcp, udp")
        if TYPE_WORDS[word] not in out:
            out.append(TYPE_WORDS[word])
    if not out:
        raise argparse.ArgumentTypeError("no socket type given")
    return tuple(t for t in ALL_TYPES if t in out)


def _names(text: str) -> tuple[str, ...]:
    words = [w.strip() for w in text.split(",") if w.strip()]
    for w in words:
        if w not in NAME_WORDS:
            raise argparse.ArgumentTypeError(f"unknown name kind {w!r}: use abstract, path")
    if not words:
        raise argparse.ArgumentTypeError("no name kind given")
    return tuple(n for n in NAME_WORDS if n in words)


def _natural(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sockstates",
        description="Enumerate the states of AF_UNIX sockets (or TCP/UDP on loopback) a bounded number of syscalls can "
                    "reach, each once with a shortest syscall sequence; optionally perform each "
                    "sequence and compare with the kernel's own view.")
    mode = p.add_argument_group("modes (default --gen)")
    mode.add_argument("--gen", action="store_true", help="print each state and its syscalls")
    mode.add_argument("--run", action="store_true",
                      help="perform each state's syscalls in a fresh child and compare the kernel's view")
    mode.add_argument("--stats", action="store_true", help="print states per depth and time")
    b = p.add_argument_group("bounds")
    b.add_argument("--depth", type=_natural, default=6, help="syscalls per sequence (default 6)")
    b.add_argument("--closure", action="store_true", help="no depth bound: search until no new state")
    b.add_argument("--max-sockets", type=_natural, default=3,
                   help="live sockets, counting pending and in-flight ones (default 3)")
    b.add_argument("--types", type=_types, default=actions.ALL_TYPES,
                   help="socket types: stream,dgram,seqpacket (unix; default all three), tcp,udp (loopback)")
    b.add_argument("--names", type=_names, default=("abstract",),
                   help="name kinds bind() uses: abstract,path (default abstract)")
    b.add_argument("--max-queue", type=_natural, default=1, help="messages per receive queue (default 1)")
    b.add_argument("--max-inflight", type=_natural, default=1,
                   help="descriptors in flight (SCM_RIGHTS) at once; 0: none (default 1)")
    b.add_argument("--shutdown-any", action="store_true",
                   help="also shutdown() sockets without a connection (datagram, unconnected, listening)")
    p.add_argument("--state", metavar="DESCRIPTION",
                   help="only this state (any spelling of it; it must be within the bounds)")
    p.add_argument("--jobs", type=_natural, default=0, help="children at once for --run (default: CPUs)")
    criu_cli.add_arguments(p, mode)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        spaces = _spaces(args)
    except (actions.BoundsError, inet_rules.BoundsError) as e:
        parser.error(str(e))
    wanted = None
    if args.state is not None:
        try:
            wanted = (inet_canon.canonical if inet_canon.is_inet(args.state) else canon.canonical)(args.state)
        except (canon.DescriptionError, inet_canon.DescriptionError) as e:
            parser.error(f"--state: {e}")
    if not (args.gen or args.run or args.stats or args.criu):
        args.gen = True
    depth = None if args.closure else args.depth
    stats = [explore.Stats() for _ in spaces]
    found = _explore_all(spaces, depth, stats)
    hits: list[explore.Found] = []
    if wanted is not None:
        found = _only(found, wanted, hits)
    out = sys.stdout
    status = 0
    found = criu_cli.only_shard(found, args)
    if args.criu:
        status = criu_cli.run(found, args, out)
    elif args.run:
        status = _run(found, args.jobs, out)
    elif args.gen:
        for f in found:
            _print_state(f, out)
    else:
        for _ in found:
            pass
    if wanted is not None and not hits:
        print(f"sockstates: state {wanted} is not within these bounds", file=sys.stderr)
        status = status or 1
    if args.stats:
        for one in stats:
            _print_stats(one, depth, out)
    return status


def _spaces(args: argparse.Namespace) -> list[Any]:
    """The unix space and the TCP/UDP space the types ask for (either or both, unix first)."""
    spaces: list[Any] = []
    unix = tuple(t for t in args.types if t in actions.ALL_TYPES)
    inet = tuple(t for t in args.types if t in inet_rules.ALL_TYPES)
    if unix:
        spaces.append(actions.Bounds(
            max_sockets=args.max_sockets, types=unix, names=args.names,
            max_queue=args.max_queue, max_inflight=args.max_inflight,
            shutdown_any=args.shutdown_any))
    if inet:
        spaces.append(inet_rules.Bounds(max_sockets=args.max_sockets, types=inet, max_queue=args.max_queue))
    return spaces


def _explore_all(spaces: list[Any], depth: int | None, stats: list[explore.Stats]) -> Iterator[explore.Found]:
    """Each space in turn; the empty state, which every space starts from, once."""
    seen_empty = False
    searches = (explore.explore(b, depth, s) for b, s in zip(spaces, stats, strict=True))
    for found in itertools.chain.from_iterable(searches):
        if found.depth == 0:
            if seen_empty:
                continue
            seen_empty = True
        yield found


def _only(found: Iterator[explore.Found], wanted: str, hits: list) -> Iterator[explore.Found]:
    for f in found:
        if f.description == wanted:
            hits.append(f)
            yield f
            return  # each state is found once


def _print_state(f: explore.Found, out) -> None:
    print(f.description, file=out)
    for call in f.syscalls:
        print(f"    {call}", file=out)


def _run(found, jobs: int, out) -> int:
    start = time.perf_counter()
    states: list[explore.Found] = []

    def sequences():
        for f in found:
            states.append(f)
            yield f.syscalls

    counts = {"match": 0, "mismatch": 0, "error": 0, "out of scope": 0}
    for i, outcome in enumerate(runner.run_many(sequences(), jobs=jobs)):
        f = states[i]
        _print_state(f, out)
        if outcome.error:
            verdict = "error"
            print(f"    => ERROR: {outcome.error}", file=out)
        elif outcome.matches(f.description):
            verdict = "match"
            print("    => kernel agrees", file=out)
        else:
            verdict = "mismatch"
            print("    => MODEL BUG: kernel says " + " or ".join(sorted(outcome.descriptions)), file=out)
            for m in outcome.call_mismatches:
                print(f"       {m}", file=out)
        for note in outcome.notes:
            print(f"       note: {note}", file=out)
        counts[verdict] += 1
    total = sum(counts.values())
    print(f"run: {total} states, {counts['match']} match, {counts['mismatch']} model bugs, "
          f"{counts['error']} errors in {time.perf_counter() - start:.1f} s", file=out)
    return 0 if counts["match"] == total else 1


def _print_stats(stats: explore.Stats, depth: int | None, out) -> None:
    bound = "closure" if depth is None else f"depth {depth}"
    for d, n in enumerate(stats.per_depth):
        print(f"# depth {d}: {n} states", file=out)
    closed = "closed" if stats.closed else "not closed"
    print(f"# {stats.states} states, {stats.transitions} transitions, {bound} ({closed}), "
          f"{stats.seconds:.3f} s", file=out)


if __name__ == "__main__":
    sys.exit(main())
