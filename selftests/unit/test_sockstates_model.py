"""The model's rules: kernel behaviours that are easy to get wrong, one by one."""

import pytest

from sockstates import actions, explore, model
from sockstates.syscall import Syscall, SyscallError, parse_line

B = actions.Bounds(max_sockets=3, names=("abstract", "path"), max_queue=2, max_inflight=1)


def step(state, line, bounds=B):
    """Apply the syscall whose text is `line`; it must be one the rules offer."""
    for call, nxt in actions.successors(state, bounds):
        if str(call) == line:
            return nxt
    offered = sorted(str(c) for c, _ in actions.successors(state, bounds))
    raise AssertionError(f"{line!r} not offered; offered: {offered}")


def run(*lines, bounds=B):
    state = model.EMPTY
    for line in lines:
        state = step(state, line, bounds)
    return model.describe(state)


def offered(state, bounds=B):
    return {str(c) for c, _ in actions.successors(state, bounds)}


def test_closing_listener_drops_pending_connection_and_resets_client():
    assert run("socket(S) = 1", "bind(1, @1)", "listen(1)", "socket(S) = 2", "connect(2, @1)",
               "close(1)") == "SARW!-CX"


def test_peer_closing_with_unread_data_leaves_error_but_not_without():
    assert run("socketpair(S) = 1, 2", "send(2)", "close(1)") == "SARW!-CX"
    assert run("socketpair(S) = 1, 2", "send(1)", "close(1)") == "SARW-CX-MX"


def test_datagram_reconnect_drops_queue_and_tells_old_peer():
    assert run("socket(D) = 1", "bind(1, @1)", "socket(D) = 2", "bind(2, @2)",
               "connect(1, @2)", "connect(2, @1)", "send(2)", "socket(D) = 3",
               "bind(3, @3)", "connect(1, @3)") == "DB@1-C3_DB@2!-C1_DB@3E"


def test_datagram_send_to_closed_peer_disconnects():
    state = model.EMPTY
    for line in ("socket(D) = 1", "bind(1, @1)", "socket(D) = 2", "connect(2, @1)", "close(1)"):
        state = step(state, line)
    assert model.describe(state) == "DA-CX"
    assert "send(2)" not in offered(state)
    assert model.describe(step(state, "send(2) = ECONNREFUSED")) == "DA"


def test_pending_error_is_collected_by_next_send():
    s = run("socket(D) = 1", "bind(1, @1)", "socket(D) = 2", "bind(2, @2)", "connect(1, @2)",
            "connect(2, @1)", "send(2)", "socket(D) = 3", "bind(3, @3)", "connect(1, @3)",
            "send(2) = ECONNRESET")
    assert s == "DB@1-C2_DB@2-C3_DB@3E"  # the error is gone, the links stay


def test_abstract_names_are_per_type_and_reusable_after_holder_is_gone():
    state = model.EMPTY
    for line in ("socket(S) = 1", "bind(1, @1)", "socket(D) = 2"):
        state = step(state, line)
    assert "bind(2, @1)" in offered(state)  # another type may hold the same name
    state2 = model.EMPTY
    for line in ("socket(S) = 1", "bind(1, @1)", "socket(S) = 2"):
        state2 = step(state2, line)
    assert "bind(2, @1)" not in offered(state2)  # EADDRINUSE: a cut, no new state


def test_path_reuse_after_unlink_gives_two_files_on_one_string():
    assert run("socket(D) = 1", "bind(1, /1)", "unlink(/1)", "socket(D) = 2", "bind(2, /1)") \
        == "DB/1a_Db/1b"


def test_closing_a_path_socket_leaves_its_file():
    assert run("socket(D) = 1", "bind(1, /1)", "close(1)") == "F/1"


def test_in_flight_socket_survives_closing_its_descriptor():
    assert run("socketpair(S) = 1, 2", "socket(D) = 3", "send(1, [3])", "close(3)") \
        == "D~A_SA-C3_SA-C2-M2+1"


def test_garbage_cycles_are_out_of_scope():
    bounds = actions.Bounds(max_inflight=2)
    state = model.EMPTY
    # each end of a pair travels in the other's queue
    for line in ("socketpair(S) = 1, 2", "send(1, [1])", "send(2, [2])", "close(1)"):
        state = step(state, line, bounds)
    assert model.describe(state) == "SA-C2-M2+2_S~A-C1-M1+1"
    # closing the last descriptor would leave a cycle no descriptor reaches,
    # which the kernel frees only when its garbage collector runs
    assert "close(2)" not in offered(state, bounds)


def test_shutdown_is_mirrored_on_a_connected_peer():
    assert run("socketpair(P) = 1, 2", "shutdown(1, WR)") == "PAW-C2_PAR-C1"


def test_bounds_are_checked():
    with pytest.raises(actions.BoundsError, match="max sockets"):
        actions.Bounds(max_sockets=0)
    with pytest.raises(actions.BoundsError, match="types"):
        actions.Bounds(types=("Q",))
    with pytest.raises(actions.BoundsError, match="depth"):
        list(explore.explore(actions.Bounds(), -1))


def test_live_sockets_never_exceed_the_bound():
    bounds = actions.Bounds(max_sockets=2)
    for f in explore.explore(bounds, 6):
        assert f.state.alive() <= 2


def test_exploration_is_deterministic_and_breadth_first():
    bounds = actions.Bounds(max_sockets=2, types=("S", "D"))
    first = [(f.description, f.syscalls) for f in explore.explore(bounds, 5)]
    second = [(f.description, f.syscalls) for f in explore.explore(bounds, 5)]
    assert first == second
    depths = [len(calls) for _, calls in first]
    assert depths == sorted(depths)


def test_stats_count_states_per_depth_and_closure():
    stats = explore.Stats()
    found = list(explore.explore(actions.Bounds(max_sockets=2, types=("S",)), None, stats))
    assert stats.closed and stats.states == len(found)
    assert stats.per_depth[0] == 1 and len(stats.per_depth) == max(f.depth for f in found) + 1


def test_syscall_lines_round_trip():
    for f in explore.explore(B, 4):
        for call in f.syscalls:
            assert parse_line(str(call)) == call
    assert parse_line("send(2) = ECONNREFUSED") == Syscall("send", fd=2, error="ECONNREFUSED")


@pytest.mark.parametrize("line, complaint", [
    ("frobnicate(1)", "unknown syscall"),
    ("bind(1, #2)", "bad argument"),
    ("send 1", "not a syscall line"),
])
def test_bad_syscall_lines_are_named(line, complaint):
    with pytest.raises(SyscallError, match=complaint):
        parse_line(line)


def test_invariants_hold_in_every_state():
    bounds = actions.Bounds(max_sockets=3, names=("abstract", "path"), max_queue=2, max_inflight=2,
                            shutdown_any=True)
    count = 0
    for f in explore.explore(bounds, 5):
        assert model.invariants(f.state) == [], (f.description, [str(c) for c in f.syscalls])
        count += 1
    assert count > 5000


def test_invariants_catch_a_broken_state():
    a = model.Sock("S", fd=1, peer=2)
    b = model.Sock("S", fd=2, peer=None)
    assert model.invariants(model.State({1: a, 2: b}, {})) == ["stream/seqpacket socket 1 and its peer disagree"]
