#!/usr/bin/env bash
# Set up avocado-iofuzz on a Debian machine: the host packages it drives
# (QEMU, busybox for the embedded guest, the tools avocado-vt insists on),
# then a virtualenv in .venv with this package installed (not editable: the
# same install a user gets). `--test` adds the selftest tools.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

# qemu-system-x86: the VMs; busybox-static: the embedded guest's userland;
# gcc + libc6-dev: the static in-guest executor; socat, netcat-openbsd,
# tcpdump, arping, iproute2, xz-utils: required by avocado-vt's checks and
# serial console; qemu-utils: recommended by avocado-vt; cpio, zstd: guest
# images; python3-venv: the virtualenv; mmdebstrap, fakechroot, fakeroot: the
# Debian guest's root tree, built unprivileged; kmod: depmod indexes its modules;
# openssh-client: the image row's SSH login (iofuzz_login = ssh).
packages=(qemu-system-x86 qemu-utils busybox-static gcc libc6-dev socat netcat-openbsd tcpdump
          arping iproute2 xz-utils cpio zstd python3-venv mmdebstrap fakechroot fakeroot kmod openssh-client)
# groovy + a JRE: the selftests parse the Jenkinsfile with the Groovy compiler;
# syslinux, mtools, dosfstools: they build a disk image that boots by itself;
# openssl: the root password hash of the SSH test's guest;
# the rest: what `make criu` needs, for the host C/R test's CRIU 4.1
# (avocado_iofuzz/guest/host_criu.py builds Debian trixie's: bookworm's 3.17.1
# cannot dump on kernels >= 6.13)
[ -n "$extras" ] && packages+=(groovy default-jre-headless syslinux syslinux-common mtools dosfstools openssl
                               make pkg-config protobuf-c-compiler libprotobuf-c-dev libprotobuf-dev
                               protobuf-compiler libnl-3-dev libnet1-dev libcap-dev libbsd-dev
                               libnftables-dev libgnutls28-dev uuid-dev)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    as_root=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || { echo "bootstrap: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
        as_root=(sudo)
    fi
    echo "bootstrap: installing ${missing[*]}"
    "${as_root[@]}" apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# The embedded guest's kernel comes from Debian's linux-image package through
# apt's package lists: a machine that never ran `apt-get update` has none.
if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
    echo "bootstrap: apt has no package lists yet: apt-get update"
    if [ "$(id -u)" = 0 ]; then apt-get update -q >/dev/null; else sudo apt-get update -q >/dev/null; fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# setuptools installs from build/lib, which keeps files since deleted or
# renamed in the checkout (a stale VT test module would shadow a package)
rm -rf build ./*.egg-info
.venv/bin/pip install -q --disable-pip-version-check ".${extras}"
echo "bootstrap: ready (.venv/bin/avocado, .venv/bin/pytest)"
