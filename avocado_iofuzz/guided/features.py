"""The guided signal: which events a batch made QEMU fire, and about how often (AFL's hit-count buckets).

Event names alone give no reward for getting closer: a device has 40-230
catalogued events, a blind sweep reaches in a second all it will reach, and
the deep ones sit behind paths of many steps (a DMA engine loading one more
descriptor, a command taken one step further). Those steps fire the events
the device already knew, more often. So a batch's *features* are its events
paired with a bucket of their hit count in the batch -- 1, 2, 3, 4-7, 8-15,
16-31, 32-127, 128+ -- and a batch that lands an event in a bucket no batch
had reached is new, even with no new name.

A feature is spelled ``event#floor``: ``e1000e_rx_descr#8`` is 8 to 15 hits.

Some steps fire no more hits but other *arguments*: a virtio status going
ACK -> DRIVER -> DRIVER_OK, an nvme command with another opcode. For the
events of ``events.toml``'s ``[arguments]`` table the hit counts also hold
the event qualified by those arguments
(:mod:`avocado_iofuzz.coverage.arguments`), and those keys become features
the same way: ``virtio_set_status(val=0xf)#1`` is the status 0xf set once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set

from avocado_iofuzz.coverage.arguments import event_of_key

# the floors of the buckets: a count falls in the bucket of the largest floor it reaches
BUCKET_FLOORS = (1, 2, 3, 4, 8, 16, 32, 128)


def bucket(hits: int) -> int:
    """The floor of the bucket ``hits`` (>= 1) falls in."""
    if hits < 1:
        raise ValueError(f"a bucket needs at least one hit, got {hits}")
    return max(floor for floor in BUCKET_FLOORS if floor <= hits)


def feature(event: str, hits: int) -> str:
    return f"{event}#{bucket(hits)}"


def features_of(hits: Mapping[str, int]) -> set[str]:
    """A batch's features from its hit counts (events with no hit have none)."""
    return {feature(event, count) for event, count in hits.items() if count > 0}


def exhausted(events: Iterable[str], known: Set[str]) -> set[str]:
    """The events among ``events`` whose every bucket is a known feature: no hit count of theirs can be new.

    A batch's plain-name features are its events' buckets, and a corpus keeps
    only features it lacks; once all of an event's buckets are in ``known``
    its hits can never add one. (Its argument-qualified keys can: the caller
    leaves events read by arguments out.)
    """
    return {event for event in events if all(f"{event}#{floor}" in known for floor in BUCKET_FLOORS)}


def event_of(spelled: str) -> str:
    """The event of a feature (``e1000e_rx_descr#8``, ``virtio_set_status(val=0xf)#1`` -> the name alone)."""
    return event_of_key(spelled.rpartition("#")[0])
