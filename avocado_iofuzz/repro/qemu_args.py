"""From the QEMU command line a trace recorded to the args of a qtest replay.

A replay must build the same machine and devices, but none of the run's
host plumbing: no guest kernel (the vCPU never starts), no monitor or serial
sockets of the original run (they may still exist, or belong to another VM),
no display, no accelerator (``-qtest`` with ``-S`` runs on TCG), no host
port forwards (they would collide with a running VM). Chardevs keep their
ids but become ``null`` backends, so devices wired to them (``isa-serial``,
``virtserialport``) are still created; drives get ``snapshot=on`` so a
replay never writes to a disk image. No file the user's arguments name is
opened for writing (chardev and serial files, logs, traces, packet dumps,
audio captures): a replay must never truncate the evidence of the run.

Options not listed here are kept as they are: an unknown option is more
likely machine configuration than host plumbing.
"""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Sequence

# Options that take no value. Those in _DROP_FLAGS are removed.
_FLAGS = frozenset(
    {
        "-S", "-nographic", "-nodefaults", "-enable-kvm", "-no-reboot", "-no-shutdown", "-no-hpet",
        "-no-acpi", "-usb", "-daemonize", "-snapshot", "-no-user-config", "-nodefconfig", "-no-fd-bootchk",
        "-enable-fips", "-no-kvm", "-old-param", "-full-screen", "-alt-grab", "-ctrl-grab", "-no-quit",
        "-no-frame", "-s", "-preconfig",
    }
)  # fmt: skip
_DROP_FLAGS = frozenset({"-S", "-nographic", "-enable-kvm", "-daemonize", "-s", "-preconfig", "-full-screen"})
# Options whose value is host plumbing, the guest's boot payload or tracing: dropped with their value.
_DROP_WITH_VALUE = frozenset(
    {
        "-name", "-uuid", "-accel", "-kernel", "-initrd", "-append", "-dtb", "-mon", "-qmp", "-qmp-pretty",
        "-monitor", "-display", "-vnc", "-spice", "-pidfile", "-D", "-d", "-trace", "-qtest", "-qtest-log",
        "-sandbox", "-incoming", "-loadvm", "-gdb", "-runas", "-chroot", "-msg", "-k", "-vga-display",
        "-serial-log", "-debugcon", "-seed",
    }
)  # fmt: skip
# objects whose only job is writing a host file: a replay must never truncate the user's evidence
_FILE_OBJECTS = frozenset({"filter-dump"})
_NETDEV_KEEP = ("id", "restrict", "net", "host", "ipv4", "ipv6")


class ReplayArgsError(ValueError):
    """The recorded command line cannot be turned into replay args."""


def _options(text: str) -> list[str]:
    """Split ``a=1,b=2`` into options, honouring QEMU's ``,,`` escape."""
    parts, current, i = [], "", 0
    while i < len(text):
        if text[i] == ",":
            if text[i + 1 : i + 2] == ",":
                current += ",,"
                i += 2
                continue
            parts.append(current)
            current = ""
        else:
            current += text[i]
        i += 1
    parts.append(current)
    return parts


def _strip_accel(machine: str) -> str:
    """``pc,accel=kvm,memory-backend=m`` -> ``pc,memory-backend=m``."""
    return ",".join(opt for opt in _options(machine) if not opt.startswith("accel="))


def _null_chardev(value: str) -> str:
    ids = [opt for opt in _options(value) if opt.startswith("id=")]
    if not ids:
        raise ReplayArgsError(f"-chardev {value!r} has no id=")
    return f"null,{ids[0]}"


def _null_serial(value: str) -> str:
    # "none" means no device; a "chardev:ID" keeps pointing at the (now null) chardev
    if value == "none" or value.startswith("chardev:"):
        return value
    return "null"


def _tame_netdev(value: str) -> str:
    """Keep a user netdev's id (and restrict it); drop forwards and everything host-facing."""
    options = _options(value)
    backend = options[0]
    if backend != "user":
        # tap/bridge/socket backends need host resources: a user backend stands in
        kept = [opt for opt in options[1:] if opt.startswith("id=")]
        return ",".join(["user", *kept, "restrict=on"])
    kept = [opt for opt in options[1:] if opt.split("=", 1)[0] in _NETDEV_KEEP]
    if not any(opt.startswith("restrict=") for opt in kept):
        kept.append("restrict=on")
    return ",".join(["user", *kept])


def _snapshot_drive(value: str) -> str:
    options = _options(value)
    keys = {opt.split("=", 1)[0]: opt for opt in options}
    if "snapshot" in keys or keys.get("readonly") in ("readonly=on", "readonly=yes"):
        return value
    if "file" not in keys:  # an empty drive (cdrom without media...): nothing to write to
        return value
    return value + ",snapshot=on"


def _null_audiodev(value: str) -> str:
    """``wav,id=a,path=out.wav`` -> ``none,id=a``: the device stays, no host file is (re)written."""
    return ",".join(["none", *(opt for opt in _options(value)[1:] if opt.startswith("id="))])


def _cpu(value: str) -> str | None:
    """``-cpu host`` needs KVM, which a replay does not use: fall back to QEMU's default model."""
    model = _options(value)[0]
    return None if model in ("host", "kvm64,+kvm") else value


def _console_chardev(argv: Sequence[str]) -> str | None:
    """The chardev id behind the guest's first serial port (ttyS0), if a chardev backs it."""
    for option, value in itertools.pairwise(argv):
        if option == "-device" and _options(value)[0] == "isa-serial":
            for opt in _options(value)[1:]:
                if opt.startswith("chardev="):
                    return opt.split("=", 1)[1]
        if option == "-serial" and value.startswith("chardev:"):
            return value.split(":", 1)[1]
    return None


def _transform(qemu_cmdline: str | Sequence[str], console: str | None) -> tuple[str, list[str]]:
    argv = shlex.split(qemu_cmdline) if isinstance(qemu_cmdline, str) else list(qemu_cmdline)
    if not argv:
        raise ReplayArgsError("the recorded QEMU command line is empty")
    binary, rest = argv[0], argv[1:]
    if binary.startswith("-"):
        raise ReplayArgsError(f"the recorded QEMU command line does not start with a binary: {binary!r}")
    out: list[str] = []
    i = 0
    while i < len(rest):
        option = rest[i]
        # QEMU accepts --option too
        name = option[1:] if option.startswith("--") else option
        if not name.startswith("-"):
            raise ReplayArgsError(f"unexpected word {option!r} in the recorded QEMU command line (not an option)")
        if name in _FLAGS:
            if name not in _DROP_FLAGS:
                out.append(name)
            i += 1
            continue
        if i + 1 >= len(rest):
            raise ReplayArgsError(f"option {option} has no value at the end of the recorded QEMU command line")
        value = rest[i + 1]
        i += 2
        if name in _DROP_WITH_VALUE:
            continue
        if name in ("-machine", "-M"):
            value = _strip_accel(value)
        elif name == "-chardev":
            if console is not None and f"id={console}" in _options(value):
                continue  # the caller gives the console a backend of its own
            value = _null_chardev(value)
        elif name in ("-serial", "-parallel"):
            value = _null_serial(value)
        elif name == "-netdev":
            value = _tame_netdev(value)
        elif name == "-drive":
            value = _snapshot_drive(value)
        elif name == "-object" and _options(value)[0] in _FILE_OBJECTS:
            continue  # it writes a host file (a packet dump...) the user's run owns
        elif name == "-audiodev":
            value = _null_audiodev(value)
        elif name == "-cpu":
            cpu = _cpu(value)
            if cpu is None:
                continue
            value = cpu
        out += [name, value]
    return binary, out


def replay_args(qemu_cmdline: str | Sequence[str]) -> tuple[str, list[str]]:
    """``(binary, args)`` for a qtest replay of a VM started with ``qemu_cmdline``."""
    return _transform(qemu_cmdline, console=None)


CONSOLE_CHARDEV = "serial0"  # the id the bare VM's console code looks for


def guest_args(qemu_cmdline: str | Sequence[str]) -> tuple[str, list[str], bool]:
    """``(binary, args, has_console)`` to boot the recorded machine again with a kernel, console and QMP of our own.

    The machine and devices are the recorded ones; kernel, monitors, display
    and accelerator are left to the caller. The serial port the guest's
    console (``ttyS0``) was on keeps its place but now reads from the chardev
    :data:`CONSOLE_CHARDEV`, which the caller defines (its own socket).
    ``has_console`` False: no chardev backed ``ttyS0``; the caller adds
    ``-serial chardev:serial0``.
    """
    argv = shlex.split(qemu_cmdline) if isinstance(qemu_cmdline, str) else list(qemu_cmdline)
    console = _console_chardev(argv)
    binary, args = _transform(argv, console=console)
    if console is None:
        return binary, args, False
    renamed = []
    for option, value in zip(["", *args[:-1]], args, strict=True):
        if option == "-device" and _options(value)[0] == "isa-serial":
            value = ",".join(f"chardev={CONSOLE_CHARDEV}" if o == f"chardev={console}" else o for o in _options(value))
        elif option == "-serial" and value == f"chardev:{console}":
            value = f"chardev:{CONSOLE_CHARDEV}"
        elif option == "-chardev" and f"id={CONSOLE_CHARDEV}" in _options(value):
            raise ReplayArgsError(f"the recorded command line already has a chardev {CONSOLE_CHARDEV!r}")
        renamed.append(value)
    return binary, renamed, True
