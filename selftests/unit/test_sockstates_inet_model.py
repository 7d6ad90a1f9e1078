"""The TCP/UDP model on its own: canonical strings, rules as data, syscall lines (no kernel needed)."""

from __future__ import annotations

import functools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockstates import explore
from sockstates.inet import canon, model, rules
from sockstates.syscall import parse_line

BOUNDS = rules.Bounds(max_sockets=4, max_queue=2)


@functools.cache
def generated() -> tuple[explore.Found, ...]:
    return tuple(explore.explore(BOUNDS, 5))


@functools.cache
def deeper() -> dict[str, explore.Found]:
    """Depth 8 with 3 sockets: a connection's whole life, TIME_WAIT included."""
    return {f.description: f for f in explore.explore(rules.Bounds(max_sockets=3), 8)}


def test_every_description_parses_back_to_itself() -> None:
    for found in generated():
        assert canon.canonical(found.description) == found.description


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**9))
def test_descriptions_do_not_depend_on_socket_numbering(seed: int) -> None:
    rng = random.Random(seed)
    found = rng.choice(generated())
    socks = found.state.socks
    ids = list(socks)
    new_ids = dict(zip(ids, rng.sample(range(100, 200), len(ids)), strict=True))

    def ren(x):  # socket ids only: DEAD and None stay
        return new_ids.get(x, x) if isinstance(x, int) else x

    renamed = {new_ids[i]: s._replace(peer=ren(s.peer), icons=tuple(map(ren, s.icons)),
                                      queue=tuple(map(ren, s.queue)))
               for i, s in reversed(list(socks.items()))}
    assert model.describe(model.State(renamed)) == found.description


def test_the_documented_examples_are_canonical_and_generated() -> None:
    examples = [line.split()[0] for line in canon.__doc__.split("Examples::")[1].split("Tokens are")[0].splitlines()
                if line.strip()]
    assert len(examples) >= 6
    reach = deeper()
    for text in examples:
        assert canon.canonical(text) == text
        assert text in reach, text


def test_bad_descriptions_are_named() -> None:
    for bad, words in (("T:1", "TCP needs a state"), ("U.ES", "UDP none"), ("T.ES-C3", "reference 3"),
                       ("U-Q1", "-Q is for TCP"), ("T.XX", "TCP needs a state")):
        with pytest.raises(canon.DescriptionError, match=words):
            canon.parse(bad)


def test_inet_syscall_lines_read_back() -> None:
    for line in ("socket(T) = 1", "bind(1, :3)", "connect(2, :1)", "abort(1)", "disconnect(2)",
                 "send(1) = ECONNREFUSED", "sendto(2, :4)", "shutdown(1, RDWR)"):
        assert str(parse_line(line)) == line


def test_rules_are_data_with_names_and_bounds_are_checked() -> None:
    names = [rule.name for rule in rules.RULES]
    assert len(names) == len(set(names)) and "abort (SO_LINGER 0, close)" in names
    with pytest.raises(rules.BoundsError):
        rules.Bounds(types=("S",))
    with pytest.raises(rules.BoundsError):
        rules.Bounds(max_sockets=0)


def test_time_wait_and_the_fin_wait2_orphan_are_states_a_sequence_reaches() -> None:
    reach = deeper()
    orphan = [d for d in reach if "~:e.F2" in d or "~:1.F2" in d]
    time_wait = [d for d in reach if ".TW" in d]
    assert orphan and time_wait
    # a close after the peer's FIN leaves TIME_WAIT to the side that closed first
    assert any(call.op == "close" for call in reach[min(time_wait, key=len)].syscalls)


def test_inet_failures_are_grouped_by_what_was_lost() -> None:
    from sockstates import findings

    record = {"verdict": "failed", "stage": "verify", "description": "T:1.LI_T~:e.TW",
              "reasons": ["restored as T:1.LI, was T:1.LI_T~:e.TW"], "before": ["T:1.LI_T~:e.TW"], "after": ["T:1.LI"]}
    assert findings.group(record) == ("restored differently: TCP socket time-wait (.TW), ephemeral port (:e), "
                                      "socket without descriptor (~) lost")
    assert findings.difference("U:1-M1", "U:1") == "queued datagram (-M) lost"
    assert findings.difference("T:e.CLRW!f", "T:e.CLRW") == "pending ECONNREFUSED (!f) lost"
