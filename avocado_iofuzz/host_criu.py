"""A CRIU for the host: the newest Debian suite's CRIU source, built once in our cache.

Kernels from 6.13 on moved the vDSO, and CRIU older than 4.1 cannot dump any
process on them; Debian bookworm ships 3.17.1. The newer suite's package
itself cannot be installed on bookworm (it wants a newer libc), but its
source builds against bookworm's libraries in about 15 s on two cores.

So: apt, with a private sources list naming only the suite's ``deb-src``
(the host's apt configuration is not touched), reads the signed Sources
index; ``apt-helper`` fetches the upstream tarball it lists and checks its
SHA256 against the index; ``make criu`` builds the binary, which alone is
kept, in ``<cache>/criu/<suite>``. Later calls reuse it without the network
until ``refresh`` is asked for.

    python3 -m avocado_iofuzz.host_criu            # prints the binary's path
    avocado run sockstates --vt-extra-params sockstates_where=host \\
        --vt-extra-params sockstates_criu=$(python3 -m avocado_iofuzz.host_criu)
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from avocado_iofuzz.guest.cache import cached_entry, resolve_cache_root
from sockstates.criu import CriuSetupError, criu_version

LOG = logging.getLogger(__name__)

DEFAULT_SUITE = "trixie"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
CACHE_DIRNAME = "criu"
# Bump when a change here changes what a build produces.
BUILDER_VERSION = 1
# Debian packages that `make criu` needs on bookworm; the tools among them
# are checked before building, so a missing one is named instead of a
# screenful of compiler errors.
BUILD_DEPENDS = (
    "gcc", "make", "pkg-config", "protobuf-c-compiler", "libprotobuf-c-dev", "libprotobuf-dev",
    "protobuf-compiler", "libnl-3-dev", "libnet1-dev", "libcap-dev", "libbsd-dev", "libnftables-dev",
    "libgnutls28-dev", "uuid-dev",
)  # fmt: skip
BUILD_TOOLS = {"gcc": "gcc", "make": "make", "pkg-config": "pkg-config", "protoc-c": "protobuf-c-compiler"}
BUILD_LIBRARIES = {"libprotobuf-c": "libprotobuf-c-dev", "libnl-3.0": "libnl-3-dev", "libnftables": "libnftables-dev"}
BUILD_TIMEOUT = 1800.0


class HostCriuError(RuntimeError):
    """CRIU's source could not be found, fetched or built."""


@dataclass(frozen=True)
class SourceRelease:
    """One source package release as the Sources index describes it."""

    package: str
    version: str  # Debian's, e.g. 4.1.1-1 or 1:2.0-3
    directory: str  # in the archive, e.g. pool/main/c/criu
    tarball: str  # the upstream tarball's file name
    sha256: str
    size: int

    @property
    def upstream_version(self) -> str:
        """``1:4.1.1-1`` → ``4.1.1``: no epoch, no Debian revision."""
        version = self.version.split(":", 1)[-1]
        return version.rsplit("-", 1)[0] if "-" in version else version

    def url(self, mirror: str) -> str:
        return f"{mirror.rstrip('/')}/{self.directory}/{self.tarball}"


def parse_showsrc(text: str, package: str) -> SourceRelease:
    """The newest release of ``package`` in ``apt-cache showsrc`` output.

    Each stanza lists its files under ``Checksums-Sha256:`` as indented
    ``hash size name`` lines; the upstream tarball is the ``.orig.tar.*``
    one (a native package has a plain ``.tar.*``).
    """
    releases = []
    for stanza in re.split(r"\n\s*\n", text.strip()):
        fields = _stanza_fields(stanza)
        if fields.get("Package", "").strip() != package:
            continue
        missing = [name for name in ("Version", "Directory", "Checksums-Sha256") if name not in fields]
        if missing:
            raise HostCriuError(f"apt-cache showsrc {package}: a stanza lacks {', '.join(missing)}")
        tarballs = []
        for line in fields["Checksums-Sha256"].splitlines():
            parts = line.split()
            if len(parts) != 3 or not re.fullmatch(r"[0-9a-f]{64}", parts[0]):
                continue
            # the upstream tarball, not Debian's packaging (.debian.tar.*)
            if re.search(r"\.tar\.\w+$", parts[2]) and ".debian.tar." not in parts[2]:
                tarballs.append(parts)
        if len(tarballs) != 1:
            raise HostCriuError(
                f"apt-cache showsrc {package} {fields['Version'].strip()}: expected one upstream tarball, "
                f"found {[t[2] for t in tarballs]}"
            )
        sha256, size, name = tarballs[0]
        releases.append(
            SourceRelease(package, fields["Version"].strip(), fields["Directory"].strip(), name, sha256, int(size))
        )
    if not releases:
        raise HostCriuError(f"apt-cache showsrc knows no source package {package!r}")
    return max(releases, key=lambda r: _version_key(r.version))


def _stanza_fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    current = ""
    for line in stanza.splitlines():
        if line[:1] in (" ", "\t") and current:
            fields[current] += "\n" + line.strip()
        elif ":" in line:
            current, value = line.split(":", 1)
            fields[current] = value.strip()
    return fields


def _version_key(version: str) -> tuple:
    """Enough of Debian's version ordering to pick between a suite's few releases: epoch, upstream, revision."""
    epoch, _, rest = version.rpartition(":") if ":" in version else ("0", "", version)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")

    def parts(text: str) -> tuple:
        return tuple((0, int(n), "") if n.isdigit() else (1, 0, n) for n in re.split(r"[.~+]", text))

    return (int(epoch) if epoch.isdigit() else 0, parts(upstream), parts(revision))


def _run(argv: list[str], what: str, timeout: float = 600.0, **kwargs) -> str:
    if shutil.which(argv[0]) is None and not Path(argv[0]).is_file():
        raise HostCriuError(f"{what}: {argv[0]} not found")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    except subprocess.TimeoutExpired:
        raise HostCriuError(f"{what}: {' '.join(argv)} took longer than {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise HostCriuError(f"{what}: {' '.join(argv)} exited with {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return proc.stdout


class PrivateApt:
    """apt pointed at one suite's source index only, its state kept in ``root``."""

    def __init__(self, root: Path, suite: str, mirror: str):
        if not re.fullmatch(r"[a-z][a-z0-9-]*", suite):
            raise HostCriuError(f"suite {suite!r}: not a Debian suite name (trixie, sid, ...)")
        if not re.fullmatch(r"https?://[^\s\]]+", mirror):
            raise HostCriuError(f"mirror {mirror!r}: expected an http(s) URL of a Debian archive")
        self.root = root
        self.sources = root / "sources.list"
        for sub in ("lists/partial", "cache/archives/partial"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        signed = f" [signed-by={KEYRING}]" if KEYRING.is_file() else ""
        self.sources.write_text(f"deb-src{signed} {mirror} {suite} main\n")

    def options(self) -> list[str]:
        return [
            "-o", f"Dir::Etc::SourceList={self.sources}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={self.root / 'lists'}", "-o", f"Dir::Cache={self.root / 'cache'}",
            "-o", "Debug::NoLocking=1",
        ]  # fmt: skip

    def showsrc(self, package: str) -> SourceRelease:
        _run(["apt-get", *self.options(), "-q", "update"], "reading the suite's Sources index")
        return parse_showsrc(_run(["apt-cache", *self.options(), "showsrc", package], "apt-cache showsrc"), package)


def fetch_tarball(release: SourceRelease, mirror: str, target: Path) -> Path:
    """Download the upstream tarball; apt-helper refuses it unless its SHA256 is the index's."""
    _run(
        ["/usr/lib/apt/apt-helper", "download-file", release.url(mirror), str(target), f"SHA256:{release.sha256}"],
        f"downloading {release.tarball}",
    )
    return target


def missing_build_depends() -> list[str]:
    """The Debian packages of BUILD_DEPENDS whose tool or library is absent here."""
    missing = {package for tool, package in BUILD_TOOLS.items() if shutil.which(tool) is None}
    if shutil.which("pkg-config") is not None:
        for library, package in BUILD_LIBRARIES.items():
            if subprocess.run(["pkg-config", "--exists", library], check=False).returncode != 0:
                missing.add(package)
    return sorted(missing)


def build_criu(tarball: Path, workdir: Path, jobs: int) -> tuple[Path, str]:
    """Unpack and ``make criu``; returns the binary and the build log's tail."""
    missing = missing_build_depends()
    if missing:
        raise HostCriuError(
            f"building CRIU needs {' '.join(missing)} (all of them: apt-get install {' '.join(BUILD_DEPENDS)}; "
            "bootstrap.sh --test installs them)"
        )
    with tarfile.open(tarball) as archive:
        # "tar", not "data": the tree links images/google/protobuf/descriptor.proto
        # to /usr/include (libprotobuf-dev); the tarball's SHA256 was checked
        archive.extractall(workdir, filter="tar")
    tops = [p for p in workdir.iterdir() if p.is_dir()]
    if len(tops) != 1 or not (tops[0] / "Makefile").is_file():
        raise HostCriuError(f"{tarball.name} does not unpack to one source directory with a Makefile")
    log = workdir / "build.log"
    with open(log, "wb") as sink:
        proc = subprocess.run(
            ["make", f"-j{jobs}", "criu"], cwd=tops[0], stdout=sink, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, timeout=BUILD_TIMEOUT, check=False,
        )  # fmt: skip
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
    binary = tops[0] / "criu" / "criu"
    if proc.returncode != 0 or not binary.is_file():
        raise HostCriuError(f"make criu in {tops[0]} failed (status {proc.returncode}); its last lines:\n{tail}")
    return binary, tail


def host_criu(
    cache_root: Path | None = None, suite: str = DEFAULT_SUITE, mirror: str = DEFAULT_MIRROR, refresh: bool = False
) -> Path:
    """The path of a CRIU binary built from ``suite``'s source (built on the first call)."""
    parent = resolve_cache_root(cache_root) / CACHE_DIRNAME
    name = f"{suite}-v{BUILDER_VERSION}"
    if refresh and (parent / name).exists():
        shutil.rmtree(parent / name)

    def build(staged: Path) -> dict[str, object]:
        with tempfile.TemporaryDirectory(prefix="criu-build-", dir=parent) as scratch_dir:
            scratch = Path(scratch_dir)
            release = PrivateApt(scratch / "apt", suite, mirror).showsrc("criu")
            LOG.info("building CRIU %s from Debian %s's source", release.version, suite)
            tarball = fetch_tarball(release, mirror, scratch / release.tarball)
            (scratch / "src").mkdir()
            binary, _ = build_criu(tarball, scratch / "src", jobs=os.cpu_count() or 1)
            shutil.copy2(binary, staged / "criu")
        try:
            version = criu_version(str(staged / "criu"))
        except CriuSetupError as err:
            raise HostCriuError(f"the built criu does not run: {err}") from None
        if ".".join(map(str, version)) != release.upstream_version:
            raise HostCriuError(f"built criu says version {version}, the source was {release.upstream_version}")
        return {
            "suite": suite,
            "mirror": mirror,
            "source": release.version,
            "tarball": release.tarball,
            "sha256": release.sha256,
            "version": ".".join(map(str, version)),
        }

    entry, _ = cached_entry(parent, name, build)
    return entry / "criu"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m avocado_iofuzz.host_criu",
        description="Build CRIU from a newer Debian suite's source (once, in the cache) and print the binary's path.",
    )
    parser.add_argument("--suite", default=DEFAULT_SUITE, help=f"Debian suite whose CRIU to build ({DEFAULT_SUITE})")
    parser.add_argument("--mirror", default=DEFAULT_MIRROR, help=f"Debian archive URL ({DEFAULT_MIRROR})")
    parser.add_argument("--cache", type=Path, default=None, help="cache root (default: avocado's data dir)")
    parser.add_argument("--refresh", action="store_true", help="fetch and build again even if built before")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="host_criu: %(message)s", stream=sys.stderr)
    try:
        print(host_criu(args.cache, args.suite, args.mirror, args.refresh))
    except HostCriuError as err:
        print(f"host_criu: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
