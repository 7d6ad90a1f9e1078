"""Completeness against the kernel: random syscall sequences, whatever they do,
end in a state the explorer generates within as many steps.

The sequences are drawn without the model's preconditions (calls may fail,
repeat themselves, use sockets already closed); the real kernel performs them
and the probe describes the result.  Sequences whose result lies outside the
bounds of the reference space (more sockets, longer queues, more descriptors in
flight) or that leave garbage the kernel frees lazily are discarded, as the
model's scope says.
"""

import functools

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sockstates import actions, canon, explore, run
from sockstates.syscall import Syscall

MAX_LEN = 6
REFERENCE = actions.Bounds(max_sockets=3, names=("abstract", "path"), max_queue=2, max_inflight=1,
                           shutdown_any=True)
NAMES = ["@1", "@1", "/1", "/1", "@2", "/2"]  # few names, so calls meet
CREATE = ("socket", "socketpair")
USE = ("bind", "listen", "connect", "accept", "send", "sendto", "shutdown", "close", "unlink")


@functools.cache
def reference() -> dict[str, int]:
    """Every state within MAX_LEN steps, with the depth it is first reached at."""
    return {f.description: f.depth for f in explore.explore(REFERENCE, MAX_LEN)}


@st.composite
def sequences(draw) -> list[Syscall]:
    """Random calls on the sockets created so far (handles numbered in creation
    order, as the runner expects), with no regard for whether they can succeed.
    Names to connect, send to or unlink are mostly ones the sequence bound, so
    that calls meet often enough to matter."""
    out: list[Syscall] = []
    made = 0
    bound: list[str] = []
    for _ in range(draw(st.integers(1, MAX_LEN))):
        op = draw(st.sampled_from(CREATE if made == 0 else CREATE + USE + USE))
        handle = draw(st.integers(1, made)) if made else None
        used = draw(st.sampled_from(bound)) if bound and draw(st.integers(0, 3)) else draw(st.sampled_from(NAMES))
        if op == "socket":
            made += 1
            out.append(Syscall(op, type=draw(st.sampled_from("SDP")), result=(made,)))
        elif op == "socketpair":
            made += 2
            out.append(Syscall(op, type=draw(st.sampled_from("SDP")), result=(made - 1, made)))
        elif op == "accept":
            made += 1
            out.append(Syscall(op, fd=handle, result=(made,)))
        elif op == "bind":
            name = draw(st.sampled_from(NAMES))
            bound.append(name)
            out.append(Syscall(op, fd=handle, name=name))
        elif op == "connect":
            out.append(Syscall(op, fd=handle, name=used))
        elif op in ("send", "sendto"):
            passes = draw(st.none() | st.integers(1, made))
            out.append(Syscall(op, fd=handle, name=used if op == "sendto" else None, passes=passes))
        elif op == "shutdown":
            out.append(Syscall(op, fd=handle, how=draw(st.sampled_from(["RD", "WR", "RDWR"]))))
        elif op == "unlink":
            out.append(Syscall(op, name=used if used.startswith("/") else "/1"))
        else:
            out.append(Syscall(op, fd=handle))
    return out


def _within_bounds(description: str) -> bool:
    snap = canon.parse(description)
    inflight = sum(m.carried is not None for f in snap.socks.values() for m in f.queue)
    return (len(snap.socks) <= REFERENCE.max_sockets and inflight <= REFERENCE.max_inflight
            and all(len(f.queue) <= REFERENCE.max_queue for f in snap.socks.values()))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences())
def test_random_sequences_end_in_generated_states(calls):
    outcome = run.run_sequence(calls, strict=False)
    assert not outcome.error, outcome.error
    assume(outcome.garbage == 0)
    seen = outcome.descriptions
    assume(all(_within_bounds(d) for d in seen))
    ref = reference()
    hits = [d for d in seen if d in ref and ref[d] <= len(calls)]
    assert hits, (f"kernel reached {sorted(seen)} by {[str(c) for c in calls]}, "
                  "which the explorer does not generate within as many steps")
