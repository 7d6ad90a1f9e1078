"""The guest kernel: Debian's by default, or one the user names.

QEMU can boot an ELF ``vmlinux`` that carries a PVH entry note directly,
skipping the bzImage's self-decompression, which under TCG saves ≈3 s per
boot. So we pull the xz-compressed vmlinux out of the bzImage once, check that
it is an ELF with the PVH note, and boot that. A kernel without the note
(built without ``CONFIG_PVH``) or compressed with something other than xz is
booted as the bzImage it is: slower, but correct.
"""

from __future__ import annotations

import logging
import lzma
import struct
from dataclasses import dataclass
from pathlib import Path

from avocado_iofuzz.guest import debian_packages
from avocado_iofuzz.guest.cache import MANIFEST_NAME, cached_entry, read_manifest, sha256_file

LOG = logging.getLogger(__name__)

DEBIAN_KERNEL_METAPACKAGE = "linux-image-amd64"
XZ_MAGIC = b"\xfd7zXZ\x00"
ELF_MAGIC = b"\x7fELF"
PT_NOTE = 4
XEN_ELFNOTE_PHYS32_ENTRY = 18
BZIMAGE_SIGNATURE_OFFSET = 0x202  # "HdrS" in the x86 boot protocol header

# Bump when the kernel cache layout or extraction logic changes.
KERNEL_CACHE_VERSION = 1


class KernelError(RuntimeError):
    """The kernel cannot be used to boot the guest."""


@dataclass(frozen=True)
class PreparedKernel:
    boot_file: Path  # what QEMU's -kernel gets
    boot_format: str  # "pvh-elf" or "bzimage"
    source: str  # human-readable origin, e.g. "debian:linux-image-6.1.0-56-amd64=6.1.192-2"
    identity: str  # what a guest's cache key depends on


def is_elf(data: bytes) -> bool:
    return data[:4] == ELF_MAGIC


def is_bzimage(data: bytes) -> bool:
    return data[BZIMAGE_SIGNATURE_OFFSET : BZIMAGE_SIGNATURE_OFFSET + 4] == b"HdrS"


def elf_notes(data: bytes) -> list[tuple[bytes, int, bytes]]:
    """(owner, type, descriptor) of every note in the ELF's PT_NOTE segments."""
    if not is_elf(data) or len(data) < 52:
        raise KernelError("not an ELF file")
    elf_class, endian = data[4], data[5]
    order = "<" if endian == 1 else ">"
    if elf_class == 2:
        phoff, phentsize, phnum = (
            struct.unpack_from(order + "Q", data, 0x20)[0],
            *struct.unpack_from(order + "HH", data, 0x36),
        )
        phdr_format = order + "IIQQQQQQ"  # type, flags, offset, vaddr, paddr, filesz, memsz, align
    elif elf_class == 1:
        phoff, phentsize, phnum = (
            struct.unpack_from(order + "I", data, 0x1C)[0],
            *struct.unpack_from(order + "HH", data, 0x2A),
        )
        phdr_format = order + "IIIIIIII"  # type, offset, vaddr, paddr, filesz, memsz, flags, align
    else:
        raise KernelError(f"unknown ELF class {elf_class}")
    notes = []
    for index in range(phnum):
        fields = struct.unpack_from(phdr_format, data, phoff + index * phentsize)
        if fields[0] != PT_NOTE:
            continue
        offset, size = (fields[2], fields[5]) if elf_class == 2 else (fields[1], fields[4])
        notes.extend(_parse_notes(data[offset : offset + size], order))
    return notes


def _parse_notes(segment: bytes, order: str) -> list[tuple[bytes, int, bytes]]:
    notes = []
    pos = 0
    while pos + 12 <= len(segment):
        namesz, descsz, note_type = struct.unpack_from(order + "III", segment, pos)
        pos += 12
        name = segment[pos : pos + namesz].rstrip(b"\0")
        pos += (namesz + 3) & ~3
        desc = segment[pos : pos + descsz]
        pos += (descsz + 3) & ~3
        notes.append((name, note_type, desc))
    return notes


def has_pvh_entry(data: bytes) -> bool:
    """True when the ELF kernel declares a PVH entry point (QEMU can boot it with -kernel)."""
    return any(owner == b"Xen" and kind == XEN_ELFNOTE_PHYS32_ENTRY for owner, kind, _ in elf_notes(data))


def extract_vmlinux(bzimage: bytes) -> bytes | None:
    """The ELF vmlinux inside an xz-compressed bzImage, or None if there is none.

    The payload starts at an xz stream magic; the magic bytes may also appear
    by chance earlier in the setup code, so every occurrence is tried until
    one decompresses to an ELF.
    """
    start = bzimage.find(XZ_MAGIC)
    while start != -1:
        decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        try:
            payload = decompressor.decompress(bzimage[start:])
        except lzma.LZMAError:
            payload = b""
        if decompressor.eof and is_elf(payload):
            return payload
        start = bzimage.find(XZ_MAGIC, start + 1)
    return None


def _fill_kernel_entry(staged: Path, kernel_bytes: bytes, source: str) -> dict[str, object]:
    """Write the bootable file for ``kernel_bytes`` into ``staged``; returns the manifest."""
    if is_elf(kernel_bytes):
        if not has_pvh_entry(kernel_bytes):
            raise KernelError(
                f"{source} is an ELF kernel without a PVH entry note (CONFIG_PVH); "
                "QEMU cannot boot it directly: pass the bzImage (vmlinuz) instead"
            )
        (staged / "vmlinux").write_bytes(kernel_bytes)
        return {"boot_file": "vmlinux", "boot_format": "pvh-elf", "source": source}
    if not is_bzimage(kernel_bytes):
        raise KernelError(f"{source} is neither an ELF vmlinux nor an x86 bzImage (no 'HdrS' header)")
    (staged / "vmlinuz").write_bytes(kernel_bytes)
    vmlinux = extract_vmlinux(kernel_bytes)
    if vmlinux is not None and has_pvh_entry(vmlinux):
        (staged / "vmlinux").write_bytes(vmlinux)
        return {"boot_file": "vmlinux", "boot_format": "pvh-elf", "source": source}
    why = "is not xz-compressed" if vmlinux is None else "has no PVH entry note"
    LOG.warning("kernel %s %s: booting the bzImage (≈3 s slower per boot under TCG)", source, why)
    return {"boot_file": "vmlinuz", "boot_format": "bzimage", "source": source}


def _prepared(entry: Path, manifest: dict[str, object], identity: str) -> PreparedKernel:
    return PreparedKernel(
        boot_file=entry / str(manifest["boot_file"]),
        boot_format=str(manifest["boot_format"]),
        source=str(manifest["source"]),
        identity=identity,
    )


def prepare_user_kernel(kernel: Path, cache_root: Path) -> PreparedKernel:
    """Ready a user-supplied vmlinuz (bzImage) or ELF vmlinux for booting."""
    kernel = Path(kernel)
    if not kernel.is_file():
        raise KernelError(f"kernel {kernel} does not exist or is not a regular file")
    digest = sha256_file(kernel)
    identity = f"user-sha256:{digest}"

    def build(staged: Path) -> dict[str, object]:
        manifest = _fill_kernel_entry(staged, kernel.read_bytes(), str(kernel))
        manifest["sha256"] = digest
        return manifest

    entry, manifest = cached_entry(cache_root / "kernels", f"user-{digest[:24]}-v{KERNEL_CACHE_VERSION}", build)
    return _prepared(entry, manifest, identity)


def prepare_debian_kernel(cache_root: Path) -> PreparedKernel:
    """Ready the kernel of the package ``linux-image-amd64`` currently points to."""
    try:
        package = debian_packages.resolve_metapackage(
            DEBIAN_KERNEL_METAPACKAGE, "linux-image-", memo_dir=cache_root / "kernels"
        )
    except debian_packages.DebianPackageError as error:
        cached = newest_cached_debian_kernel(cache_root)
        if cached is None:
            raise KernelError(f"cannot get Debian's kernel ({error}); or name a kernel to boot") from error
        LOG.warning("cannot ask apt for the current kernel (%s); using cached %s", error, cached.source)
        return cached
    identity = f"debian:{package.ident}"

    def build(staged: Path) -> dict[str, object]:
        deb = debian_packages.download(package, cache_root / "debs")
        members = debian_packages.extract_members(deb, ["boot/vmlinuz-*"], staged)
        vmlinuz = members["boot/vmlinuz-*"]
        manifest = _fill_kernel_entry(staged, vmlinuz.read_bytes(), identity)
        if vmlinuz.name not in ("vmlinuz", "vmlinux"):
            vmlinuz.unlink()
        manifest["release"] = vmlinuz.name.removeprefix("vmlinuz-")
        manifest["deb"] = deb.name
        return manifest

    safe = package.ident.replace("=", "_").replace(":", "%3a")
    entry, manifest = cached_entry(cache_root / "kernels", f"{safe}-v{KERNEL_CACHE_VERSION}", build)
    return _prepared(entry, manifest, identity)


def newest_cached_debian_kernel(cache_root: Path) -> PreparedKernel | None:
    """The most recently prepared Debian kernel, for when apt cannot be asked (no lists, offline)."""
    found = []
    for entry in (cache_root / "kernels").glob(f"linux-image-*-v{KERNEL_CACHE_VERSION}"):
        manifest = read_manifest(entry)
        if manifest is not None and str(manifest.get("source", "")).startswith("debian:"):
            found.append(((entry / MANIFEST_NAME).stat().st_mtime, entry, manifest))
    if not found:
        return None
    _, entry, manifest = max(found, key=lambda item: item[0])
    return _prepared(entry, manifest, str(manifest["source"]))


def prepare_kernel(kernel: Path | None, cache_root: Path) -> PreparedKernel:
    return prepare_debian_kernel(cache_root) if kernel is None else prepare_user_kernel(kernel, cache_root)
