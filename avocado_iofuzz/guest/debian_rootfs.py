"""The Debian guest's root tree: mmdebstrap → tar → newc → zstd, cached on its own.

Built without root and without installing anything on the host:
``mmdebstrap --mode=fakechroot`` runs maintainer scripts under fakechroot and
fakeroot, writes a tarball, and we convert that to a zstd-compressed newc
archive (≈44 MB for ≈125 MB of tree) the kernel unpacks as its initramfs.

The base is cached apart from the guest's small overlay (init, kernel modules,
our tools), so changing the overlay costs a second, not a debootstrap. Its key
holds the package selection and the fingerprint of the host's apt lists: an
``apt-get update`` that brings new package versions brings a new base. When
mmdebstrap cannot run (no network to the mirror) the newest base built before
is used, with a warning.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from avocado_iofuzz.guest import debian_packages
from avocado_iofuzz.guest.cache import MANIFEST_NAME, cached_entry, hash_inputs, read_manifest
from avocado_iofuzz.guest.newc import tar_to_newc

LOG = logging.getLogger(__name__)

SUITE = "bookworm"
# python3 + criu for the sockstates C/R checks; iptables and iproute2 because
# CRIU runs iptables-save and ip when it dumps a network namespace; kmod loads
# the modules CRIU needs; socat, procps and busybox are the tools one wants
# when looking at a failure by hand.
PACKAGES = ("python3", "criu", "iptables", "kmod", "iproute2", "socat", "procps", "mount", "busybox")
# Documentation and translations are a third of the tree and never read in the guest.
PATH_EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*", "/usr/share/info/*")
MERGED_USR_HOOK = Path("/usr/share/mmdebstrap/hooks/merged-usr")
REQUIRED_TOOLS = {"mmdebstrap": "mmdebstrap", "fakechroot": "fakechroot", "fakeroot": "fakeroot", "zstd": "zstd"}
ZSTD_LEVEL = 3  # -19 saves ≈15 % more but takes half a minute
MMDEBSTRAP_TIMEOUT = 1800.0

# Bump when a change here changes what a base contains.
BASE_VERSION = 1
BASE_DIRNAME = "debian-base"
BASE_ARCHIVE = "base.cpio.zst"


class DebianRootfsError(RuntimeError):
    """The Debian root tree cannot be built (a tool is missing, mmdebstrap failed)."""


@dataclass(frozen=True)
class DebianBase:
    archive: Path  # zstd-compressed newc, to be concatenated in front of the overlay
    key: str
    packages: dict[str, str]  # installed package -> version, from the tree's dpkg status


def check_tools() -> None:
    missing = [package for tool, package in REQUIRED_TOOLS.items() if shutil.which(tool) is None]
    if missing:
        raise DebianRootfsError(
            f"building the Debian guest needs {', '.join(missing)}: apt-get install {' '.join(missing)} "
            "(bootstrap.sh installs them)"
        )


def mmdebstrap_argv(target: Path) -> list[str]:
    argv = ["mmdebstrap", "--mode=fakechroot", "--variant=essential", "--format=tar", "--quiet"]
    if MERGED_USR_HOOK.is_dir():
        argv.append(f"--hook-dir={MERGED_USR_HOOK}")
    argv += [f"--dpkgopt=path-exclude={pattern}" for pattern in PATH_EXCLUDES]
    argv += [f"--include={','.join(PACKAGES)}", SUITE, str(target)]
    return argv


def base_inputs() -> dict[str, object]:
    return {
        "base_version": BASE_VERSION,
        "suite": SUITE,
        "packages": sorted(PACKAGES),
        "path_excludes": sorted(PATH_EXCLUDES),
        "zstd_level": ZSTD_LEVEL,
        "apt_lists": debian_packages.apt_lists_fingerprint(),
    }


def parse_dpkg_status(text: str) -> dict[str, str]:
    """Installed package -> version from a dpkg status file."""
    packages: dict[str, str] = {}
    for stanza in text.split("\n\n"):
        name = re.search(r"^Package:\s*(\S+)", stanza, re.MULTILINE)
        version = re.search(r"^Version:\s*(\S+)", stanza, re.MULTILINE)
        installed = re.search(r"^Status:.*\binstalled$", stanza, re.MULTILINE)
        if name and version and installed:
            packages[name.group(1)] = version.group(1)
    return packages


def _installed_packages(tar_path: Path) -> dict[str, str]:
    with tarfile.open(tar_path) as archive:
        try:
            member = archive.getmember("./var/lib/dpkg/status")
        except KeyError as error:
            raise DebianRootfsError(f"{tar_path.name} has no /var/lib/dpkg/status: not a Debian tree") from error
        stream = archive.extractfile(member)
        assert stream is not None
        return parse_dpkg_status(stream.read().decode(errors="replace"))


def compress_tree(tar_path: Path, target: Path) -> int:
    """``tar_path`` as a zstd-compressed newc archive at ``target``; returns the entry count."""
    with open(target, "wb") as sink:
        zstd = subprocess.Popen(
            ["zstd", "-q", f"-{ZSTD_LEVEL}", "-T0", "-c"], stdin=subprocess.PIPE, stdout=sink, stderr=subprocess.PIPE
        )
        assert zstd.stdin is not None and zstd.stderr is not None
        try:
            count = tar_to_newc(tar_path, zstd.stdin)
        finally:
            zstd.stdin.close()
            status = zstd.wait()
            error = zstd.stderr.read().decode(errors="replace")
            zstd.stderr.close()
    if status != 0:
        raise DebianRootfsError(f"zstd failed with status {status}: {error.strip()[-400:]}")
    return count


def _build(staged: Path, inputs: dict[str, object]) -> dict[str, object]:
    check_tools()
    started = time.monotonic()
    tar_path = staged / "base.tar"
    argv = mmdebstrap_argv(tar_path)
    LOG.info("building the Debian guest's root tree: %s", " ".join(argv))
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=MMDEBSTRAP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as error:
        raise DebianRootfsError(f"mmdebstrap took longer than {MMDEBSTRAP_TIMEOUT:.0f} s") from error
    if proc.returncode != 0:
        raise DebianRootfsError(
            f"mmdebstrap failed with status {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-1500:]}"
        )
    bootstrapped = time.monotonic()
    packages = _installed_packages(tar_path)
    entries = compress_tree(tar_path, staged / BASE_ARCHIVE)
    tar_size = tar_path.stat().st_size
    tar_path.unlink()
    LOG.info(
        "Debian root tree: mmdebstrap %.1f s, %d entries, %.0f MB -> %.0f MB zstd in %.1f s",
        bootstrapped - started,
        entries,
        tar_size / 1e6,
        (staged / BASE_ARCHIVE).stat().st_size / 1e6,
        time.monotonic() - bootstrapped,
    )
    return {"inputs": inputs, "archive": BASE_ARCHIVE, "packages": packages, "tree_bytes": tar_size}


def newest_cached_base(cache_root: Path) -> DebianBase | None:
    found = []
    for entry in (cache_root / BASE_DIRNAME).glob("*"):
        manifest = read_manifest(entry)
        if manifest is not None and (entry / str(manifest.get("archive", ""))).is_file():
            found.append(((entry / MANIFEST_NAME).stat().st_mtime, entry, manifest))
    if not found:
        return None
    _, entry, manifest = max(found, key=lambda item: item[0])
    return DebianBase(entry / str(manifest["archive"]), entry.name, dict(manifest["packages"]))


def debian_base(cache_root: Path) -> DebianBase:
    """The cached Debian base for the current apt lists, built if missing."""
    inputs = base_inputs()
    key = hash_inputs(inputs)
    try:
        entry, manifest = cached_entry(cache_root / BASE_DIRNAME, key, lambda staged: _build(staged, inputs))
    except DebianRootfsError as error:
        cached = newest_cached_base(cache_root)
        if cached is None:
            raise
        LOG.warning("cannot build a fresh Debian base (%s); using the cached base %s", error, cached.key)
        return cached
    os.utime(entry / MANIFEST_NAME)  # in use: the newest-first order of the fallback and of pruning
    return DebianBase(entry / str(manifest["archive"]), key, dict(manifest["packages"]))
