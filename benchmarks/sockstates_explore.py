#!/usr/bin/env python3
"""How fast sockstates explores, and what the visited set buys.

Prints, measured in this run (nothing is asserted):
  * graph search (BFS over canonical states) on the spaces the issue names:
    stream-only abstract names to depth 20, and the closure for up to 3 live
    sockets of all types;
  * the same small space searched as a tree of all syscall sequences (no
    visited set), to the depth it can reach in a time budget, against the graph
    search to that depth;
  * --run speed: states performed and probed per second.

    .venv/bin/python benchmarks/sockstates_explore.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sockstates import actions, explore, model, run


def graph(bounds: actions.Bounds, depth: int | None) -> explore.Stats:
    stats = explore.Stats()
    for _ in explore.explore(bounds, depth, stats):
        pass
    return stats


def tree(bounds: actions.Bounds, depth: int, budget: float) -> tuple[int, int, float, bool]:
    """Every syscall sequence up to `depth`, no visited set: (sequences, distinct states, seconds, finished)."""
    start = time.perf_counter()
    seen: set[str] = set()
    sequences = 0
    stack = [(model.EMPTY, 0)]
    while stack:
        if time.perf_counter() - start > budget:
            return sequences, len(seen), time.perf_counter() - start, False
        state, d = stack.pop()
        sequences += 1
        seen.add(model.describe(state))
        if d < depth:
            stack.extend((nxt, d + 1) for _, nxt in actions.successors(state, bounds))
    return sequences, len(seen), time.perf_counter() - start, True


def line(label: str, stats: explore.Stats) -> None:
    bound = "closed" if stats.closed else "depth bound reached"
    print(f"{label:58s} {stats.states:8d} states {stats.transitions:9d} transitions "
          f"{stats.seconds:8.3f} s  ({bound})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the 3-socket closure (about a minute)")
    args = ap.parse_args()
    stream = ("S",)
    print("graph search (BFS, visited set of canonical descriptions), one core:")
    line("stream, abstract, 2 sockets, depth 20", graph(actions.Bounds(max_sockets=2, types=stream), 20))
    line("stream, abstract, 3 sockets, depth 20", graph(actions.Bounds(max_sockets=3, types=stream), 20))
    line("all types, abstract, 2 sockets, closure", graph(actions.Bounds(max_sockets=2), None))
    line("all types, abstract+path, 2 sockets, closure",
         graph(actions.Bounds(max_sockets=2, names=("abstract", "path")), None))
    if not args.quick:
        line("all types, abstract, 3 sockets, closure (defaults)", graph(actions.Bounds(max_sockets=3), None))

    print("\ntree search (every sequence, no visited set) against graph search, stream, 2 sockets:")
    bounds = actions.Bounds(max_sockets=2, types=stream)
    for depth in (4, 6, 8, 10):
        seqs, states, secs, done = tree(bounds, depth, budget=20.0)
        g = graph(bounds, depth)
        status = "" if done else f" (stopped after {secs:.0f} s, incomplete)"
        print(f"  depth {depth:2d}: tree {seqs:9d} sequences {states:5d} states {secs:7.3f} s{status}; "
              f"graph {g.states:5d} states {g.seconds:6.3f} s; ratio {secs / max(g.seconds, 1e-6):8.0f}x")
        if not done:
            break

    print("\n--run: perform and probe every state, stream+dgram+seqpacket, 3 sockets, depth 4:")
    found = list(explore.explore(actions.Bounds(max_sockets=3), 4))
    start = time.perf_counter()
    matched = sum(o.matches(f.description) for f, o in zip(found, run.run_many(f.syscalls for f in found),
                                                          strict=True))
    secs = time.perf_counter() - start
    print(f"  {len(found)} states, {matched} agree with the kernel, {secs:.1f} s, "
          f"{len(found) / secs:.0f} states/s with {os.cpu_count()} workers")


if __name__ == "__main__":
    main()
