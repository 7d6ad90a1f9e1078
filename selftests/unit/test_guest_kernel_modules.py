"""Kernel modules for the Debian guest: .modinfo parsing and the dependency closure."""

from __future__ import annotations

import struct

import pytest

from avocado_iofuzz.guest.kernel_modules import (
    KernelModulesError,
    ModuleInfo,
    closure,
    elf_section,
    module_info,
    module_name,
)


def elf_with_sections(sections: dict[str, bytes]) -> bytes:
    """A little-endian ELF64 whose section table holds ``sections`` plus the null and name sections."""
    names = b"\0" + b"".join(name.encode() + b"\0" for name in [*sections, ".shstrtab"])
    body = b""
    headers = [struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)]
    offset = 64
    name_offset = 1
    for name, data in [*sections.items(), (".shstrtab", names)]:
        headers.append(struct.pack("<IIQQQQIIQQ", name_offset, 1, 0, 0, offset, len(data), 0, 0, 1, 0))
        name_offset += len(name) + 1
        body += data
        offset += len(data)
    shoff = offset
    ident = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, len(headers),
                               len(headers) - 1)
    return ehdr + body + b"".join(headers)


def test_module_names_follow_the_kernel_spelling() -> None:
    assert module_name("kernel/net/unix/unix_diag.ko") == "unix_diag"
    assert module_name("kernel/arch/x86/crypto/crc32c-intel.ko") == "crc32c_intel"
    assert module_name("kernel/lib/libcrc32c.ko.xz") == "libcrc32c"


def test_modinfo_gives_dependencies_soft_dependencies_and_aliases() -> None:
    modinfo = b"\0".join([b"license=GPL", b"softdep=pre: crc32c post: extra", b"alias=crypto-foo",
                          b"alias=foo", b"depends=nfnetlink,libcrc32c", b"name=nf_tables"]) + b"\0"
    info = module_info(elf_with_sections({".text": b"\x90" * 8, ".modinfo": modinfo}))
    assert info == ModuleInfo(("nfnetlink", "libcrc32c"), ("crc32c", "extra"), ("crypto-foo", "foo"))


def test_a_module_without_modinfo_has_no_dependencies() -> None:
    data = elf_with_sections({".text": b"\x90"})
    assert elf_section(data, ".modinfo") is None
    assert module_info(data) == ModuleInfo()


def test_not_an_elf_is_refused() -> None:
    with pytest.raises(KernelModulesError, match="ELF64"):
        module_info(b"not an elf file at all, just text padding it out to sixty-four bytes......")


INFOS = {
    "nf_tables": ModuleInfo(depends=("nfnetlink", "libcrc32c")),
    "nfnetlink": ModuleInfo(),
    "libcrc32c": ModuleInfo(softdeps=("crc32c",)),
    "crc32c_generic": ModuleInfo(aliases=("crc32c", "crypto-crc32c")),
    "crc32c_intel": ModuleInfo(aliases=("crc32c",)),
    "tcp_diag": ModuleInfo(depends=("inet_diag",)),
    "inet_diag": ModuleInfo(),
    "veth": ModuleInfo(),
}


def test_closure_puts_dependencies_first_and_takes_every_provider_of_a_soft_dependency() -> None:
    order = closure(("nf_tables", "tcp_diag"), INFOS, builtin=set())
    assert set(order) == {"nf_tables", "nfnetlink", "libcrc32c", "crc32c_generic", "crc32c_intel",
                          "tcp_diag", "inet_diag"}
    for module, info in INFOS.items():
        for dependency in info.depends:
            if module in order:
                assert order.index(dependency) < order.index(module)
    assert "veth" not in order


def test_built_in_modules_are_not_files_to_ship() -> None:
    assert closure(("tcp_diag",), INFOS, builtin={"inet_diag"}) == ["tcp_diag"]


def test_a_missing_hard_dependency_names_who_needs_it() -> None:
    infos = {"a": ModuleInfo(depends=("ghost",))}
    with pytest.raises(KernelModulesError, match=r"ghost \(needed by a\)"):
        closure(("a",), infos, builtin=set())


def test_a_soft_dependency_nobody_provides_is_dropped() -> None:
    infos = {"a": ModuleInfo(softdeps=("nothing-provides-this",))}
    assert closure(("a",), infos, builtin=set()) == ["a"]


def test_cycles_through_soft_dependencies_end() -> None:
    infos = {"a": ModuleInfo(softdeps=("b",)), "b": ModuleInfo(softdeps=("a",))}
    assert sorted(closure(("a",), infos, builtin=set())) == ["a", "b"]
