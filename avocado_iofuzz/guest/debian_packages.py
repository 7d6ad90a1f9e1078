"""Fetching files out of Debian packages without installing them.

``apt-cache`` resolves names and versions, ``apt-get download`` fetches the
.deb into our cache (no root needed), and ``dpkg-deb --fsys-tarfile`` streams
its contents so that only the members we want are written out.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from avocado_iofuzz.guest.cache import staging_dir

LOG = logging.getLogger(__name__)

APT_LISTS_DIR = Path("/var/lib/apt/lists")


class DebianPackageError(RuntimeError):
    """A Debian package could not be resolved, downloaded or unpacked."""


@dataclass(frozen=True)
class DebianPackage:
    name: str
    version: str

    @property
    def ident(self) -> str:
        return f"{self.name}={self.version}"


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 600) -> str:
    tool = argv[0]
    if shutil.which(tool) is None:
        raise DebianPackageError(f"{tool} not found: Debian's apt/dpkg tools are needed to fetch packages")
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise DebianPackageError(f"{' '.join(argv)} failed with status {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return proc.stdout


def candidate_version(package: str) -> str:
    """The version apt would install for ``package``."""
    output = _run(["apt-cache", "policy", package])
    match = re.search(r"^\s*Candidate:\s*(\S+)", output, re.MULTILINE)
    if not match or match.group(1) == "(none)":
        raise DebianPackageError(f"apt knows no installable version of {package!r} (run 'apt-get update' first?)")
    return match.group(1)


def parse_depends_field(apt_cache_show_output: str, prefix: str) -> tuple[str, str | None] | None:
    """The first dependency starting with ``prefix`` in ``apt-cache show`` output, as (name, pinned version).

    The version is the one of an ``(= VERSION)`` constraint, None without one.
    """
    match = re.search(r"^Depends:\s*(.*)$", apt_cache_show_output, re.MULTILINE)
    if not match:
        return None
    for clause in match.group(1).split(","):
        for alternative in clause.split("|"):
            dep = re.match(r"\s*([A-Za-z0-9.+-]+)(?::\w+)?\s*(?:\(\s*(=|>=|<=|<<|>>)\s*([^)\s]+)\s*\))?", alternative)
            if dep and dep.group(1).startswith(prefix):
                return dep.group(1), dep.group(3) if dep.group(2) == "=" else None
    return None


def apt_lists_fingerprint(lists_dir: Path | None = None) -> str:
    """Changes whenever ``apt-get update`` brings new package lists (names, sizes, mtimes of the lists)."""
    lists_dir = APT_LISTS_DIR if lists_dir is None else lists_dir
    try:
        entries = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(lists_dir))
    except OSError:
        return "no-apt-lists"
    return hashlib.sha256(repr(entries).encode()).hexdigest()


def _memoized(memo_dir: Path | None, what: str, compute: Callable[[], DebianPackage]) -> DebianPackage:
    """``compute()``, remembered in ``memo_dir`` until the apt package lists change.

    apt-cache costs about half a second a call (it rebuilds its cache each
    time on Debian's default configuration), which would dominate a warm build.
    """
    if memo_dir is None:
        return compute()
    memo = memo_dir / f"resolved-{what}-{apt_lists_fingerprint()[:16]}.json"
    try:
        cached = json.loads(memo.read_text())
        return DebianPackage(cached["name"], cached["version"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    package = compute()
    memo_dir.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_name(f"{memo.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps({"name": package.name, "version": package.version}))
    os.replace(tmp, memo)
    return package


def resolve_metapackage(metapackage: str, prefix: str, memo_dir: Path | None = None) -> DebianPackage:
    """The concrete package (and its version) a metapackage currently depends on.

    E.g. ``linux-image-amd64`` → ``linux-image-6.1.0-56-amd64=6.1.192-2``.
    """

    def compute() -> DebianPackage:
        show = _run(["apt-cache", "show", "--no-all-versions", metapackage])
        dependency = parse_depends_field(show, prefix)
        if dependency is None:
            raise DebianPackageError(
                f"apt-cache show {metapackage} lists no dependency starting with {prefix!r} "
                "(run 'apt-get update' first?)"
            )
        name, version = dependency
        return DebianPackage(name, version or candidate_version(name))

    return _memoized(memo_dir, metapackage, compute)


def candidate_package(package: str, memo_dir: Path | None = None) -> DebianPackage:
    """``package`` at the version apt would install."""
    return _memoized(memo_dir, package, lambda: DebianPackage(package, candidate_version(package)))


def download(package: DebianPackage, debs_dir: Path) -> Path:
    """The .deb of ``package``, downloaded into ``debs_dir`` once and reused afterwards."""
    safe_version = package.version.replace(":", "%3a")
    pattern = f"{package.name}_{safe_version}_*.deb"
    existing = sorted(debs_dir.glob(pattern))
    if existing:
        return existing[0]
    LOG.info("downloading Debian package %s", package.ident)
    with staging_dir(debs_dir, package.name) as staged:
        _run(["apt-get", "download", "-q", package.ident], cwd=staged)
        fetched = sorted(staged.glob("*.deb"))
        if len(fetched) != 1:
            raise DebianPackageError(f"apt-get download {package.ident} left {len(fetched)} .deb files")
        target = debs_dir / fetched[0].name
        fetched[0].rename(target)
    return target


def extract_members(deb: Path, patterns: list[str], out_dir: Path) -> dict[str, Path]:
    """Write the regular files of ``deb`` whose paths match ``patterns`` into ``out_dir``.

    Patterns are fnmatch globs on the path inside the package without the
    leading ``./`` (e.g. ``boot/vmlinuz-*``). Reading stops as soon as every
    pattern has matched, so pulling a kernel out of a 70 MB package takes a
    fraction of a second. Returns pattern → written file (flat, by basename).
    """
    if shutil.which("dpkg-deb") is None:
        raise DebianPackageError("dpkg-deb not found: it is needed to unpack Debian packages")
    found: dict[str, Path] = {}
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            for member in archive:
                path = member.name.removeprefix("./")
                matching = [p for p in patterns if p not in found and fnmatch.fnmatch(path, p)]
                if not matching or not member.isfile():
                    continue
                source = archive.extractfile(member)
                assert source is not None
                target = out_dir / Path(path).name
                with open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink)
                for pattern in matching:
                    found[pattern] = target
                if len(found) == len(patterns):
                    break
    except tarfile.TarError as error:
        raise DebianPackageError(f"cannot read the contents of {deb}: {error}") from error
    finally:
        # We may stop reading early on purpose; dpkg-deb then dies of SIGPIPE.
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.stderr is not None:
            proc.stderr.close()
    missing = [p for p in patterns if p not in found]
    if missing:
        raise DebianPackageError(f"{deb.name} contains no file matching {missing}; dpkg-deb said: {stderr[-400:]}")
    return found
