"""The few kernel modules a guest needs, taken from the kernel's own Debian package.

CRIU in the Debian guest needs nf_tables (``criu check`` fails outright
without it), tun, veth and the sock_diag family, and nf_conntrack_netlink to
dump a network namespace; Debian builds them as modules. We pull exactly those and what they depend on (read from each
module's ``.modinfo`` section) out of the linux-image package the kernel came
from, and index them with ``depmod -b`` so that ``modprobe`` works in the guest.
"""

from __future__ import annotations

import fnmatch
import logging
import posixpath
import shutil
import struct
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from avocado_iofuzz.guest.cache import cached_entry, hash_inputs, read_manifest
from avocado_iofuzz.guest.kernel import PreparedKernel

LOG = logging.getLogger(__name__)

CRIU_MODULES = (
    "nfnetlink",
    "nf_tables",
    # a network namespace's dump includes its conntrack table
    "nf_conntrack_netlink",
    "tun",
    "veth",
    "unix_diag",
    "inet_diag",
    "tcp_diag",
    "udp_diag",
    "raw_diag",
    "netlink_diag",
    "af_packet_diag",
)
# depmod wants these beside the modules; modules.builtin tells modprobe which names need no file
INDEX_FILES = ("modules.order", "modules.builtin", "modules.builtin.modinfo")
MODULES_CACHE_VERSION = 2
MAX_PASSES = 4  # each pass streams the package once; dependencies rarely go two levels deep


class KernelModulesError(RuntimeError):
    """The wanted modules cannot be found or indexed."""


@dataclass(frozen=True)
class ModuleTree:
    root: Path  # holds lib/modules/<release>/...
    release: str
    modules: tuple[str, ...]  # every module file in the tree, by name


def module_name(path: str) -> str:
    """``kernel/net/unix/unix_diag.ko`` → ``unix_diag`` (the kernel spells names with ``_``)."""
    base = posixpath.basename(path)
    for suffix in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def elf_section(data: bytes, wanted: str) -> bytes | None:
    """The bytes of section ``wanted`` of a little-endian ELF64 file, or None."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1 or len(data) < 64:
        raise KernelModulesError("not a little-endian ELF64 file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if shoff == 0 or shstrndx >= shnum:
        return None

    def header(index: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, shoff + index * shentsize)
        return name, offset, size

    _, names_offset, names_size = header(shstrndx)
    names = data[names_offset : names_offset + names_size]
    for index in range(shnum):
        name_index, offset, size = header(index)
        end = names.find(b"\0", name_index)
        if names[name_index:end].decode(errors="replace") == wanted:
            return data[offset : offset + size]
    return None


@dataclass(frozen=True)
class ModuleInfo:
    """What ``.modinfo`` says about how a module relates to others."""

    depends: tuple[str, ...] = ()  # modules whose symbols it uses: they must load first
    softdeps: tuple[str, ...] = ()  # names or aliases modprobe loads with it (e.g. libcrc32c: crc32c)
    aliases: tuple[str, ...] = ()


def module_info(data: bytes) -> ModuleInfo:
    """The dependencies, soft dependencies and aliases in a module's ``.modinfo`` section."""
    depends: tuple[str, ...] = ()
    softdeps: list[str] = []
    aliases: list[str] = []
    for raw in (elf_section(data, ".modinfo") or b"").split(b"\0"):
        field = raw.decode(errors="replace")
        key, _, value = field.partition("=")
        if key == "depends":
            depends = tuple(name for name in value.split(",") if name)
        elif key == "softdep":
            # "pre: crc32c post: x": the words that are not "pre:"/"post:" are module names or aliases
            softdeps += [word for word in value.split() if not word.endswith(":")]
        elif key == "alias":
            aliases.append(value)
    return ModuleInfo(depends, tuple(softdeps), tuple(aliases))


def closure(wanted: tuple[str, ...], infos: dict[str, ModuleInfo], builtin: set[str]) -> list[str]:
    """``wanted`` and every module file they need, dependencies first.

    A hard dependency that is neither a module file nor built in is an error;
    a soft dependency is taken with every module that provides its name or
    alias (modprobe picks among them in the guest), and dropped if none does.
    """
    providers: dict[str, list[str]] = {}
    for name, info in sorted(infos.items()):
        for alias in info.aliases:
            providers.setdefault(alias, []).append(name)
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, needed_by: str | None) -> None:
        if name in order or name in builtin or name in visiting:
            return  # a cycle is possible through soft dependencies: modprobe copes, and so do we
        if name not in infos:
            why = f" (needed by {needed_by})" if needed_by else ""
            raise KernelModulesError(f"module {name}{why} is neither a module file of the kernel nor built in")
        visiting.add(name)
        for dependency in infos[name].depends:
            visit(dependency, name)
        for soft in infos[name].softdeps:
            for provider in [soft] if soft in infos else providers.get(soft, []):
                visit(provider, name)
        order.append(name)

    for name in wanted:
        visit(name, None)
    return order


def _stream_members(deb: Path):
    """(path inside the package, member, archive) for every member of ``deb``'s data."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            for member in archive:
                yield member.name.removeprefix("./"), member, archive
    except tarfile.TarError as error:
        raise KernelModulesError(f"cannot read {deb.name}: {error}") from error
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


def extract_modules(deb: Path, release: str, wanted: tuple[str, ...], target: Path) -> list[str]:
    """Write ``wanted`` and their dependencies from ``deb`` under ``target/lib/modules/<release>``.

    Returns the module names written, dependencies first.
    """
    if shutil.which("dpkg-deb") is None:
        raise KernelModulesError("dpkg-deb not found: it is needed to unpack Debian packages")
    prefix = f"lib/modules/{release}/"
    tree = target / prefix
    infos: dict[str, ModuleInfo] = {}  # every module file of the kernel
    builtin: set[str] = set()
    written: set[str] = set()
    needed = set(wanted)
    for pass_number in range(MAX_PASSES):
        first_pass = pass_number == 0  # the one that reads every module's dependencies
        for path, member, archive in _stream_members(deb):
            if not path.startswith(prefix) or not member.isfile():
                continue
            relative = path[len(prefix) :]
            is_index = relative in INDEX_FILES
            name = module_name(relative) if fnmatch.fnmatch(relative, "kernel/*.ko") else None
            if not (first_pass and (is_index or name)) and name not in needed:
                continue
            source = archive.extractfile(member)
            assert source is not None
            data = source.read()
            if first_pass and name:
                infos[name] = module_info(data)
            if is_index or (name in needed and name not in written):
                (tree / relative).parent.mkdir(parents=True, exist_ok=True)
                (tree / relative).write_bytes(data)
            if is_index and relative == "modules.builtin":
                builtin = {module_name(line) for line in data.decode().split()}
            if name in needed:
                written.add(name)
        if not infos:
            raise KernelModulesError(f"{deb.name} holds no modules under /{prefix}")
        order = closure(wanted, infos, builtin)
        needed = set(order) - written
        if not needed:
            return order
    raise KernelModulesError(f"modules {sorted(needed)} still missing after {MAX_PASSES} passes over {deb.name}")


def run_depmod(root: Path, release: str) -> None:
    """Index ``root/lib/modules/<release>`` so that modprobe finds modules and their dependencies."""
    if shutil.which("depmod") is None and not Path("/usr/sbin/depmod").exists():
        raise KernelModulesError("depmod not found: apt-get install kmod (bootstrap.sh installs it)")
    depmod = shutil.which("depmod") or "/usr/sbin/depmod"
    proc = subprocess.run([depmod, "-b", str(root), release], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise KernelModulesError(f"depmod -b {root} {release} failed: {proc.stderr.strip()[-600:]}")
    if not (root / "lib" / "modules" / release / "modules.dep").is_file():
        raise KernelModulesError(f"depmod wrote no modules.dep under {root}/lib/modules/{release}")


def kernel_package(kernel: PreparedKernel, cache_root: Path) -> tuple[Path, str] | None:
    """The linux-image .deb and release a Debian kernel came from; None for a user's kernel."""
    manifest = read_manifest(kernel.boot_file.parent) or {}
    deb_name, release = manifest.get("deb"), manifest.get("release")
    if not kernel.identity.startswith("debian:") or not deb_name or not release:
        return None
    deb = cache_root / "debs" / str(deb_name)
    if not deb.is_file():
        from avocado_iofuzz.guest import debian_packages

        name, _, version = kernel.identity.removeprefix("debian:").partition("=")
        deb = debian_packages.download(debian_packages.DebianPackage(name, version), cache_root / "debs")
    return deb, str(release)


def module_tree(kernel: PreparedKernel, cache_root: Path, wanted: tuple[str, ...] = CRIU_MODULES) -> ModuleTree | None:
    """The cached, indexed module tree for ``kernel``; None when the kernel is not a Debian package's."""
    found = kernel_package(kernel, cache_root)
    if found is None:
        LOG.warning(
            "kernel %s is not Debian's: no modules shipped; CRIU needs %s built in", kernel.source, ", ".join(wanted)
        )
        return None
    deb, release = found
    inputs = {"version": MODULES_CACHE_VERSION, "kernel": kernel.identity, "modules": list(wanted)}

    def build(staged: Path) -> dict[str, object]:
        order = extract_modules(deb, release, wanted, staged)
        run_depmod(staged, release)
        return {"inputs": inputs, "release": release, "modules": order}

    entry, manifest = cached_entry(cache_root / "kernel-modules", hash_inputs(inputs), build)
    return ModuleTree(entry, str(manifest["release"]), tuple(manifest["modules"]))
