"""The TCP/UDP model against the kernel: every generated state, a deliberately broken model, random walks.

Each sequence runs in a fresh child, in a network namespace of its own with
only ``lo`` up; the kernel's view is inet_diag after the state settled.
Needs root or unprivileged user namespaces.
"""

from __future__ import annotations

import os
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sockstates import explore, run
from sockstates.inet import model, netns, rules

DEPTH4 = rules.Bounds(max_sockets=3)


def test_every_state_to_depth_4_matches_the_kernel() -> None:
    found = list(explore.explore(DEPTH4, 4))
    assert len(found) >= 100
    outcomes = list(run.run_many([f.syscalls for f in found], jobs=2))
    wrong = [(f.description, sorted(o.descriptions), o.call_mismatches, o.error, o.notes)
             for f, o in zip(found, outcomes, strict=True) if not o.matches(f.description)]
    assert wrong == []


def test_a_model_that_forgets_the_close_wait_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A FIN that leaves the peer established: the kernel says close-wait, --run tells."""
    def fin_leaves_peer_alone(self, peer):
        return None

    monkeypatch.setattr(model.Kernel, "fin_to", fin_leaves_peer_alone)
    found = [f for f in explore.explore(rules.Bounds(max_sockets=3, types=("T",)), 7)
             if any(c.op == "shutdown" and c.how == "WR" for c in f.syscalls)][:3]
    assert found
    for f in found:
        outcome = run.run_sequence(f.syscalls)
        assert not outcome.matches(f.description), (f.description, outcome.descriptions)
        assert any(".CW" in d for d in outcome.descriptions)


def test_time_wait_is_reached_without_waiting_for_it() -> None:
    """TIME_WAIT lives 60 s; the state is taken as soon as the view is settled."""
    path = next(f for f in explore.explore(rules.Bounds(max_sockets=3, types=("T",)), 8)
                if f.description == "T:1.LI_T~:e.TW")
    outcome = run.run_sequence(path.syscalls, timeout=10)
    assert outcome.matches(path.description), outcome


def test_a_run_sees_only_its_own_loopback() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            netns.enter_loopback_netns()
            names = [name for _, name in socket.if_nameindex()]
            up = open("/sys/class/net/lo/operstate").read().strip()  # noqa: SIM115
            os.write(write, f"{','.join(names)} {up}".encode())
        finally:
            os._exit(0)
    os.close(write)
    report = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    assert report.split()[0] == "lo"  # the only device
    assert report.split()[1] in ("unknown", "up")  # lo reports "unknown" when up


@st.composite
def walks(draw) -> list:
    """A random path through the model, deeper than the exhaustive runs go."""
    state, calls = model.EMPTY, []
    bounds = rules.Bounds(max_sockets=4, max_queue=2)
    for _ in range(draw(st.integers(5, 11))):
        steps = list(rules.successors(state, bounds))
        if not steps:
            break
        call, state = steps[draw(st.integers(0, len(steps) - 1))]
        calls.append(call)
    return calls, model.describe(state)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(walks())
def test_random_deeper_walks_match_the_kernel(walk) -> None:
    calls, description = walk
    outcome = run.run_sequence(calls)
    assert outcome.matches(description), (description, [str(c) for c in calls], outcome)
