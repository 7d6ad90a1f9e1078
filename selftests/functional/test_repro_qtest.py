"""Crash triage against this machine's QEMU: real aborts from I/O ops alone, buried in fuzzing traces.

Two QEMU 7.2 device models abort from a guest's accesses, no guest code needed:

* ``hyperv-testdev`` (the Hyper-V test device kvm-unit-tests drive): a 4-byte
  write to port 0x3000 whose control byte asks for a SynIC route or
  connection aborts on an ``assert`` when the vCPU has no SynIC (TCG never
  has one), or when the route to destroy does not exist;
* ``edu`` (QEMU's educational PCI device): a DMA started with addresses
  outside its buffer ends in ``hw_error`` ("EDU: DMA range ... out of
  bounds") -- 100 ms later, from a timer: only a replay whose clock runs
  sees it, and only after the firmware's BAR setup made the MMIO reachable.

Traces are recorded the way a campaign records them (``qtest_campaign``):
thousands of generator ops over several ranges before the crash.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from avocado_jobs import AVOCADO, avocado_env
from qtest_campaign import record_trace, vm_cmdline

from avocado_iofuzz.model.program import SPACE_MMIO, Op, RangePlan
from avocado_iofuzz.repro.pipeline import TriageOptions, triage
from avocado_iofuzz.repro.qtest_run import CLOCK_RUNNING, CLOCK_STOPPED
from avocado_iofuzz.repro.signature import crash_signature

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")

EDU_LISTING = (
    "== /sys/bus/pci/devices/0000:00:02.0 0x1234 0x11e8 0x00ff00\n"
    "0x00000000fea00000 0x00000000feafffff 0x0000000000040200\n"
    + "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
    * 12
)


def harmless_ranges(seed: int, fuzz_count: int) -> list[RangePlan]:
    """CMOS and DMA page registers: thousands of ops no device model dies of."""
    return [
        RangePlan(0, 0x70, 0x71, "rtc0", seed, fuzz_count),
        RangePlan(1, 0x80, 0x8F, "dma page reg", seed, fuzz_count),
    ]


def run_reproducer(triage_dir: Path) -> tuple[int, str]:
    """Run reproducer.sh as a QEMU developer would; QEMU must die on its own (timeout otherwise)."""
    result = subprocess.run(
        ["sh", str(triage_dir / "reproducer.sh")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=30,
        text=True,
        start_new_session=True,
    )
    return result.returncode, result.stderr


@pytest.fixture(scope="module")
def hyperv_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("hyperv") / "trace.iofuzz"
    plans = [*harmless_ranges(7, 200), RangePlan(2, 0x3000, 0x3003, "hyperv-testdev", 7, 200, width=4)]
    outcome = record_trace(path, plans, vm_cmdline(["-device", "hyperv-testdev"]))
    assert outcome.signature.signal == signal.SIGABRT, outcome.signature.describe()
    assert outcome.failing_op > 3000  # the crashing op comes after thousands of harmless ones
    return path


def test_a_crash_after_thousands_of_ops_minimizes_to_the_op_that_matters(hyperv_trace, tmp_path):
    result = triage(hyperv_trace, tmp_path, TriageOptions())
    assert result.reproduced and result.method == "qtest" and result.verified == "3/3"
    assert result.expected.same_bug(result.signature)
    (op,) = result.ops
    assert (op.kind, op.port, op.width) == ("w", 0x3000, 4)
    assert 1 <= (op.value >> 16) & 0xFF <= 7  # the control byte of a route/connection command
    assert result.original_ops > len(result.ops)
    # the reproducer runs without a guest and ends the same way
    status, stderr = run_reproducer(tmp_path)
    assert status == 128 + signal.SIGABRT  # the script exits with QEMU's status
    assert crash_signature(None, signal.SIGABRT, stderr).same_bug(result.signature)
    triage_json = json.loads((tmp_path / "triage.json").read_text())
    assert triage_json["reproduced"] and triage_json["ops"] == [f"outl 0x3000 {op.value:#x}"]
    # one self-contained file: the script as a here-document, only the args the crash needs
    shell = (tmp_path / "reproducer.sh").read_text()
    assert f"outl 0x3000 {op.value:#x}\nIOFUZZ_QTEST_END" in shell and "QEMU=${QEMU:-" in shell
    assert triage_json["qemu_args"] == ["-machine", "pc", "-device", "hyperv-testdev"]
    assert not (tmp_path / "reproducer-guest.sh").exists()  # never run: not handed over


def test_reproducer_sh_honours_qemu_and_says_when_it_did_not_crash(hyperv_trace, tmp_path):
    result = triage(hyperv_trace, tmp_path, TriageOptions())
    wrapper = tmp_path / "bin" / "qemu-wrapper"
    wrapper.parent.mkdir()
    called = tmp_path / "called"
    wrapper.write_text(f'#!/bin/sh\necho "$@" > {called}\nexec {shutil.which("qemu-system-x86_64")} "$@"\n')
    wrapper.chmod(0o755)
    done = subprocess.run(
        ["sh", result.files["shell"]], env={**os.environ, "QEMU": str(wrapper)}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 128 + signal.SIGABRT and called.read_text().startswith("-S -display none -machine pc")
    # a QEMU without the bug (this one, with the crashing write dropped): the script says so and ends
    harmless = Path(result.files["shell"]).read_text().replace(f"outl 0x3000 {result.ops[0].value:#x}\n", "inb 0x80\n")
    (tmp_path / "harmless.sh").write_text(harmless.replace("sleep 0.1", "sleep 0.01"))
    quiet = subprocess.run(["sh", str(tmp_path / "harmless.sh")], capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0 and "the crash did NOT happen" in quiet.stderr


def test_a_timer_crash_needs_the_pci_setup_and_a_running_clock(tmp_path):
    trace = tmp_path / "trace.iofuzz"
    plans = [*harmless_ranges(11, 100), RangePlan(2, 0xFEA00000, 0xFEA000FF, "edu", 11, 100, 4, SPACE_MMIO)]
    recorded = record_trace(
        trace, plans, vm_cmdline(["-device", "edu"]), report_every=64, pci_listing=EDU_LISTING,
        firmware=tmp_path / "halt.bin",
    )  # fmt: skip
    assert "EDU: DMA range" in recorded.signature.message
    result = triage(trace, tmp_path / "triage", TriageOptions(linger=0.3))
    assert result.reproduced and result.clock == CLOCK_RUNNING and result.verified == "3/3"
    # the BAR the firmware assigned, memory decoding on, and one write starting the DMA
    assert result.ops == [
        Op("w", 0xCF8, 4, 0x80001010),
        Op("w", 0xCFC, 4, 0xFEA00000),
        Op("w", 0xCF8, 4, 0x80001004),
        Op("w", 0xCFC, 1, 0x2),
        Op("w", 0xFEA00098, 4, 0x1, SPACE_MMIO),
    ]
    status, stderr = run_reproducer(tmp_path / "triage")
    assert status == 128 + signal.SIGABRT and "EDU: DMA range" in stderr
    assert "-bios" in (tmp_path / "triage" / "reproducer.sh").read_text()  # its firmware made by the script


def avocado_iofuzz(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AVOCADO), "iofuzz", *map(str, args)], env=avocado_env(), capture_output=True, text=True, timeout=300
    )


def test_cli_replays_exports_and_names_bad_input(hyperv_trace, tmp_path):
    replay = avocado_iofuzz("replay", hyperv_trace, "--qtest", "--output", tmp_path / "replay")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "reproduced by window" in replay.stdout + replay.stderr

    export = avocado_iofuzz("export", hyperv_trace, "--output", tmp_path / "window.qtest")
    assert export.returncode == 0, export.stderr
    script = (tmp_path / "window.qtest").read_text().splitlines()
    assert len(script) == 202 and all(line.split()[1] == "0x3000" for line in script)

    minimized = avocado_iofuzz("replay", hyperv_trace, "--minimize", "--no-guest-fallback", "--output", tmp_path / "t")
    assert minimized.returncode == 0, minimized.stdout + minimized.stderr
    rerun = avocado_iofuzz("replay", tmp_path / "t" / "reproducer.qtest", "--machine-from", hyperv_trace)
    assert rerun.returncode == 0 and "REPRODUCED" in rerun.stdout + rerun.stderr

    garbage = tmp_path / "garbage.iofuzz"
    garbage.write_text("this is no trace\n")
    bad = avocado_iofuzz("replay", garbage)
    assert bad.returncode == 4 and "neither an iofuzz trace nor a valid qtest script" in bad.stdout + bad.stderr

    data = hyperv_trace.read_bytes()
    cut = tmp_path / "cut.iofuzz"
    cut.write_bytes(data[: data.rindex(b'"window"')])
    truncated = avocado_iofuzz("replay", cut, "--qtest")
    assert truncated.returncode == 4 and "nothing to reproduce" in truncated.stdout + truncated.stderr

    script_alone = avocado_iofuzz("replay", tmp_path / "window.qtest")
    assert script_alone.returncode == 4 and "--machine-from" in script_alone.stdout + script_alone.stderr

    nothing_left = avocado_iofuzz("replay", hyperv_trace, "--minimize", "--no-qtest", "--no-guest-fallback")
    assert nothing_left.returncode == 4 and "leaves no way to replay" in nothing_left.stdout + nothing_left.stderr


def test_a_replay_ending_another_way_is_not_taken_for_the_finding(hyperv_trace, tmp_path):
    """The run recorded a segfault; the qtest replay aborts on an assertion: not the same bug."""
    text = hyperv_trace.read_text()
    other = tmp_path / "trace.iofuzz"
    other.write_text(text.replace('"signal": 6', '"signal": 11'))
    result = triage(other, tmp_path / "triage", TriageOptions())
    assert not result.reproduced
    notes = " ".join(result.notes)
    assert "ended differently" in notes and "SIGABRT" in notes
    assert f"clock {CLOCK_STOPPED}" in notes and f"clock {CLOCK_RUNNING}" in notes  # both replays were tried


def test_replies_are_matched_to_ops_so_a_crash_after_pci_ops_names_its_op():
    """A PCI config op is two qtest lines: the crashing op is still named exactly, with no linger."""
    from avocado_iofuzz.model.program import SPACE_PCI
    from avocado_iofuzz.repro.qtest_run import QtestTarget, run_qtest

    config_reads = [Op("r", 0x10000 | register, 4, 0, SPACE_PCI) for register in range(0, 64, 4)]
    crasher = Op("w", 0x3000, 4, 0x70000)
    target = QtestTarget(shutil.which("qemu-system-x86_64") or "", ("-M", "pc", "-device", "hyperv-testdev"))
    outcome = run_qtest(target, [*config_reads, crasher], linger=0.0)
    assert outcome.signature.signal == signal.SIGABRT
    assert outcome.failing_op == len(config_reads)
    # with no linger at all the crash is still seen: the reader waits for the crasher's own reply
    harmless = run_qtest(target, config_reads, linger=0.0)
    assert not harmless.signature.is_failure and harmless.answered == len(config_reads)


def test_cli_minimizes_a_qtest_script_given_only_the_qemu_args(tmp_path):
    """A script from elsewhere (QEMU's fuzzer style: write, clock_step), ~400 harmless ops before the crash."""
    harmless = [f"outb 0x{0x70 + n % 2:x} 0x{n % 256:x}" for n in range(400)]
    script = tmp_path / "found.qtest"
    script.write_text(
        "\n".join([*harmless[:200], "write 0x40000 0x4 0xdeadbeef", "clock_step 1000", *harmless[200:],
                   "outl 0x3000 0x70000", "inb 0x80", ""]),
        encoding="utf-8",
    )  # fmt: skip
    out = tmp_path / "out"
    done = avocado_iofuzz(
        "replay", script, "--qemu-args", "-machine pc -nodefaults -m 256 -device hyperv-testdev", "--minimize",
        "--output", out,
    )  # fmt: skip
    text = done.stdout + done.stderr
    assert done.returncode == 0, text
    assert "writeb per byte" in text and "clock_step lines dropped" in text
    assert (out / "reproducer.qtest").read_text() == "outl 0x3000 0x70000\n"
    data = json.loads((out / "triage.json").read_text())
    assert data["reproduced"] and data["verified"] == "3/3"
    assert data["qemu_args"] == ["-machine", "pc", "-device", "hyperv-testdev"]
    assert "evt_conn_destroy" in data["signature"]["message"]
    status, stderr = run_reproducer(out)
    assert status == 128 + signal.SIGABRT and "evt_conn_destroy" in stderr
    # without a machine the CLI says how to give one
    alone = avocado_iofuzz("replay", script, "--minimize")
    assert alone.returncode == 4 and "--qemu-args" in alone.stdout + alone.stderr
