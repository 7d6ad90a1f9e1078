"""Synthetic kernels for the guest-builder tests: tiny ELF files and bzImage-like wrappers."""

from __future__ import annotations

import lzma
import struct

from avocado_iofuzz.guest.kernel import BZIMAGE_SIGNATURE_OFFSET, XEN_ELFNOTE_PHYS32_ENTRY, XZ_MAGIC


def note(owner: bytes, kind: int, desc: bytes) -> bytes:
    name = owner + b"\0"
    return (
        struct.pack("<III", len(name), len(desc), kind)
        + name
        + b"\0" * (-len(name) % 4)
        + desc
        + b"\0" * (-len(desc) % 4)
    )


def elf64(notes: bytes, payload: bytes = b"") -> bytes:
    """An x86-64 ELF with one PT_NOTE segment holding ``notes``, then ``payload``."""
    ehdr_size, phdr_size = 64, 56
    notes_offset = ehdr_size + phdr_size
    ident = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0x1000000, ehdr_size, 0, 0, ehdr_size, phdr_size, 1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 4, 4, notes_offset, 0, 0, len(notes), len(notes), 4)
    return ehdr + phdr + notes + payload


def pvh_elf(payload: bytes = b"kernel text") -> bytes:
    notes = note(b"Xen", 6, b"linux\0") + note(b"Xen", XEN_ELFNOTE_PHYS32_ENTRY, struct.pack("<I", 0x1000000))
    return elf64(notes, payload)


def plain_elf(payload: bytes = b"kernel text") -> bytes:
    return elf64(note(b"GNU", 3, b"\x01\x02\x03\x04"), payload)


def bzimage(inner: bytes, decoy_magic: bool = True, compress: bool = True) -> bytes:
    """A bzImage-shaped blob: the boot header signature, then ``inner`` as an xz stream.

    ``decoy_magic`` puts a stray xz magic before the real stream, as real
    setup code can contain those bytes by chance.
    """
    head = bytearray(0x400)
    head[BZIMAGE_SIGNATURE_OFFSET : BZIMAGE_SIGNATURE_OFFSET + 4] = b"HdrS"
    blob = bytes(head)
    if decoy_magic:
        blob += XZ_MAGIC + b"not a stream"
    payload = lzma.compress(inner, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32) if compress else inner
    return blob + payload + b"\0" * 64
