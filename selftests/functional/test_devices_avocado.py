"""The device matrix through real avocado: listed whole, one q35 row run with every kind, lockdown cancels.

Only one row boots here (the CI budget); docs/results/findings.rst, "Which rows ran, and how",
records the rows run by hand.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from avocado_jobs import avocado_command, avocado_env, run_avocado

from avocado_iofuzz.campaign.trace import read_trace
from avocado_iofuzz.vt.paths import cfg_dir

pytestmark = pytest.mark.guest


def device_rows() -> list[str]:
    """``class.row`` of every device row in cfg/devices.cfg (rows with their own ``- name:`` under a class)."""
    rows, current = [], None
    for line in (cfg_dir() / "devices.cfg").read_text().splitlines():
        match = re.match(r"^( *)- @?(\w+):", line)
        if not match:
            continue
        depth = len(match[1])
        if depth == 4:
            current = match[2]
            if current in ("none", "platform", "pc", "q35"):
                rows.append(current)
        elif depth == 12:
            rows.append(f"{current}.{match[2]}")
    return rows


def test_avocado_list_shows_every_device_row_on_both_machines(tmp_path):
    out = subprocess.run(
        [str(avocado_command("x", tmp_path)[0]), "list", "iofuzz.quick"],
        env=avocado_env(),
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    listed = set(re.findall(r"^avocado-vt (\S+)$", out, re.M))
    rows = [r for r in device_rows() if r not in ("none", "pc", "q35")]
    assert len(rows) > 50
    for row in rows:
        # the defaults (pc, busybox) stay out of the name; q35 and the other guests show
        assert f"iofuzz.quick.{row}" in listed, row
        assert f"iofuzz.quick.{row}.q35" in listed, row
    assert {"iofuzz.quick", "iofuzz.quick.q35", "iofuzz.quick.platform.q35.debian"} <= listed


def test_a_q35_device_row_fuzzes_its_device_in_every_kind(tmp_path):
    job = run_avocado("iofuzz.quick.nic.e1000.q35", tmp_path, {"fuzz_seed": "77", "fuzz_strategy": "blind"})
    test = job.tests[0]
    assert test["name"].endswith("iofuzz.quick.nic.e1000.q35")
    assert test["status"] == "PASS", job.output
    trace = read_trace(job.data_file("trace.iofuzz"))
    plans = trace.plans.values()
    assert {p.space for p in plans} == {"pio", "mmio", "pci"}
    # focused on the e1000 (8086:100e): its BARs and its config space only
    assert all("8086:100e" in p.name for p in plans if p.space != "pio")
    assert all(trace.last_done(p.index) == p.op_count for p in plans)
    # pci_restore = yes (the default): the zero phase alone moved the e1000's BARs; the config range put them back
    restores = [e for e in trace.events if e.kind == "pci_restore"]
    assert restores and all(trace.plans[e.data["range"]].space == "pci" for e in restores)
    assert all(e.data["pci_restore"] is True for e in trace.events if e.kind == "start")
    assert "-device e1000,romfile=" in trace.header["qemu_cmdline"] and trace.header["machine_type"] == "q35"
    listing = job.data_file("pci-resources.txt").read_text()
    assert "0x8086 0x100e" in listing


def test_lockdown_ends_the_test_as_cancel_naming_the_reason(tmp_path: Path):
    job = run_avocado(
        "iofuzz.quick.platform", tmp_path, {"iofuzz_extra_kernel_params": "lockdown=integrity", "fuzz_seed": "5"}
    )
    test = job.tests[0]
    assert test["status"] == "CANCEL", job.output
    assert "the guest kernel refuses raw access (pio: iopl(3) refused: Operation not permitted" in test["fail_reason"]
    assert "mmio: cannot open /dev/mem: Operation not permitted" in test["fail_reason"]
