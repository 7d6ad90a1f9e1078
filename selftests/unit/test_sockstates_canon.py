"""Canonical descriptions: equal for isomorphic states, parseable, and clear about bad input."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockstates import actions, canon, explore, model

SMALL = actions.Bounds(max_sockets=3, names=("abstract", "path"), max_inflight=1)


def _states(bounds=SMALL, depth=4):
    return list(explore.explore(bounds, depth))


ALL = _states()


def _renumbered(snap: canon.Snapshot, seed: int) -> canon.Snapshot:
    """The same snapshot with socket keys, name strings and files renamed and reordered."""
    rng = random.Random(seed)
    keys = list(snap.socks)
    new_keys = rng.sample(range(100, 100 + 10 * len(keys) + 10), len(keys))
    sk = dict(zip(keys, new_keys, strict=True))
    sk[canon.DEAD] = canon.DEAD
    strings = {f.name.string for f in snap.socks.values() if f.name} | set(snap.files)
    rs = {s: f"name{rng.random()}" for s in strings}
    files = {f.name.file for f in snap.socks.values() if f.name} | set(snap.files.values())
    rf = {fl: rng.random() for fl in files}

    def name(n):
        return None if n is None else canon.NameRef(n.kind, rs[n.string], None if n.file is None else rf[n.file])

    socks = {}
    for k in rng.sample(keys, len(keys)):
        f = snap.socks[k]
        socks[sk[k]] = f._replace(
            name=name(f.name), peer=None if f.peer is None else sk[f.peer],
            icons=tuple(sk[e] for e in f.icons),
            queue=tuple(canon.Msg(sk[m.sender], None if m.carried is None else sk[m.carried]) for m in f.queue))
    return canon.Snapshot(socks, {rs[s]: rf[fl] for s, fl in snap.files.items()})


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL), st.integers(0, 10**6))
def test_description_ignores_numbering_and_order(found, seed):
    snap = model.snapshot(found.state)
    assert canon.describe(_renumbered(snap, seed)) == found.description


def test_every_state_string_parses_back_to_itself():
    for f in ALL:
        assert canon.canonical(f.description) == f.description


def test_same_state_by_other_orders_has_one_description():
    # a listener and a connected client, built in two different orders
    by_listener_first = [
        ("socket", "S"), ("bind", 1), ("listen", 1), ("socket", "S"), ("connect", 2)]
    by_client_first = [
        ("socket", "S"), ("socket", "S"), ("bind", 2), ("listen", 2), ("connect", 1)]

    def build(plan):
        state = model.EMPTY
        for op, arg in plan:
            for call, nxt in actions.successors(state, SMALL):
                if call.op == op and (call.type == arg or call.fd == arg) and (op != "bind" or call.name[0] == "@"):
                    state = nxt
                    break
            else:
                raise AssertionError(f"no {op} {arg}")
        return model.describe(state)

    assert build(by_listener_first) == build(by_client_first) == "SA-C3_SB@1L-I3_S~b@1-C1"


def test_descriptions_tell_apart_many_to_one_from_pairs():
    many_to_one = "DA-C3_DA-C3_DB@1E"
    two_pairs = "DA-C3_DA-C4_DB@1E_DB@2E"
    assert canon.canonical(many_to_one) != canon.canonical(two_pairs)
    assert canon.canonical("DA-C3_DA-C3_DB@1E") == canon.canonical("DB@1E_DA-C1_DA-C1")


def test_distinct_states_have_distinct_descriptions():
    texts = [f.description for f in ALL]
    assert len(texts) == len(set(texts))


@pytest.mark.parametrize("text, complaint", [
    ("", "empty state string"),
    ("SQ", "is not a socket"),
    ("SA-C3", "refers to socket 3"),
    ("SA_F/1_SA", "socket tokens come before file tokens"),
    ("F/1_F/1", "has two files"),
    ("Fx", "file token"),
])
def test_bad_state_strings_are_named(text, complaint):
    with pytest.raises(canon.DescriptionError, match=complaint):
        canon.parse(text)


def test_snapshot_with_dangling_reference_is_refused():
    snap = canon.Snapshot({1: canon.SockFacts("S", peer=7)})
    with pytest.raises(canon.DescriptionError, match="unknown socket 7"):
        canon.describe(snap)
