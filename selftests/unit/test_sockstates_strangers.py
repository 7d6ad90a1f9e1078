"""Who reaches a bound name: the stranger probe, on real sockets in a namespace of the run's own."""

from __future__ import annotations

from sockstates import run, strangers
from sockstates.syscall import parse_line


def calls(*lines: str) -> list:
    return [parse_line(line) for line in lines]


def test_only_bound_names_are_tried_once_each_in_order() -> None:
    seq = calls("socket(D) = 1", "bind(1, @2)", "socket(S) = 2", "bind(2, /1)", "connect(2, @2)", "bind(1, @2)")
    assert strangers.bound_names(seq) == ["@2", "/1"]


def test_a_connected_datagram_socket_refuses_strangers_an_unconnected_one_takes_them() -> None:
    dead_peer = run.run_sequence(calls("socket(D) = 1", "socket(D) = 2", "bind(1, @1)", "bind(2, @2)",
                                       "connect(1, @2)", "close(2)"))
    assert dead_peer.descriptions == {"DB@1-CX"}
    assert "@1 dgram sendto: EPERM" in dead_peer.strangers
    alone = run.run_sequence(calls("socket(D) = 1", "bind(1, @1)"))
    assert "@1 dgram sendto: ok" in alone.strangers
    listener = run.run_sequence(calls("socket(S) = 1", "bind(1, @1)", "listen(1)"))
    assert "@1 stream connect: ok" in listener.strangers and "@1 seqpacket connect: ECONNREFUSED" in listener.strangers
