"""BareQemu's pure parts: the command line, login synchronisation, argument checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from avocado_iofuzz.guest.artifacts import GuestArtifacts
from avocado_iofuzz.guest.busybox import SHELL_PROMPT_REGEX
from avocado_iofuzz.vm.bare import BareQemu, last_nonempty_line, synced_output

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs a QEMU binary")


@pytest.fixture
def guest(tmp_path: Path) -> GuestArtifacts:
    return GuestArtifacts(
        name="busybox",
        key="k",
        directory=tmp_path,
        kernel=tmp_path / "vmlinux",
        kernel_format="pvh-elf",
        kernel_source="test",
        initrd=tmp_path / "initrd.cpio",
        kernel_params="console=ttyS0 iofuzz.guest=1",
        shell_prompt=SHELL_PROMPT_REGEX,
    )


def option_values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == option]


def test_command_line(guest: GuestArtifacts, tmp_path: Path):
    vm = BareQemu(guest, tmp_path / "run", accel="tcg", memory_mb=512, extra_args=["-device", "isa-debug-exit"])
    argv = vm.build_argv(Path("/tmp/s/serial.sock"), Path("/tmp/s/qmp.sock"))
    assert "-nodefaults" in argv
    assert option_values(argv, "-accel") == ["tcg"]
    assert option_values(argv, "-m") == ["512"]
    assert option_values(argv, "-machine") == ["pc"]
    assert option_values(argv, "-kernel") == [str(guest.kernel)]
    assert option_values(argv, "-initrd") == [str(guest.initrd)]
    assert option_values(argv, "-append") == [guest.kernel_params]
    chardevs = option_values(argv, "-chardev")
    # QMP comes before the serial chardev that blocks QEMU until we connect
    assert chardevs[0].startswith("socket,id=qmp,") and "wait=off" in chardevs[0]
    assert chardevs[1] == "socket,id=serial0,path=/tmp/s/serial.sock,server=on,wait=on"
    assert option_values(argv, "-serial") == ["chardev:serial0"]
    assert argv[-2:] == ["-device", "isa-debug-exit"]
    assert "-trace" not in argv and "-D" not in argv


def test_trace_events_go_to_the_trace_log(guest: GuestArtifacts, tmp_path: Path):
    vm = BareQemu(guest, tmp_path / "run", accel="kvm", trace_events=["memory_region_ops_*", "serial_write"])
    argv = vm.build_argv(Path("/s"), Path("/q"))
    assert option_values(argv, "-trace") == ["memory_region_ops_*", "serial_write"]
    assert option_values(argv, "-D") == [str(tmp_path / "run" / "qemu-trace.log")]


def test_not_started_vm_reports_nothing(guest: GuestArtifacts, tmp_path: Path):
    vm = BareQemu(guest, tmp_path / "run", accel="tcg")
    assert vm.pid is None
    assert not vm.is_alive()
    assert vm.exit_info() is None
    assert vm.qemu_cmdline() == ""
    vm.stop()  # harmless before start


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"accel": "hvf"}, "accel must be"), ({"memory_mb": 8}, "memory_mb must be at least 32")],
)
def test_bad_arguments(guest: GuestArtifacts, tmp_path: Path, kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        BareQemu(guest, tmp_path, **kwargs)


def test_missing_qemu_is_named(guest: GuestArtifacts, tmp_path: Path):
    with pytest.raises(RuntimeError, match="'qemu-system-nope' not found"):
        BareQemu(guest, tmp_path, qemu_binary="qemu-system-nope")


def test_sync_needs_the_token_line_then_a_prompt():
    prompt = SHELL_PROMPT_REGEX
    token = "iofuzzsync-7"
    echo = 'iofuzz-guest# \x1b[6necho iofuzz""sync-7\r\n'
    assert not synced_output(echo, token, prompt)  # only the echoed command
    assert not synced_output(echo + "iofuzzsync-7\r\n", token, prompt)  # prompt not back yet
    assert synced_output(echo + "iofuzzsync-7\r\niofuzz-guest# \x1b[6n", token, prompt)
    # an older token does not count
    assert not synced_output("iofuzzsync-6\r\niofuzz-guest# ", token, prompt)
    assert not synced_output("iofuzzsync-77\r\niofuzz-guest# ", token, prompt)


def test_last_nonempty_line():
    assert last_nonempty_line("a\r\nb\r\n\r\n  \n") == "b"
    assert last_nonempty_line("") == ""
