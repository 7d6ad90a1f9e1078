"""A guest that behaves like a user's Linux image with an SSH server, made from Debian's packages.

A syslinux FAT disk (see ``boot_disk``) holding Debian's vmlinuz and an
initramfs of Debian's base tree plus a small overlay: an init that loads
e1000, configures the address QEMU's user network expects (10.0.2.15/24,
gateway 10.0.2.2), credits a saved random seed, starts Dropbear, and keeps a
root login shell on the serial console. Root has a password. The login shell
is Debian's bash with Debian's own profile (no ``/etc/inputrc`` of ours), as
in an installed system: bracketed paste on, on the serial console.

Dropbear and the two libraries it needs beyond the base are taken from
Debian's packages here, not added to the product's Debian guest: that guest
logs in over its serial console only and is shared with the sockstates C/R
tests; an sshd there would serve nothing but these tests (and rebuild
everyone's cached base).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from boot_disk import bootable_disk

from avocado_iofuzz.guest import debian_packages
from avocado_iofuzz.guest.cache import resolve_cache_root
from avocado_iofuzz.guest.cpio import CpioWriter
from avocado_iofuzz.guest.debian import concatenate_initrd
from avocado_iofuzz.guest.debian_rootfs import debian_base
from avocado_iofuzz.guest.kernel import prepare_kernel
from avocado_iofuzz.guest.kernel_modules import module_tree

PASSWORD = "iofuzz-ssh-pw"
HOSTNAME = "ssh-guest"
# what a user would write for Debian's default bash prompt, "root@ssh-guest:~# "
PROMPT = rf"^root@{HOSTNAME}:\S*#\s*$"
LIBDIR = "usr/lib/x86_64-linux-gnu"
# package -> {glob of the file in the package: where the overlay puts it}
DROPBEAR_FILES = {
    "dropbear-bin": {"usr/sbin/dropbear": "usr/sbin/dropbear"},
    "libtomcrypt1": {f"{LIBDIR}/libtomcrypt.so.1.*": f"{LIBDIR}/libtomcrypt.so.1"},
    "libtommath1": {f"{LIBDIR}/libtommath.so.1.*": f"{LIBDIR}/libtommath.so.1"},
}

SEED_PATH = "var/lib/random-seed"
RNDADDENTROPY = 0x40085203  # _IOW('R', 3, int[2]) of linux/random.h
CREDIT_SEED = (  # run as python3 -c '...': double quotes only
    f'import fcntl, struct; seed = open("/{SEED_PATH}", "rb").read(); '
    f'fcntl.ioctl(open("/dev/urandom", "wb"), {RNDADDENTROPY}, struct.pack("ii", 8 * len(seed), len(seed)) + seed)'
)

INIT = f"""#!/bin/sh
# init of the test's SSH guest: what a distribution's boot does, in a few lines
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
export PATH=/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
hostname {HOSTNAME}
modprobe e1000
ip link set lo up
ip link set eth0 up
# QEMU's user network: the guest is 10.0.2.15 (its DHCP would hand out the same)
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
# The seed saved by the "previous boot", credited as a distribution's random-seed service does:
# otherwise sshd waits ~8 s (under TCG) for the kernel's own entropy.
python3 -c '{CREDIT_SEED}'
# -R: host keys made on first use (ed25519 for OpenSSH's client, instant); -E: log to the console
mkdir -p /etc/dropbear
dropbear -R -E -p 22
echo "{HOSTNAME}: sshd started"
while :; do setsid -c -w bash --login; sleep 0.2; done
"""


def password_hash(password: str) -> str:
    # a SHA-512 crypt hash, as passwd would store it; the guest has no tool to make one at boot
    assert shutil.which("openssl"), "openssl is needed: ./bootstrap.sh --test installs it"
    return subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"], input=password, capture_output=True, text=True, check=True
    ).stdout.strip()


def dropbear_files(cache_root: Path, work: Path) -> dict[str, Path]:
    """Overlay path -> host file of Dropbear and its libraries, from Debian's packages (cached .debs)."""
    files = {}
    debs = cache_root / "debs"
    for package, members in DROPBEAR_FILES.items():
        deb = debian_packages.download(debian_packages.candidate_package(package, debs), debs)
        found = debian_packages.extract_members(deb, list(members), work)
        files.update({target: found[pattern] for pattern, target in members.items()})
    return files


def ssh_initrd(target: Path, work: Path) -> Path:
    """Debian's base tree + our overlay (init, e1000, Dropbear, root's password) at ``target``."""
    cache_root = resolve_cache_root(None)
    tree = module_tree(prepare_kernel(None, cache_root), cache_root, wanted=("e1000",))
    assert tree is not None, "Debian's kernel comes with its modules"
    modules = tree.root / "lib" / "modules"
    with open(work / "overlay.cpio", "wb") as stream, CpioWriter(stream) as overlay:
        overlay.add_file("init", INIT.encode(), perms=0o755)
        # only root logs in; the base's other entries are system accounts, locked with or without a line here
        shadow = f"root:{password_hash(PASSWORD)}:19000:0:99999:7:::\n"
        overlay.add_file("etc/shadow", shadow.encode(), perms=0o640)
        overlay.add_file(SEED_PATH, os.urandom(64), perms=0o600)
        for path, host in dropbear_files(cache_root, work).items():
            overlay.add_file(path, host.read_bytes(), perms=0o755)
        for module in sorted(p for p in modules.rglob("*") if p.is_file()):
            # merged /usr: /lib is a symlink into /usr in the base
            overlay.add_file(f"usr/lib/modules/{module.relative_to(modules).as_posix()}", module.read_bytes())
    concatenate_initrd(target, debian_base(cache_root).archive, (work / "overlay.cpio").read_bytes())
    return target


def sshd_guest_disk(work: Path) -> Path:
    """The guest's bootable disk (raw, ≈60 MB) in ``work``, with ``iofuzz.guest=1`` in its boot entry."""
    vmlinuz = prepare_kernel(None, resolve_cache_root(None)).boot_file.with_name("vmlinuz")
    assert vmlinuz.is_file(), f"no bzImage in the kernel cache: {vmlinuz}"
    initrd = ssh_initrd(work / "initrd", work)
    return bootable_disk(work / "disk.img", vmlinuz, initrd, "console=ttyS0 panic=-1 iofuzz.guest=1")
