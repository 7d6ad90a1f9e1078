"""Each device row's iofuzz_devices are the QOM types its extra_params give QEMU.

The row check (vt/iofuzz_test.check_row_devices) compares iofuzz_devices with
what QEMU lists under /machine/peripheral-anon: if a row named a type QEMU
files under another name, every run of that row would ERROR. QEMU itself is
asked here, stopped before the first instruction (-S), one start per row.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import pytest

from avocado_iofuzz.vm.qmp import QmpClient
from avocado_iofuzz.vm.qom import missing_devices, parse_device_list, peripheral_types
from avocado_iofuzz.vt.catalog import TestCatalog

QEMU = "qemu-system-x86_64"
START_TIMEOUT = 30.0


def device_rows(machine: str) -> list[dict]:
    rows = TestCatalog().variants("iofuzz.quick", expand_all=True)
    # one busybox row per device: the guest does not change QEMU's devices
    return [r for r in rows if r.get("iofuzz_devices") and r["guest_os"] == "busybox" and r["machine"] == machine]


def qom_devices(tmp_path: Path, machine: str, extra_params: str) -> list[str]:
    socket = tmp_path / "qmp.sock"
    command = [QEMU, "-machine", f"{machine},accel=tcg", "-S", "-nodefaults", "-display", "none",
               "-qmp", f"unix:{socket},server=on,wait=off", *shlex.split(extra_params)]  # fmt: skip
    qemu = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    client = QmpClient(socket)
    try:
        try:
            client.connect(time.monotonic() + START_TIMEOUT)
        except Exception:
            qemu.kill()
            raise AssertionError(f"{command} did not start: {qemu.communicate(timeout=10)[1]!r}") from None
        return peripheral_types(lambda name, arguments: client.execute(name, **arguments))
    finally:
        client.close()
        qemu.kill()
        qemu.wait(timeout=10)


def test_every_device_rows_devices_are_in_qemus_qom(tmp_path: Path):
    rows = device_rows("pc")
    # q35's rows add the same arguments: QEMU is asked once per device (a start takes ~0.5 s under TCG)
    assert [(r["extra_params"], r["iofuzz_devices"]) for r in device_rows("q35")] == [
        (r["extra_params"], r["iofuzz_devices"]) for r in rows
    ]
    assert len(rows) >= 60
    wrong = {}
    for row in rows:
        present = qom_devices(tmp_path, row["machine_type"], row["extra_params"])
        missing = missing_devices(parse_device_list(row["iofuzz_devices"]), present)
        if missing:
            wrong[row["shortname"]] = (missing, present)
    assert not wrong, wrong


@pytest.mark.parametrize("row", ["iofuzz.quick.nic.ne2k_isa", "iofuzz.quick.audio.intel_hda"])
def test_a_row_without_its_extra_params_lacks_its_devices_in_qom(tmp_path: Path, row: str):
    """The check can fail: what the user's extra_params=... leaves is missing in QOM."""
    (params,) = TestCatalog().variants(row, extra_params=["extra_params=-device pci-testdev"])
    present = qom_devices(tmp_path, params["machine_type"], params["extra_params"])
    assert present == ["pci-testdev"]
    assert missing_devices(parse_device_list(params["iofuzz_devices"]), present)
