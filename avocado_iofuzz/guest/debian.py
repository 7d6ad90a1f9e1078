"""The Debian guest: Debian's kernel, a Debian root tree in RAM with python3 and criu, and our tools.

Its initrd is two archives the kernel unpacks one after the other: the
cached, zstd-compressed Debian base (``debian_rootfs``), then a small
uncompressed overlay built here — init, the kernel modules CRIU needs, the
``sockstates`` package and the iofuzz executor, the caller's extra files. A
change to the overlay (our sources, say) rebuilds only the overlay.

The shell runs as root on ttyS0 behind the prompt ``debian-guest# ``, bash
with bracketed paste off (it wraps output in escape codes) and a wide
terminal (long commands are not wrapped).
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from avocado_iofuzz.guest import busybox
from avocado_iofuzz.guest.cache import (
    MANIFEST_NAME,
    cached_entry,
    hash_inputs,
    link_or_copy,
    read_manifest,
    sha256_file,
)
from avocado_iofuzz.guest.cpio import CpioWriter
from avocado_iofuzz.guest.debian_rootfs import BASE_DIRNAME, debian_base
from avocado_iofuzz.guest.kernel import prepare_kernel
from avocado_iofuzz.guest.kernel_modules import ModuleTree, module_tree

if TYPE_CHECKING:
    from avocado_iofuzz.guest.build import GuestArtifacts

LOG = logging.getLogger(__name__)

# Bump whenever a change in this module changes what a build produces.
DEBIAN_BUILDER_VERSION = 1

PROMPT_TEXT = "debian-guest# "
SHELL_PROMPT_REGEX = r"debian-guest# \s*$"
# Same marker as the busybox guest: the executor refuses to run without it.
KERNEL_PARAMS = "console=ttyS0 iofuzz.guest=1 panic=-1"
# Every overlay change (our sources, say) makes a new ≈44 MB initrd: older
# Debian guests beyond the newest few are removed once nobody can be about
# to boot them (a running QEMU keeps its open file regardless).
KEEP_GUESTS = 3
STALE_AFTER_SECONDS = 3600.0
# The root tree lives in RAM: ≈130 MB unpacked, plus the archive while it unpacks.
MEMORY_MB = 1024
EXECUTOR_GUEST_PATH = "/usr/bin/iofuzz-exec"
SOCKSTATES_GUEST_DIR = "usr/lib/python3/dist-packages/sockstates"
SOCKSTATES_COMMAND = "usr/local/bin/sockstates"
# merged /usr: /lib is a symlink in the base; an overlay directory "lib" would replace it
MODULES_GUEST_DIR = "usr/lib/modules"
SYMLINKED_TOP_DIRS = frozenset({"bin", "sbin", "lib", "lib32", "lib64", "libx32"})
MOUNTED_TOP_DIRS = frozenset({"dev", "proc", "sys", "tmp", "run"})
# Paths the overlay owns; extra files may not replace them.
RESERVED_PATHS = frozenset({"init", "etc/inputrc", SOCKSTATES_COMMAND})

INPUTRC = """# bash 5.2 would wrap every command's output in bracketed-paste escape codes
set enable-bracketed-paste off
"""

SHELL_WRAPPER = """#!/bin/sh
# the sockstates CLI, from the package shipped in the guest's overlay
exec python3 -m sockstates "$@"
"""


def init_script(modules: tuple[str, ...]) -> str:
    module_list = " ".join(modules)
    return f"""#!/bin/sh
# init of the avocado-iofuzz Debian guest (PID 1). Its root is the initramfs.
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin HOME=/root TERM=vt100 LANG=C.UTF-8
export PS1='{PROMPT_TEXT}'
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
hostname debian-guest
ip link set lo up
# CRIU needs these (nf_tables for its network locking, the *_diag family to
# see sockets); a kernel that has them built in needs none of this.
for module in {module_list}; do
    modprobe "$module" || echo "debian-guest: cannot load module $module"
done
# The boot log went to the console in full; from now on only warnings and
# worse do, so late info messages do not land in command output.
dmesg -n 5
echo "debian-guest: init done, kernel $(uname -r), $(criu --version 2>&1 | head -n 1)"
cd /root
# A root shell on the console, respawned forever; setsid -c gives it the
# console as controlling tty, so Ctrl-C from the host reaches its jobs.
while :; do
    setsid -c -w sh -c 'stty cols 4000 rows 50 2>/dev/null; exec bash --norc --noprofile'
    echo "debian-guest: shell exited with status $?, respawning"
    sleep 0.2
done
"""


def sockstates_sources() -> dict[str, Path]:
    """Archive path → host file of every source file of the ``sockstates`` package."""
    import sockstates

    package_dir = Path(sockstates.__file__).resolve().parent
    files = {}
    for source in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in source.parts:
            continue
        files[f"{SOCKSTATES_GUEST_DIR}/{source.relative_to(package_dir).as_posix()}"] = source
    return files


def _module_files(tree: ModuleTree | None) -> dict[str, Path]:
    if tree is None:
        return {}
    modules_dir = tree.root / "lib" / "modules"
    return {
        f"{MODULES_GUEST_DIR}/{path.relative_to(modules_dir).as_posix()}": path
        for path in sorted(modules_dir.rglob("*"))
        if path.is_file()
    }


def _overlay_files(
    executor: Path, tree: ModuleTree | None, extra: Mapping[str, tuple[Path, int]]
) -> dict[str, tuple[Path, int]]:
    """Archive path → (host file, permissions) of every file the overlay copies from the host."""
    files: dict[str, tuple[Path, int]] = {}
    files[EXECUTOR_GUEST_PATH.lstrip("/")] = (executor, 0o755)
    files.update({path: (host, 0o644) for path, host in sockstates_sources().items()})
    files.update({path: (host, 0o644) for path, host in _module_files(tree).items()})
    for path, (host, perms) in extra.items():
        top = path.split("/", 1)[0]
        if top in SYMLINKED_TOP_DIRS:
            raise GuestOverlayError(f"extra file /{path}: /{top} is a symlink in the Debian guest; use /usr/{path}")
        if top in MOUNTED_TOP_DIRS:
            raise GuestOverlayError(f"extra file /{path}: /{top} is mounted over at boot, the file would be hidden")
        if path in RESERVED_PATHS or path in files:
            raise GuestOverlayError(f"extra file /{path} would replace the Debian guest's own /{path}")
        files[path] = (host, perms)
    return files


class GuestOverlayError(ValueError):
    """The overlay cannot be assembled from the given inputs."""


def write_overlay(stream: io.BufferedIOBase, init: str, files: Mapping[str, tuple[Path, int]]) -> None:
    """The overlay as an uncompressed newc archive.

    Only directories that exist in the base as real directories may appear
    as parents (the writer adds them with mode 0755): never ``lib``, ``bin``
    or ``sbin`` (symlinks into /usr) nor ``tmp`` or ``root``.
    """
    with CpioWriter(stream) as archive:
        archive.add_file("init", init.encode(), perms=0o755)
        archive.add_file("etc/inputrc", INPUTRC.encode(), perms=0o644)
        archive.add_file(SOCKSTATES_COMMAND, SHELL_WRAPPER.encode(), perms=0o755)
        for path, (host, perms) in sorted(files.items()):
            archive.add_file(path, host.read_bytes(), perms=perms)


def concatenate_initrd(target: Path, base_archive: Path, overlay: bytes) -> None:
    """Base, zero padding to a multiple of 4, then the overlay.

    The kernel unpacks concatenated archives in turn; an uncompressed one must
    start at a 4-byte boundary, and zero bytes between archives are skipped.
    """
    tmp = target.with_name(target.name + ".part")
    with open(tmp, "wb") as sink:
        with open(base_archive, "rb") as base:
            shutil.copyfileobj(base, sink, 1 << 20)
        sink.write(b"\0" * (-sink.tell() % 4))
        sink.write(overlay)
    os.replace(tmp, target)


def _is_debian_guest(manifest: dict) -> bool:
    return dict(manifest.get("inputs", {})).get("guest") == "debian"


def prune_stale_entries(
    parent: Path,
    ours: Callable[[dict], bool],
    keep: Path,
    newest: int = KEEP_GUESTS,
    stale_after: float = STALE_AFTER_SECONDS,
) -> list[Path]:
    """Remove entries of ``parent`` that ``ours`` claims, beyond the ``newest`` few, unused for ``stale_after`` s.

    ``newest`` counts ``keep`` (the entry just handed out, never removed).
    Age is the entry's manifest's mtime, which a cache hit refreshes. Returns
    what was removed.
    """
    found = []
    for entry in parent.iterdir() if parent.is_dir() else ():
        manifest = read_manifest(entry)
        if manifest is not None and entry != keep and ours(manifest):
            found.append(((entry / MANIFEST_NAME).stat().st_mtime, entry))
    found.sort(reverse=True)
    now = time.time()
    removed = []
    for mtime, entry in found[max(0, newest - 1) :]:
        if now - mtime > stale_after:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def build_debian_guest(kernel: Path | None, extra_files: Mapping[str, Path], cache_root: Path) -> GuestArtifacts:
    """Build (or find in the cache) the Debian guest; returns its ``GuestArtifacts``."""
    from avocado_iofuzz.executor.build import build_executor
    from avocado_iofuzz.guest.build import BUILDER_VERSION, GuestArtifacts

    extra = busybox.check_extra_files(extra_files)
    prepared = prepare_kernel(kernel, cache_root)
    tree = module_tree(prepared, cache_root)
    base = debian_base(cache_root)
    executor_dir = cache_root / "executor"
    executor_dir.mkdir(parents=True, exist_ok=True)
    executor = build_executor(executor_dir)
    init = init_script(tree.modules if tree is not None else ())
    files = _overlay_files(executor, tree, extra)
    inputs = {
        "guest": "debian",
        "builder_version": BUILDER_VERSION,
        "debian_builder_version": DEBIAN_BUILDER_VERSION,
        "kernel": prepared.identity,
        "kernel_params": KERNEL_PARAMS,
        "base": base.key,
        "init": init,
        "inputrc": INPUTRC,
        "wrapper": SHELL_WRAPPER,
        "files": {path: [sha256_file(host), perms] for path, (host, perms) in sorted(files.items())},
    }
    key = hash_inputs(inputs)

    def build(staged: Path) -> dict[str, object]:
        started = time.monotonic()
        link_or_copy(prepared.boot_file, staged / prepared.boot_file.name)
        overlay = io.BytesIO()
        write_overlay(overlay, init, files)
        concatenate_initrd(staged / "initrd", base.archive, overlay.getvalue())
        LOG.info(
            "built Debian guest %s in %.2f s (overlay %d kB)",
            key,
            time.monotonic() - started,
            len(overlay.getvalue()) // 1024,
        )
        return {
            "inputs": inputs,
            "kernel": prepared.boot_file.name,
            "kernel_format": prepared.boot_format,
            "kernel_source": prepared.source,
            "initrd": "initrd",
            "packages": base.packages,
        }

    entry, manifest = cached_entry(cache_root / "guests", key, build)
    os.utime(entry / MANIFEST_NAME)  # in use: not stale
    prune_stale_entries(cache_root / "guests", _is_debian_guest, keep=entry)
    prune_stale_entries(cache_root / BASE_DIRNAME, lambda manifest: True, keep=base.archive.parent, newest=2)
    return GuestArtifacts.from_cache_entry("debian", key, entry, manifest, KERNEL_PARAMS, SHELL_PROMPT_REGEX)
