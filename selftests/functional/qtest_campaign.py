"""Record a trace the way a campaign would, with QEMU's device models run through qtest.

Crash triage needs traces of real QEMU deaths. Producing them through a
guest costs a boot per trace; this helper runs the plans' ops (the same
generator the executor uses) against a real QEMU under ``-qtest`` instead,
and writes what the campaign writes: the header with a VM command line, the
ops ahead, progress marks at multiples of ``report_every``, and the finding
event (crash with QEMU's exit status and stderr, or hang) with its window.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from avocado_iofuzz.campaign.trace import TraceWriter
from avocado_iofuzz.executor.protocol import inflight_window
from avocado_iofuzz.model.program import RangePlan
from avocado_iofuzz.repro.extract import PCI_LISTING_KEY, pci_setup_ops
from avocado_iofuzz.repro.qemu_args import replay_args
from avocado_iofuzz.repro.qtest_run import QtestOutcome, QtestTarget, run_qtest, write_halt_firmware
from avocado_iofuzz.vm.interface import QemuExit

QEMU = "/usr/bin/qemu-system-x86_64"


def vm_cmdline(devices: Sequence[str], machine: str = "pc") -> str:
    """A command line shaped like a fuzzing VM's: kernel, console and QMP sockets, then the devices."""
    words = [
        QEMU, "-nodefaults", "-display", "none", "-machine", f"{machine},accel=tcg", "-m", "256",
        "-kernel", "/nonexistent/vmlinux", "-initrd", "/nonexistent/initrd.cpio",
        "-append", "console=ttyS0 iofuzz.guest=1 panic=-1",
        "-chardev", "socket,id=qmp,path=/nonexistent/qmp.sock,server=on,wait=off", "-mon", "chardev=qmp,mode=control",
        "-chardev", "socket,id=serial0,path=/nonexistent/serial.sock,server=on,wait=on", "-serial", "chardev:serial0",
        *devices,
    ]  # fmt: skip
    return shlex.join(words)


def record_trace(
    path: Path,
    plans: Sequence[RangePlan],
    cmdline: str,
    report_every: int = 256,
    stall_timeout: float = 2.0,
    pci_listing: str = "",
    firmware: Path | None = None,
) -> QtestOutcome:
    """Run ``plans`` in order on a qtest QEMU of ``cmdline``'s machine; write the trace a campaign would.

    ``pci_listing`` (the guest's, as the VT test records it) becomes the BAR
    setup the firmware would have done, sent before the plans' ops; with a
    halting ``firmware`` the machine's clock runs (device timers fire).
    """
    binary, args = replay_args(cmdline)
    setup = pci_setup_ops(pci_listing)
    ops = [op for plan in plans for op in plan.ops()]
    target = QtestTarget(binary, tuple(args))
    if firmware is not None:
        target = target.running(write_halt_firmware(firmware))
    outcome = run_qtest(target, setup + ops, stall_timeout=stall_timeout)
    if outcome.failing_op is not None:
        if outcome.failing_op < len(setup):
            raise RuntimeError(f"QEMU failed in the PCI setup: {outcome.signature.describe()}")
        outcome = QtestOutcome(
            outcome.signature, len(ops), outcome.answered - len(setup), outcome.elapsed, outcome.stderr
        )
    header = {"qemu_cmdline": cmdline, "machine_type": "pc", "guest": "busybox", "accelerator": "tcg"}
    if pci_listing:
        header[PCI_LISTING_KEY] = pci_listing
    with TraceWriter(path, header, plans, mark_interval=0) as trace:
        for plan in plans:
            trace.write_ops(plan, 0, plan.op_count)
        trace.event("start", range=plans[0].index, op=0)
        failing = outcome.failing_op
        if failing is None and outcome.signature.is_failure:
            failing = len(ops) - 1  # died after the last answer: the campaign sees it in the last window
        done = len(ops) if failing is None else failing
        for plan in plans:
            count = min(plan.op_count, done)
            for mark in range(0, count + 1, report_every):
                trace.progress(plan.index, mark)
            done -= plan.op_count
            if done < 0:
                last_mark = count // report_every * report_every
                window = inflight_window(plan, last_mark, report_every)
                if outcome.signature.kind == "crash":
                    sig = outcome.signature
                    exit_info = QemuExit(sig.status, sig.signal, outcome.stderr[-2000:])
                    trace.event("crash", range=plan.index, window=list(window), qemu_exit=asdict(exit_info))
                else:
                    trace.event("hang", range=plan.index, window=list(window), detail="no progress")
                break
            trace.progress(plan.index, plan.op_count)
    return outcome
