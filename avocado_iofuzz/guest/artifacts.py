"""What a built guest is, and the constants every guest builder shares.

A leaf module: the builders (build.py, debian.py), the VM backends and the
triage replays all speak of ``GuestArtifacts`` without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from avocado_iofuzz.executor.protocol import DEFAULT_BINARY, GUEST_MARKER
from avocado_iofuzz.model.dma import SCRATCH_KERNEL_PARAM

# Bump whenever a change in this package changes what a build produces.
BUILDER_VERSION = 1

GUEST_MARKER_PARAM = GUEST_MARKER  # the in-guest executor refuses to run without it
# Not quiet: avocado-vt's serial login waits for 500 characters of console
# output before it looks for prompts, and the full boot log costs no
# measurable time under TCG (≈22 kB, prompt after ≈1.5 s either way).
# panic=-1 reboots a panicked guest at once instead of leaving it hung, so a
# guest panic shows up as a reboot on the console rather than as a hang.
# memmap= reserves the scratch memory of DMA-aware values (fuzz_values = dma):
# RAM the kernel never uses, which the executor maps through /dev/mem.
GUEST_KERNEL_PARAMS = f"console=ttyS0 {GUEST_MARKER_PARAM} panic=-1 {SCRATCH_KERNEL_PARAM}"
EXECUTOR_GUEST_PATH = DEFAULT_BINARY  # where the embedded guests carry the executor


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
