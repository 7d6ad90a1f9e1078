"""The kernel as oracle: every generated state, performed for real, is what the model says."""

import os
import socket
import tempfile

import pytest

from sockstates import __main__ as cli
from sockstates import actions, explore, model, run
from sockstates.syscall import Syscall, parse_line


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Runs make their directories here (workers read TMPDIR, forks the cached
    tempdir), so what is left is ours alone to see."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _no_children() -> bool:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.mark.parametrize("bounds, depth", [
    (actions.Bounds(max_sockets=2, names=("abstract", "path"), max_queue=2, max_inflight=1,
                    shutdown_any=True), 4),
    (actions.Bounds(max_sockets=3, names=("abstract", "path")), 4),
    (actions.Bounds(max_sockets=3, types=("S", "P")), 5),
], ids=["2-sockets-all-depth4", "3-sockets-depth4", "3-stream-seqpacket-depth5"])
def test_every_generated_state_matches_the_kernel(bounds, depth, private_tmp):
    states = list(explore.explore(bounds, depth))
    bad = []
    for found, outcome in zip(states, run.run_many(f.syscalls for f in states), strict=True):
        if not outcome.matches(found.description):
            bad.append((found.description, sorted(outcome.descriptions), outcome.call_mismatches,
                        outcome.error, [str(c) for c in found.syscalls]))
    assert not bad, f"{len(bad)} of {len(states)} states differ from the kernel, first: {bad[:3]}"
    assert len(states) > 500
    assert not list(private_tmp.iterdir()) and _no_children()


def test_a_wrong_expectation_is_reported():
    calls = [parse_line(x) for x in ("socket(D) = 1", "bind(1, @1)", "socket(D) = 2", "connect(2, @1)")]
    good = run.run_sequence(calls)
    assert good.matches("DA-C2_DB@1E") and good.descriptions == {"DA-C2_DB@1E"}
    assert not good.matches("DA_DB@1")
    wrong_error = run.run_sequence([*calls[:3], Syscall("connect", fd=2, name="@1", error="ECONNREFUSED")])
    assert wrong_error.call_mismatches and "kernel said success" in wrong_error.call_mismatches[0]


def test_probe_sees_sockets_in_flight_and_pending():
    calls = [parse_line(x) for x in (
        "socket(S) = 1", "bind(1, @1)", "listen(1)", "socket(S) = 2", "connect(2, @1)",
        "socketpair(D) = 3, 4", "send(3, [1])", "close(1)")]
    outcome = run.run_sequence(calls)
    assert outcome.descriptions == {"DA-C2_DA-C1-M1+4_SA-C5_S~B@1L-I5_S~b@1-C3"}
    assert outcome.garbage == 0


def test_garbage_is_reported_not_described_as_normal():
    calls = [parse_line(x) for x in (
        "socketpair(S) = 1, 2", "send(1, [1])", "send(2, [2])", "close(1)", "close(2)")]
    outcome = run.run_sequence(calls)
    assert outcome.garbage == 2


def test_cli_run_prints_a_summary_and_exits_zero(capsys, private_tmp):
    status = cli.main(["--run", "--types", "stream", "--max-sockets", "2", "--depth", "3"])
    out = capsys.readouterr().out
    assert status == 0
    last = out.strip().splitlines()[-1]
    assert last.startswith("run: ") and " 0 model bugs, 0 errors" in last
    assert "    => kernel agrees" in out
    assert not list(private_tmp.iterdir()) and _no_children()


def test_cli_run_exits_nonzero_on_a_model_bug(capsys, monkeypatch):
    # a model that forgets that closing a peer shuts the survivor down
    def forgetful(self, sid, embryo=False):
        peer = self.socks[sid].peer
        keep = self.socks.get(peer)
        real(self, sid, embryo)
        if keep is not None and peer in self.socks:
            self.socks[peer] = self.socks[peer]._replace(shut=keep.shut)

    real = model.Kernel.release
    monkeypatch.setattr(model.Kernel, "release", forgetful)
    status = cli.main(["--run", "--types", "stream", "--max-sockets", "2", "--depth", "2"])
    out = capsys.readouterr().out
    assert status == 1
    assert "MODEL BUG: kernel says SARW-CX" in out


def test_private_network_namespace_hides_our_names():
    # the runner's abstract names live in its own namespace: the host's is untouched
    calls = [parse_line("socket(S) = 1"), parse_line("bind(1, @1)")]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mine:
        mine.bind(run.address("@1"))
        assert run.run_sequence(calls).matches("SB@1")


def test_a_hook_runs_between_reaching_the_state_and_probing_it():
    calls = [parse_line(x) for x in ("socketpair(S) = 1, 2", "send(1)")]
    seen = []

    def between(pid):
        # the child holds the state now: its descriptors are there to look at
        seen.append(sorted(os.listdir(f"/proc/{pid}/fd")))

    outcome = run.run_sequence(calls, between=between)
    assert outcome.matches("SA-C2_SA-C1-M1")
    assert len(seen) == 1 and len(seen[0]) >= 2
    failing = run.run_sequence([parse_line("close(1)")], between=seen.append)
    assert failing.error and "handle 1" in failing.error and len(seen) == 1


def test_a_run_works_in_its_own_directory_and_removes_it(private_tmp):
    during = []
    outcome = run.run_sequence([parse_line("socket(D) = 1"), parse_line("bind(1, /1)")],
                               between=lambda pid: during.extend(
                                   (d, (d / "s1").is_socket()) for d in private_tmp.iterdir()))
    assert outcome.matches("DB/1")
    assert len(during) == 1 and during[0][1]  # the path name's socket file, in the run's directory
    assert not list(private_tmp.iterdir())


def test_an_abstract_name_bound_again_gives_every_possible_holder():
    # the listener of @1 goes, an accepted socket still carries @1, a connected
    # socket binds @1: the kernel says the name is held, not by which of the two
    lines = ["socket(S) = 1", "bind(1, @1)", "listen(1)", "socket(S) = 2", "connect(2, @1)",
             "accept(1) = 3", "close(1)", "socketpair(S) = 4, 5", "bind(4, @1)", "send(5)"]
    outcome = run.run_sequence([parse_line(x) for x in lines])
    assert len(outcome.descriptions) == 2
    state = model.EMPTY
    for line in lines:
        state = next(nxt for call, nxt in actions.successors(state, actions.Bounds(max_sockets=4))
                     if str(call) == line)
    assert outcome.matches(model.describe(state))
    # without the socketpair the new holder is unconnected, which only a binder can be
    unambiguous = run.run_sequence([parse_line(x) for x in [*lines[:7], "socket(S) = 4", "bind(4, @1)"]])
    assert outcome.error is None and unambiguous.descriptions == {"SA-C3_SB@1_Sb@1-C1"}
