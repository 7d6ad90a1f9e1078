"""avocado-vt's --vt-* run options: read, honoured by the resolver, refused with a reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from avocado.core.resolver import ReferenceResolutionResult

from avocado_iofuzz.plugins.resolver import IofuzzResolver
from avocado_iofuzz.vt.options import VtChoices, VtOptionError, read_vt_choices

# what avocado-vt 113 puts in the job config when the user gives none of its options (x86 host)
AVOCADO_VT_DEFAULTS = {
    "vt.type": "qemu",
    "vt.guest_os": "JeOS.27",
    "vt.common.arch": None,
    "vt.common.machine_type": "i440fx",
    "vt.qemu.qemu_bin": None,
}


def resolve(reference: str, **options: object):
    config = {"subcommand": "run", **AVOCADO_VT_DEFAULTS}
    config.update({key.replace("__", "."): value for key, value in options.items()})
    return IofuzzResolver(config=config).resolve(reference)


def params_of(resolution) -> list[dict]:
    assert resolution.result == ReferenceResolutionResult.SUCCESS, resolution.info
    return [runnable.kwargs for runnable in resolution.resolutions]


def test_avocado_vts_defaults_choose_nothing():
    assert read_vt_choices(AVOCADO_VT_DEFAULTS) == VtChoices()
    (params,) = params_of(resolve("iofuzz.quick"))
    assert params["shortname"] == "iofuzz.quick" and params["machine_type"] == "pc"
    assert params["qemu_binary"] == "qemu-system-x86_64"


def test_machine_type_q35_picks_the_q35_row():
    (params,) = params_of(resolve("iofuzz.quick.nic.ne2k_isa", vt__common__machine_type="q35"))
    assert params["shortname"] == "iofuzz.quick.nic.ne2k_isa.q35" and params["machine_type"] == "q35"


def test_machine_type_pc_against_a_q35_reference_is_an_error_naming_the_option():
    resolution = resolve("iofuzz.quick.q35", vt__common__machine_type="pc")
    assert resolution.result == ReferenceResolutionResult.ERROR
    assert "--vt-machine-type pc" in resolution.info


def test_machine_type_reaches_a_test_without_machine_rows():
    (params,) = params_of(resolve("sockstates", vt__common__machine_type="q35"))
    assert params["machine_type"] == "q35"


def test_guest_os_picks_our_guest_row():
    (params,) = params_of(resolve("iofuzz.quick", vt__guest_os="debian"))
    assert params["iofuzz_guest"] == "debian" and params["shortname"] == "iofuzz.quick.debian"


def executable(tmp_path: Path) -> Path:
    path = tmp_path / "my-qemu"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_qemu_bin_becomes_qemu_binary_and_extra_params_still_win(tmp_path: Path):
    qemu = executable(tmp_path)
    (params,) = params_of(resolve("iofuzz.quick", vt__qemu__qemu_bin=str(qemu)))
    assert params["qemu_binary"] == str(qemu)
    (params,) = params_of(
        resolve("iofuzz.quick", vt__qemu__qemu_bin=str(qemu), vt__extra_params=["qemu_binary=/usr/bin/true"])
    )
    assert params["qemu_binary"] == "/usr/bin/true"


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("vt.type", "libvirt", ["--vt-type 'libvirt'", "qemu"]),
        ("vt.common.arch", "aarch64", ["--vt-arch 'aarch64'", "x86_64"]),
        ("vt.guest_os", "Fedora.39", ["--vt-guest-os 'Fedora.39'", "busybox, debian, image"]),
        ("vt.common.machine_type", "pseries", ["--vt-machine-type 'pseries'", "q35"]),
        ("vt.qemu.qemu_bin", "/nonexistent/qemu", ["--vt-qemu-bin '/nonexistent/qemu'", "no such executable"]),
    ],
)
def test_a_value_we_cannot_run_is_an_error_saying_what_we_support(key: str, value: str, words: list[str]):
    with pytest.raises(VtOptionError) as raised:
        read_vt_choices({**AVOCADO_VT_DEFAULTS, key: value})
    assert all(word in str(raised.value) for word in words), str(raised.value)
    resolution = resolve("iofuzz.quick", **{key.replace(".", "__"): value})
    assert resolution.result == ReferenceResolutionResult.ERROR and words[0] in resolution.info


def test_a_qemu_bin_that_is_not_executable_is_refused(tmp_path: Path):
    path = tmp_path / "qemu"
    path.write_text("")
    assert not os.access(path, os.X_OK)
    with pytest.raises(VtOptionError, match="no such executable"):
        read_vt_choices({"vt.qemu.qemu_bin": str(path)})


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["mmio_widths"], "--vt-extra-params: 'mmio_widths' is not key=value"),
        (["iofuzz_shards=x"], "param iofuzz_shards = 'x': not an integer"),
    ],
)
def test_a_param_the_resolver_refuses_is_an_error_the_user_sees(extra: list[str], named: str, caplog):
    resolution = resolve("iofuzz.quick", vt__extra_params=extra)
    assert resolution.result == ReferenceResolutionResult.ERROR and named in resolution.info
    # what `avocado run` prints: its own message only says "No tests found"
    assert any(named in record.getMessage() for record in caplog.records if record.name == "avocado.app")


def test_a_param_the_test_checks_still_reaches_the_test():
    """fuzz_kinds=mmio:x is refused by the test (an ERROR naming it, with valid xunit), not here."""
    (params,) = params_of(resolve("iofuzz.quick", vt__extra_params=["fuzz_kinds=mmio:x"]))
    assert params["fuzz_kinds"] == "mmio:x"
