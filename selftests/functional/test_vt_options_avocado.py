"""avocado-vt users' habits through real avocado jobs: --vt-qemu-bin, --vt-machine-type, extra QEMU arguments.

Two guests boot (TCG, ~1 min each under load): one whose row lost its device
to a user's extra_params (ERROR before login), one with every habit at once.
What QEMU ran is seen from outside our code: a wrapper binary records how it
was invoked, and QEMU's QOM answers for the machine and the devices.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from avocado_jobs import JobResult, avocado_command, avocado_env, read_job

pytestmark = pytest.mark.guest

JOB_TIMEOUT = 600


def run_job(reference: str, results_dir: Path, params: dict[str, str], options: list[str]) -> JobResult:
    command = avocado_command(reference, results_dir, params) + options
    proc = subprocess.run(
        command, env=avocado_env(), cwd=results_dir, capture_output=True, text=True, timeout=JOB_TIMEOUT
    )
    return read_job(proc.returncode, proc.stdout + proc.stderr, results_dir)


def recording_qemu(directory: Path) -> tuple[Path, Path]:
    """A QEMU binary that writes each command line it gets to a log, then becomes the real QEMU."""
    real = shutil.which("qemu-system-x86_64")
    assert real, "qemu-system-x86_64 is not installed"
    log = directory / "invocations.log"
    wrapper = directory / "recording-qemu"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, log


def test_a_row_whose_extra_params_a_user_replaced_errors_naming_its_device(tmp_path: Path):
    job = run_job("iofuzz.quick.nic.ne2k_isa", tmp_path, {"extra_params": "-device pci-testdev"}, [])
    test = job.tests[0]
    assert test["status"] == "ERROR", job.output
    reason = test["fail_reason"]
    assert "QEMU lacks the device(s) this row fuzzes: ne2k_isa" in reason, reason
    assert "iofuzz_extra_qemu_args" in reason
    assert not job.data_file("trace.iofuzz").exists()  # nothing was fuzzed


def test_qemu_bin_machine_type_and_added_arguments_reach_qemu(tmp_path: Path):
    wrapper, invocations = recording_qemu(tmp_path)
    job = run_job(
        "iofuzz.quick.nic.ne2k_isa",
        tmp_path,
        {"iofuzz_extra_qemu_args": "-device pci-testdev", "fuzz_seed": "11", "fuzz_strategy": "blind"},
        ["--vt-qemu-bin", str(wrapper), "--vt-machine-type", "q35"],
    )
    test = job.tests[0]
    # --vt-machine-type q35 chose the q35 row
    assert test["name"].endswith("iofuzz.quick.nic.ne2k_isa.q35"), test["name"]
    assert test["status"] == "PASS", job.output
    # the VM that ran is the one the wrapper started: it has the row's device and the added one
    started = [line for line in invocations.read_text().splitlines() if "-device ne2k_isa" in line]
    assert len(started) == 1 and "-device pci-testdev" in started[0], invocations.read_text()
    # QEMU's own view: the q35 machine, both devices (avocado-vt adds its serial port and PCIe ports)
    log = (job.test_dir() / "debug.log").read_text()
    assert "QEMU machine (QOM /machine type): pc-q35-" in log
    (devices_line,) = [line for line in log.splitlines() if "QEMU devices (QOM" in line]
    assert {"ne2k_isa", "pci-testdev"} <= set(devices_line.split("): ", 1)[1].split(", ")), devices_line
    # the row's device was fuzzed, and a range's rerun runs the same QEMU with the same arguments
    ranges = job.summary()["ranges"]
    assert [r["name"] for r in ranges] == ["ne2k_isa (1-byte)", "ne2k_isa (2-byte)", "ne2k_isa (4-byte)"]
    assert all(r["ops_done"] == r["ops_planned"] > 0 for r in ranges)
    fuzzed = ranges[0]
    assert fuzzed["rerun_params"]["qemu_binary"] == str(wrapper)
    assert fuzzed["rerun_params"]["iofuzz_extra_qemu_args"] == "-device pci-testdev"
