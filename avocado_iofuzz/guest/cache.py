"""Where built guests live, and how a cache entry is published atomically.

Everything is kept under ``<avocado data_dir>/avocado-iofuzz/`` unless a caller
passes its own root: ``debs/`` (downloaded packages), ``kernels/`` (kernels
extracted from them), ``guests/<key>/`` (one built guest) and ``accel/`` (the
accelerator probe's verdicts).

An entry is built in a temporary sibling directory and renamed into place, so
an interrupted build never leaves a half-written entry behind; a second
process that loses the rename race simply uses the winner's entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

CACHE_DIRNAME = "avocado-iofuzz"
MANIFEST_NAME = "manifest.json"


class CacheError(RuntimeError):
    """The cache directory cannot be used."""


def default_cache_root() -> Path:
    """``<avocado data_dir>/avocado-iofuzz``, the root of every cached artifact."""
    from avocado.core.settings import settings

    data_dir = settings.as_dict().get("datadir.paths.data_dir")
    if not data_dir:
        raise CacheError("avocado setting datadir.paths.data_dir is empty; pass cache_root explicitly")
    return Path(data_dir).expanduser() / CACHE_DIRNAME


def resolve_cache_root(cache_root: Path | None) -> Path:
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_inputs(inputs: dict[str, object]) -> str:
    """A short, stable key for a JSON-serialisable description of all inputs."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def read_manifest(entry: Path) -> dict[str, object] | None:
    """The entry's manifest, or None when the entry is missing or unreadable."""
    try:
        return json.loads((entry / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def staging_dir(parent: Path, name: str) -> Iterator[Path]:
    """A temporary directory beside ``parent/name``, removed unless published."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_dir(staged: Path, final: Path, manifest: dict[str, object]) -> Path:
    """Write the manifest last and rename ``staged`` to ``final``.

    The manifest marks a complete entry. When another process published the
    same entry first, its entry wins and ours is discarded by the caller's
    ``staging_dir`` cleanup.
    """
    (staged / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    staged.chmod(0o755)  # mkdtemp made it private; a cache entry is readable like any data file
    try:
        os.rename(staged, final)
    except OSError:
        if read_manifest(final) is None:
            raise
    return final


def cached_entry(parent: Path, name: str, build: Callable[[Path], dict[str, object]]) -> tuple[Path, dict[str, object]]:
    """Return ``parent/name`` and its manifest, building it with ``build(staged_dir)`` if absent.

    ``build`` fills the staged directory and returns the manifest to publish.
    An entry without a readable manifest is incomplete (from an older, broken
    layout): it is moved aside and rebuilt.
    """
    final = parent / name
    manifest = read_manifest(final)
    if manifest is not None:
        return final, manifest
    if final.exists():
        _discard(final)
    with staging_dir(parent, name) as staged:
        manifest = build(staged)
        publish_dir(staged, final, manifest)
    manifest = read_manifest(final)
    if manifest is None:
        raise CacheError(f"cache entry {final} has no readable {MANIFEST_NAME} after publishing it")
    return final, manifest


def _discard(path: Path) -> None:
    trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.stale-", dir=path.parent))
    with contextlib.suppress(OSError):
        os.rename(path, trash / path.name)
    shutil.rmtree(trash, ignore_errors=True)


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target`` (same cache, no extra space), copying across devices."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
