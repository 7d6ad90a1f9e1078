"""The corpus: programs that reached trace events no program before them had reached, per device and QEMU version.

One JSON file per (QEMU version, device key) under avocado's data dir
(``<data_dir>/avocado-iofuzz/corpus/qemu-<version>/<key>.json``), so the next
run of the same row on the same QEMU starts from what the last one found.
A file that cannot be used -- not JSON, another format, another QEMU version,
another op generator (its batches would make other ops; the file records the
running hash and the part fingerprints, and parts outside the running hash,
such as fixed values, are checked for the programs that use them) -- is never fatal:
the run says why, sets the file aside (``<name>.unusable``) and starts empty.

An entry is a *program* (:mod:`avocado_iofuzz.guided.program`: batches run
in order), cut right after the last element that reached something new: the
steps after it bought nothing. Format 2 keeps programs; a format-1 file (one
batch per entry) loads as programs of one element.

Each entry keeps the events its program reached first, the *features*
(event and hit-count bucket, :mod:`avocado_iofuzz.guided.features`) it
reached first, and two counters the scheduler reads: ``picks`` (rounds it was
the parent of) and ``finds`` (what those rounds reached first: a new event
weighs :data:`NAME_WEIGHT` new features). A file written before features
existed loads with none. Read-back features (``rb:...``,
:mod:`avocado_iofuzz.guided.readback`: a register answering in a new class,
with ``guided_readback`` on) make entries like the others, but an entry they
alone made starts with the energy of one feature (:meth:`Entry.energy`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avocado_iofuzz.campaign.generator_parts import part_fingerprints, unusable_parts, writer_parts
from avocado_iofuzz.campaign.trace import generator_fingerprint
from avocado_iofuzz.guided import readback
from avocado_iofuzz.guided.batch import Base, Batch, BatchError
from avocado_iofuzz.guided.program import Program, program_as_list, program_from_list

if TYPE_CHECKING:  # schedule.py imports this module
    from avocado_iofuzz.guided.schedule import Round

LOG = logging.getLogger("avocado.test.iofuzz")

CORPUS_FORMAT = 2
READABLE_CORPUS_FORMATS = (1, 2)  # 1: an entry is one batch (a program of one element)
CORPUS_DIRNAME = "corpus"
# a new event name is worth this many new (event, bucket) features, in energy and in a parent's finds:
# a name is a part of the device reached at all, a bucket a known part driven further
NAME_WEIGHT = 4
# what an entry made by read-back features alone counts as found, in energy: one feature's worth
READBACK_ALONE_FOUND = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


@dataclass
class Entry:
    program: Program
    events: tuple[str, ...]
    picks: int = 0
    finds: int = 0
    features: tuple[str, ...] = ()  # "event#bucket" first reached by this program
    origin: str = ""  # how its round made it ("recipe:NAME", "sweep", "insert+change", ...); "" in older files

    @property
    def batch(self) -> Batch:
        """The program's first element: its device range is the entry's."""
        return self.program[0]

    @property
    def by_readback_alone(self) -> bool:
        """Whether only read-back features made this entry (no event, no hit-count feature)."""
        return not self.events and bool(self.features) and all(readback.is_feature(f) for f in self.features)

    def energy(self) -> int:
        """How often the scheduler picks it: more for what it and its children found, less for each pick.

        An entry read-backs alone made starts as if it had found one feature,
        however many registers answered anew: a sweep's random writes move
        many registers at once, and giving such entries full weight had the
        scheduler spend its rounds on them (docs/results/performance.rst,
        perf-readback). What its children reach still raises it.
        """
        found = READBACK_ALONE_FOUND if self.by_readback_alone else NAME_WEIGHT * len(self.events) + len(self.features)
        return max(1, (4 * (found + 2 * self.finds)) // (1 + self.picks))

    def as_dict(self) -> dict[str, Any]:
        record = {"program": program_as_list(self.program), "events": list(self.events), "picks": self.picks,
                  "finds": self.finds}  # fmt: skip
        if self.features:
            record["features"] = list(self.features)
        return {**record, "origin": self.origin} if self.origin else record

    @classmethod
    def from_dict(cls, record: Any) -> Entry:
        if not isinstance(record, dict):
            raise BatchError(f"a corpus entry must be an object, got {record!r:.80}")
        events = record.get("events", [])
        picks, finds = record.get("picks", 0), record.get("finds", 0)
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            raise BatchError("a corpus entry's 'events' must be a list of event names")
        if not isinstance(picks, int) or not isinstance(finds, int) or picks < 0 or finds < 0:
            raise BatchError("a corpus entry's 'picks' and 'finds' must be counts (ints >= 0)")
        features = record.get("features", [])  # absent in files written before the hit-count signal
        if not isinstance(features, list) or not all(
            isinstance(f, str) and ("#" in f or readback.is_feature(f)) for f in features
        ):
            raise BatchError(
                "a corpus entry's 'features' must be a list of 'event#bucket' strings (or read-back 'rb:...' ones)"
            )
        # format 1 kept one batch per entry: a program of one element
        if "program" in record:
            program = program_from_list(record["program"])
        else:
            program = (Batch.from_dict(record.get("batch")),)
        origin = record.get("origin", "")
        if not isinstance(origin, str):
            raise BatchError(f"a corpus entry's 'origin' must be a string, got {origin!r:.80}")
        return cls(program, tuple(events), picks, finds, tuple(features), origin)


@dataclass
class Corpus:
    """Entries in the order they were found; ``loaded`` counts those read from the file."""

    qemu_version: str
    key: str
    entries: list[Entry] = field(default_factory=list)
    loaded: int = 0

    @property
    def events(self) -> set[str]:
        return {event for entry in self.entries for event in entry.events}

    @property
    def features(self) -> set[str]:
        return {feature for entry in self.entries for feature in entry.features}

    def usable(self, bases: Sequence[Base]) -> list[int]:
        """Indices of the entries whose device range is one of this run's (the rest wait for a run that has it)."""
        present = set(bases)
        return [i for i, entry in enumerate(self.entries) if all(e.base in present for e in entry.program)]

    def add(
        self, program: Program | Batch, events: Sequence[str], features: Sequence[str] = (), origin: str = ""
    ) -> None:
        elements = (program,) if isinstance(program, Batch) else tuple(program)
        self.entries.append(Entry(elements, tuple(sorted(events)), features=tuple(sorted(features)), origin=origin))

    def absorb(
        self,
        played: Round,
        new_events: Mapping[int, Sequence[str]],
        features: Mapping[int, Sequence[str]] | None = None,
    ) -> dict[int, list[str]]:
        """After a round: each program that reached an event or a feature the corpus lacks becomes an entry.

        ``new_events`` and ``features`` are per batch index of the round (its
        programs' elements, in order); ``features`` holds all a batch reached
        (the corpus keeps the new ones). A program that reached something new
        joins cut right after its last element that did. Returns the new
        features per batch, in batch order (a feature two batches reached is
        the first one's): what the round's record keeps, and what a rebuild
        passes in again. Events and features the corpus holds already add
        nothing; the round's parent is credited with what its round reached first.
        """
        features = features or {}
        known_events, known_features = self.events, self.features
        new_features: dict[int, list[str]] = {}
        score = 0
        for first, program in played.spans():
            names: set[str] = set()
            found: set[str] = set()
            last = -1
            for offset in range(len(program)):
                index = first + offset
                these = sorted({e for e in new_events.get(index, ()) if e not in known_events and e not in names})
                those = sorted({f for f in features.get(index, ()) if f not in known_features and f not in found})
                if these or those:
                    last = offset
                names.update(these)
                found.update(those)
                if those:
                    new_features[index] = those
            if last >= 0:
                self.add(program[: last + 1], sorted(names), sorted(found), played.origins[first])
                known_events.update(names)
                known_features.update(found)
            score += NAME_WEIGHT * len(names) + len(found)
        self.credit(played.parent, score)
        return new_features

    def credit(self, parent: int | None, found: int) -> None:
        """A round with ``parent`` ran and reached ``found`` (events x NAME_WEIGHT + features) first."""
        if parent is None or not 0 <= parent < len(self.entries):
            return
        self.entries[parent].picks += 1
        self.entries[parent].finds += found

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": CORPUS_FORMAT,
            "generator": generator_fingerprint(),
            # parts the running hash does not cover (fixed values) are checked per part when the file is read
            "generator_parts": part_fingerprints(),
            "qemu_version": self.qemu_version,
            "key": self.key,
            "entries": [entry.as_dict() for entry in self.entries],
        }


def qemu_version(qemu: str, timeout: float = 30.0) -> str:
    """``7.2.15`` from ``qemu-system-x86_64 --version`` (its first line's version word)."""
    try:
        output = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=timeout, check=True).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise RuntimeError(f"cannot ask {qemu} for its version: {err}") from None
    match = re.search(r"version (\S+)", output)
    if not match:
        raise RuntimeError(f"{qemu} --version printed no version: {output[:120]!r}")
    return match[1]


def corpus_key(devices: Sequence[str], machine: str) -> str:
    """The file name of a row's corpus: its machine and devices (a rowless run: the machine alone)."""
    words = [machine or "pc", *sorted(devices)] if devices else [machine or "pc", "all"]
    return _UNSAFE.sub("_", "-".join(words))


def corpus_path(root: Path, version: str, key: str) -> Path:
    """``root`` is ``<avocado data_dir>/avocado-iofuzz`` (see guest/cache.py)."""
    return Path(root) / CORPUS_DIRNAME / f"qemu-{_UNSAFE.sub('_', version)}" / f"{key}.json"


def load_corpus(path: Path, version: str, key: str) -> tuple[Corpus, str]:
    """The corpus at ``path`` and a sentence saying what was loaded, or an empty one and why."""
    empty = Corpus(version, key)
    if not path.exists():
        return empty, f"no corpus at {path} yet: starting empty"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        corpus = _corpus_from(record, version, key)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, BatchError, ValueError) as err:
        aside = _set_aside(path)
        return empty, f"corpus {path} is unusable ({err}); set aside as {aside}, starting empty"
    return corpus, (
        f"loaded {corpus.loaded} program(s) reaching {len(corpus.events)} event(s) "
        f"({len(corpus.features)} hit-count feature(s)) from {path}"
    )


def _corpus_from(record: Any, version: str, key: str) -> Corpus:
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if record.get("format") not in READABLE_CORPUS_FORMATS:
        raise ValueError(
            f"format {record.get('format')!r}, this avocado-iofuzz reads formats {READABLE_CORPUS_FORMATS}"
        )
    if record.get("qemu_version") != version:
        raise ValueError(f"it was found with QEMU {record.get('qemu_version')!r}, this is QEMU {version}")
    # Another running hash is no reason to refuse by itself: where the writer's parts are known (recorded,
    # or a historic hash's), only the parts its programs need must be made the same way (below).
    if record.get("generator") != generator_fingerprint() and not writer_parts(record):
        raise ValueError(
            f"written with op generator {record.get('generator')!r}, this one is {generator_fingerprint()!r}: "
            "its batches would make other ops"
        )
    if record.get("key") != key:
        raise ValueError(f"it is the corpus of {record.get('key')!r}, not of {key!r}")
    entries = record.get("entries")
    if not isinstance(entries, list):
        raise ValueError("'entries' must be a list")
    parsed = [Entry.from_dict(entry) for entry in entries]
    changed = unusable_parts(record, (element.plan(0) for entry in parsed for element in entry.program))
    if changed:
        raise ValueError(
            f"its programs need the op generator's {', '.join(changed)}, which this avocado-iofuzz makes "
            "differently: its batches would make other ops"
        )
    return Corpus(version, key, parsed, loaded=len(parsed))


def _set_aside(path: Path) -> Path:
    aside = path.with_name(path.name + ".unusable")
    try:
        os.replace(path, aside)
    except OSError as err:
        LOG.warning("guided: could not set %s aside: %s", path, err)
    return aside


def save_corpus(corpus: Corpus, path: Path) -> None:
    """Write atomically (a temporary file renamed into place): a run killed mid-write leaves the old corpus."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(corpus.as_dict(), indent=1, sort_keys=True) + "\n"
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as tmp:
        tmp.write(text)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)
