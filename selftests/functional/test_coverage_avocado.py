"""Device coverage through real avocado runs: the e1000e row's coverage object, and that its events are the fuzzing's.

Each test boots the embedded guest (about 20 s each under TCG).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from avocado_jobs import run_avocado

pytestmark = pytest.mark.guest

QEMU = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"


def qemu_events() -> set[str]:
    out = subprocess.run([QEMU, "-trace", "help"], capture_output=True, text=True, check=True, timeout=60).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def reached(summary: dict) -> set[str]:
    return set(summary["coverage"]["events"])


def test_e1000e_row_writes_the_coverage_object(tmp_path):
    job = run_avocado("iofuzz.quick.nic.e1000e", tmp_path, {"fuzz_seed": "12", "fuzz_strategy": "blind"})
    assert job.tests[0]["status"] == "PASS", job.output
    summary = job.summary()
    coverage = summary["coverage"]
    assert coverage["enabled"] is True
    assert 0 < coverage["events_reached"] <= coverage["events_available"]
    names = reached(summary)
    assert len(names) == coverage["events_reached"]
    assert names <= qemu_events()  # real events of this QEMU
    assert names <= set(coverage["available"])
    assert any(n.startswith("e1000e_") for n in names)
    (device,) = coverage["devices"]
    assert device["device"] == "e1000e" and device["events_available"] >= 139
    # each reached event is first seen in exactly one range (or after the last one)
    in_ranges = [n for r in coverage["by_range"] for n in r["events"]]
    assert len(in_ranges) == len(set(in_ranges))
    assert set(in_ranges) == {n for n, seen in coverage["events"].items() if seen["range_index"] is not None}
    line = f"e1000e: {device['events_reached']}/{device['events_available']} events"
    assert line in (job.test_dir() / "whiteboard").read_text()


def test_reached_e1000e_events_are_caused_by_fuzzing_its_ranges(tmp_path):
    """The same e1000e watched in a run that fuzzes the pc platform but skips the e1000e's ports and conf1.

    With the device's ranges skipped (and ``PCI conf1``, which reaches every
    function's config space), the e1000e events the row run reached must not
    show up: they came from the fuzzing, not from the guest or QEMU itself.
    """
    for part in ("row", "control", "job"):
        (tmp_path / part).mkdir()
    # blind, as the control: the same seed fuzzes the same ranges, the e1000e's left out of the control
    row = run_avocado("iofuzz.quick.nic.e1000e", tmp_path / "row", {"fuzz_seed": "12", "fuzz_strategy": "blind"})
    assert row.tests[0]["status"] == "PASS", row.output
    control = run_avocado(
        "iofuzz.quick",
        tmp_path / "control",
        {
            "fuzz_seed": "12",
            "iofuzz_extra_qemu_args": "-device e1000e,romfile=,addr=05",
            "iofuzz_devices": "e1000e",
            "skip_devices": "0000:00:05.0, PCI conf1",
        },
    )
    assert control.tests[0]["status"] == "PASS", control.output
    assert not any("0000:00:05.0" in r["name"] for r in control.summary()["ranges"])
    row_device = {n for n in reached(row.summary()) if n.startswith("e1000e_")}
    control_device = {n for n in reached(control.summary()) if n.startswith("e1000e_")}
    assert {"e1000e_core_write", "e1000e_core_read"} <= row_device
    assert control_device.isdisjoint({"e1000e_core_write", "e1000e_core_read"})
    assert row_device - control_device


def test_a_qemu_without_a_readable_trace_backend_runs_without_coverage(tmp_path):
    """A QEMU whose -trace file= writes nothing (as a nop-backend build): said once, the run goes on."""
    wrapper = tmp_path / "qemu-no-trace"
    # drops every -trace option: what the probe and the run then see is a QEMU that writes no trace lines
    wrapper.write_text(
        "#!/bin/bash\nargs=()\nwhile [ $# -gt 0 ]; do\n"
        '  if [ "$1" = -trace ] && [ "$2" != help ]; then shift 2; continue; fi\n'
        f'  args+=("$1"); shift\ndone\nexec {QEMU} "${{args[@]}}"\n'
    )
    wrapper.chmod(0o755)
    (tmp_path / "job").mkdir()
    job = run_avocado("iofuzz.quick", tmp_path / "job", {"qemu_binary": str(wrapper), "fuzz_seed": "12"})
    assert job.tests[0]["status"] == "PASS", job.output
    coverage = job.summary()["coverage"]
    assert coverage["enabled"] is False
    assert "not 'log'" in coverage["reason"]
    log = (job.test_dir() / "debug.log").read_text()
    assert log.count("coverage: off for this run") == 1
    assert "coverage: off (" in (job.test_dir() / "whiteboard").read_text()
