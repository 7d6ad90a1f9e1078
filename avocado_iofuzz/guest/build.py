"""Building embedded guests, cached by a hash of everything that goes into them.

``build_guest("busybox")`` returns the files QEMU needs (kernel, initrd, command
line) and how to reach the shell. A guest is rebuilt only when one of its
inputs changes: the kernel (Debian package version or the user kernel's
bytes), busybox's bytes, the init script, the extra files' bytes and modes,
the kernel command line, or ``BUILDER_VERSION``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from avocado_iofuzz.guest import busybox
from avocado_iofuzz.guest.cache import cached_entry, hash_inputs, link_or_copy, resolve_cache_root
from avocado_iofuzz.guest.kernel import prepare_kernel

LOG = logging.getLogger(__name__)

# Bump whenever a change in this package changes what a build produces.
BUILDER_VERSION = 1

GUEST_MARKER_PARAM = "iofuzz.guest=1"  # the in-guest executor refuses to run without it
# Not quiet: avocado-vt's serial login waits for 500 characters of console
# output before it looks for prompts, and the full boot log costs no
# measurable time under TCG (≈22 kB, prompt after ≈1.5 s either way).
# panic=-1 reboots a panicked guest at once instead of leaving it hung, so a
# guest panic shows up as a reboot on the console rather than as a hang.
BUSYBOX_KERNEL_PARAMS = f"console=ttyS0 {GUEST_MARKER_PARAM} panic=-1"
EXECUTOR_GUEST_PATH = "/usr/bin/iofuzz-exec"


class GuestBuildError(RuntimeError):
    """A guest cannot be built from the given inputs."""


@dataclass(frozen=True)
class GuestArtifacts:
    """A built guest: what QEMU boots and how to log into it."""

    name: str
    key: str  # hash of all build inputs; also the cache directory's name
    directory: Path  # the cache entry holding the files below
    kernel: Path  # the file given to QEMU's -kernel
    kernel_format: str  # "pvh-elf" (ELF vmlinux, fast) or "bzimage"
    kernel_source: str
    initrd: Path
    kernel_params: str
    shell_prompt: str  # regex for aexpect, matching the prompt's line
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_cache_entry(
        cls, name: str, key: str, entry: Path, manifest: Mapping[str, object], kernel_params: str, shell_prompt: str
    ) -> GuestArtifacts:
        """The artifacts of a published cache entry, by the file names its manifest records."""
        return cls(
            name=name,
            key=key,
            directory=entry,
            kernel=entry / str(manifest["kernel"]),
            kernel_format=str(manifest["kernel_format"]),
            kernel_source=str(manifest["kernel_source"]),
            initrd=entry / str(manifest["initrd"]),
            kernel_params=kernel_params,
            shell_prompt=shell_prompt,
        )


def _build_busybox(kernel: Path | None, extra_files: Mapping[str, Path], cache_root: Path) -> GuestArtifacts:
    extra = busybox.check_extra_files(extra_files)
    prepared = prepare_kernel(kernel, cache_root)
    busybox_binary = busybox.static_busybox(cache_root)
    inputs = {
        "guest": "busybox",
        "builder_version": BUILDER_VERSION,
        "kernel": prepared.identity,
        "kernel_params": BUSYBOX_KERNEL_PARAMS,
        **busybox.busybox_inputs(busybox_binary, extra),
    }
    key = hash_inputs(inputs)

    def build(staged: Path) -> dict[str, object]:
        started = time.monotonic()
        link_or_copy(prepared.boot_file, staged / prepared.boot_file.name)
        busybox.write_initramfs(staged / "initrd.cpio", busybox_binary, extra)
        LOG.info("built busybox guest %s in %.2f s", key, time.monotonic() - started)
        return {
            "inputs": inputs,
            "kernel": prepared.boot_file.name,
            "kernel_format": prepared.boot_format,
            "kernel_source": prepared.source,
            "initrd": "initrd.cpio",
        }

    entry, manifest = cached_entry(cache_root / "guests", key, build)
    return GuestArtifacts.from_cache_entry(
        "busybox", key, entry, manifest, BUSYBOX_KERNEL_PARAMS, busybox.SHELL_PROMPT_REGEX
    )


def _build_debian(kernel: Path | None, extra_files: Mapping[str, Path], cache_root: Path) -> GuestArtifacts:
    from avocado_iofuzz.guest.debian import build_debian_guest  # mmdebstrap, depmod: only when asked for

    return build_debian_guest(kernel, extra_files, cache_root)


GUEST_BUILDERS = {
    "busybox": _build_busybox,
    "debian": _build_debian,
}


def build_guest(
    name: str = "busybox",
    kernel: Path | None = None,
    extra_files: Mapping[str, Path] | None = None,
    cache_root: Path | None = None,
) -> GuestArtifacts:
    """Build (or find in the cache) the embedded guest ``name``.

    ``kernel``: a vmlinuz (bzImage) or PVH-capable ELF vmlinux to boot instead
    of Debian's current ``linux-image-amd64`` kernel. ``extra_files`` maps
    absolute guest paths to host files to include. ``cache_root`` defaults to
    ``<avocado data_dir>/avocado-iofuzz``.
    """
    builder = GUEST_BUILDERS.get(name)
    if builder is None:
        raise GuestBuildError(f"unknown guest {name!r}; known guests: {', '.join(sorted(GUEST_BUILDERS))}")
    return builder(kernel, dict(extra_files or {}), resolve_cache_root(cache_root))


def default_guest(cache_root: Path | None = None, kernel: Path | None = None) -> GuestArtifacts:
    """The busybox guest with the in-guest executor at ``/usr/bin/iofuzz-exec``."""
    from avocado_iofuzz.executor.build import build_executor  # built by its own module, on demand

    root = resolve_cache_root(cache_root)
    executor_dir = root / "executor"
    executor_dir.mkdir(parents=True, exist_ok=True)
    executor = build_executor(executor_dir)
    return build_guest("busybox", kernel=kernel, extra_files={EXECUTOR_GUEST_PATH: executor}, cache_root=root)
