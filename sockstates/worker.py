"""A small process that runs sequences on request: one JSON line in (syscall
lines), one JSON line out (the outcome).

`run.run_many` talks to a few of these instead of forking from the caller:
forking a big process (an explorer holding every state, a test runner) costs
far more than forking this one.  The text protocol is also what a runner
inside a guest can speak.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from sockstates import run
from sockstates.syscall import parse_line


def serve(lines, out) -> None:
    for line in lines:
        if not line.strip():
            continue
        request = json.loads(line)
        calls = [parse_line(c) for c in request["calls"]]
        outcome = run.run_sequence(calls, timeout=request.get("timeout", 10.0),
                                   strict=request.get("strict", True))
        reply = asdict(outcome)
        reply["descriptions"] = sorted(outcome.descriptions)
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    run.enter_private_netns()
    serve(sys.stdin, sys.stdout)
