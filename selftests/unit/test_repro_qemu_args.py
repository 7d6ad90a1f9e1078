"""From a recorded QEMU command line to the args of a qtest replay and of a replay guest."""

from __future__ import annotations

import shlex

import pytest

from avocado_iofuzz.repro.qemu_args import CONSOLE_CHARDEV, ReplayArgsError, guest_args, replay_args

# shaped like avocado-vt's qemu_vm command line for our busybox guest (paths shortened)
AVOCADO_VT = (
    "/usr/bin/qemu-system-x86_64 -S  -name 'vm1' -machine pc,accel=tcg,memory-backend=mem-machine_mem  -nodefaults"
    "  -vga none -m 256 -object memory-backend-ram,size=256M,id=mem-machine_mem  -smp 1,maxcpus=1"
    " -chardev socket,server=on,path=/var/tmp/a/monitor-qmp,id=qmp_id_qmpmonitor1,wait=off"
    "  -mon chardev=qmp_id_qmpmonitor1,mode=control"
    " -chardev socket,server=on,path=/var/tmp/a/serial-serial0,id=chardev_serial0,wait=off"
    " -device isa-serial,id=serial0,chardev=chardev_serial0  -kernel '/c/vmlinux'"
    "  -append 'console=ttyS0 iofuzz.guest=1 panic=-1'  -initrd '/c/initrd.cpio'  -nographic"
    " -device gus,audiodev=snd0 -audiodev none,id=snd0"
    " -netdev user,id=n0,hostfwd=tcp:127.0.0.1:5555-:22 -device e1000,netdev=n0,romfile="
    " -drive id=d0,if=none,file=/images/disk.qcow2,format=qcow2 -device ide-hd,drive=d0 -cpu host"
)


def test_replay_keeps_machine_and_devices_and_drops_host_plumbing():
    binary, args = replay_args(AVOCADO_VT)
    assert binary == "/usr/bin/qemu-system-x86_64"
    line = shlex.join(args)
    kept = (
        "-nodefaults", "-device gus,audiodev=snd0", "-audiodev none,id=snd0", "-device e1000,netdev=n0,romfile=",
        "-object memory-backend-ram,size=256M,id=mem-machine_mem", "-m 256", "-vga none",
    )  # fmt: skip
    for words in kept:
        assert words in line
    for dropped in (
        "-S",
        "-name",
        "-kernel",
        "-initrd",
        "-append",
        "-mon",
        "-nographic",
        "hostfwd",
        "/var/tmp",
        "-cpu",
    ):
        assert dropped not in args and dropped not in line
    assert "-machine pc,memory-backend=mem-machine_mem" in line  # accel= is the replay's business
    assert "-chardev null,id=chardev_serial0" in line  # the serial device stays, on a null backend
    assert "-netdev user,id=n0,restrict=on" in line
    assert "file=/images/disk.qcow2,format=qcow2,snapshot=on" in line  # a replay never writes an image


def test_replay_guest_keeps_the_console_on_the_recorded_serial_port():
    _, args, has_console = guest_args(AVOCADO_VT)
    line = shlex.join(args)
    assert has_console
    assert f"-device isa-serial,id=serial0,chardev={CONSOLE_CHARDEV}" in line
    assert "id=chardev_serial0" not in line  # the caller defines the console's chardev
    assert "-chardev null,id=qmp_id_qmpmonitor1" in line


def test_bare_qemu_style_serial_option_is_renamed_too():
    _, args, has_console = guest_args(
        "qemu-system-x86_64 -chardev socket,id=console,path=/x,server=on,wait=on"
        " -serial chardev:console -device pvpanic"
    )
    assert has_console and args == ["-serial", f"chardev:{CONSOLE_CHARDEV}", "-device", "pvpanic"]


def test_a_machine_without_a_console_chardev_gets_none():
    assert guest_args("qemu-system-x86_64 -machine q35 -device edu") == (
        "qemu-system-x86_64", ["-machine", "q35", "-device", "edu"], False,
    )  # fmt: skip


def test_qemus_escaped_commas_are_kept():
    _, args = replay_args("qemu -machine pc,accel=kvm,dump-guest-core=off -drive file=a,,b.img,format=raw")
    assert args == ["-machine", "pc,dump-guest-core=off", "-drive", "file=a,,b.img,format=raw,snapshot=on"]


@pytest.mark.parametrize(
    ("cmdline", "message"),
    [
        ("", "empty"),
        ("-machine pc", "does not start with a binary"),
        ("qemu -machine", "has no value"),
        ("qemu stray -machine pc", "not an option"),
        ("qemu -chardev socket,path=/x", "has no id="),
    ],
)
def test_unusable_command_lines_are_named(cmdline, message):
    with pytest.raises(ReplayArgsError, match=message):
        replay_args(cmdline)


def test_no_file_the_users_arguments_name_reaches_a_replay():
    """Chardev files, serial/debugcon files, logs, traces, packet dumps, audio captures: all left out."""
    written = [
        "-chardev", "file,id=log0,path=/evidence/serial.log", "-device", "isa-serial,chardev=log0",
        "-serial", "file:/evidence/ttyS1.log", "-debugcon", "file:/evidence/debugcon.log",
        "-D", "/evidence/qemu.log", "-trace", "enable=e1000e_*,file=/evidence/trace.log",
        "-pidfile", "/evidence/qemu.pid", "-netdev", "user,id=n0", "-device", "e1000e,netdev=n0",
        "-object", "filter-dump,id=f0,netdev=n0,file=/evidence/dump.pcap",
        "-audiodev", "wav,id=a0,path=/evidence/out.wav", "-device", "AC97,audiodev=a0",
    ]  # fmt: skip
    cmdline = ["/usr/bin/qemu-system-x86_64", "-machine", "pc", *written]
    _, args = replay_args(cmdline)
    _, guest, _ = guest_args(cmdline)
    for replay in (args, guest):
        assert not [word for word in replay if "/evidence" in word]
        assert "e1000e,netdev=n0" in replay and "AC97,audiodev=a0" in replay and "none,id=a0" in replay
