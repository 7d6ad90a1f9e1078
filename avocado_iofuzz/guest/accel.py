"""Choosing QEMU's accelerator: KVM only when a guest really runs under it.

A usable ``/dev/kvm`` is not enough: with broken nested virtualisation KVM
accepts a guest and then never runs it, and every boot would hang. So the
probe starts a tiny guest (``kvm_probe.S``: long mode, paging, memory writes,
then an exit through isa-debug-exit) under ``-accel kvm`` and picks KVM only
if QEMU exits with the expected status in time. The verdict is cached under
the data dir, keyed by the QEMU binary, the host kernel and ``/dev/kvm``, so
only the first run pays.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from avocado_iofuzz.guest.cache import hash_inputs, resolve_cache_root

KVM_DEVICE = Path("/dev/kvm")
KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12
DEFAULT_PROBE_TIMEOUT = 4.0

# Assembled from kvm_probe.S: placed at offset 0xFE00 of the 64 KiB image,
# zero-padded up to the reset vector at 0xFFF0.
PROBE_CODE = bytes.fromhex(
    "fa2e660f0116e8fe0f20c06683c8010f22c066ea1afeffff080066b810008ed88ec08ed0bf0010000031c0b9"
    "00100000f3abc7050010000003200000c7050020000003300000c7051820000003400000c7050030000083000000"
    "c7050830000083002000c7051030000083004000c7051830000083006000c705f84f00008300e0ff0f20e083c8"
    "200f22e0b8001000000f22d8b9800000c00f320d000100000f300f20c00d000000800f22c0eab3feffff1800bf"
    "00002000b900006000b0a5f3aab021e6f4f4ebfd0000000000000000ffff0000009acf00ffff00000092cf00ff"
    "ff0000009aaf001f00c8feffff"
)
RESET_JUMP = bytes.fromhex("e90dfe")  # jmp start16, at 0xFFF0
PROBE_EXIT_VALUE = 0x21
PROBE_EXIT_STATUS = (PROBE_EXIT_VALUE << 1) | 1  # what isa-debug-exit makes of it
PROBE_VERSION = 1  # bump when the probe or its decision changes, to drop cached verdicts


@dataclass(frozen=True)
class AccelChoice:
    name: str  # "kvm" or "tcg"
    reason: str


@dataclass(frozen=True)
class ProbeRun:
    """How the probe guest's QEMU ended (or did not)."""

    exit_status: int | None  # None if killed by a signal or still running at the timeout
    timed_out: bool
    seconds: float
    stderr_tail: str


class AccelProbeError(RuntimeError):
    """The probe itself cannot run (e.g. no QEMU binary)."""


def probe_bios_image() -> bytes:
    """The 64 KiB firmware image holding the probe guest (see kvm_probe.S)."""
    block = PROBE_CODE + b"\0" * (0x1F0 - len(PROBE_CODE)) + RESET_JUMP
    block += b"\xf4" * (0x200 - len(block))
    return b"\xf4" * (0x10000 - len(block)) + block


def kvm_device_problem(device: Path = KVM_DEVICE) -> str | None:
    """Why ``device`` cannot be used for KVM, or None if it looks usable."""
    if not device.exists():
        return f"{device} does not exist"
    if not os.access(device, os.R_OK | os.W_OK):
        return f"{device} is not readable and writable by this user"
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as error:
        return f"cannot open {device}: {error.strerror}"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
    except OSError as error:
        return f"{device} does not answer KVM_GET_API_VERSION: {error.strerror}"
    finally:
        os.close(fd)
    if version != KVM_API_VERSION:
        return f"{device} reports KVM API version {version}, expected {KVM_API_VERSION}"
    return None


def choose_accelerator(run: ProbeRun, timeout: float) -> AccelChoice:
    """The decision, given how the probe guest's QEMU ended under ``-accel kvm``."""
    if run.timed_out:
        return AccelChoice("tcg", f"KVM guest did not run within {timeout:g} s")
    if run.exit_status == PROBE_EXIT_STATUS:
        return AccelChoice("kvm", f"a test guest ran under KVM in {run.seconds:.2f} s")
    how = f"status {run.exit_status}" if run.exit_status is not None else "a signal"
    tail = run.stderr_tail.strip()
    return AccelChoice("tcg", f"QEMU -accel kvm ended with {how}" + (f": {tail}" if tail else ""))


def run_probe_guest(qemu_binary: str, accel: str, timeout: float) -> ProbeRun:
    """Run the probe guest under ``accel`` for at most ``timeout`` seconds; QEMU is always reaped."""
    with tempfile.TemporaryDirectory(prefix="iofuzz-accel-") as tmp:
        bios = Path(tmp) / "probe.bin"
        bios.write_bytes(probe_bios_image())
        stderr_path = Path(tmp) / "stderr"
        argv = [
            qemu_binary,
            "-nodefaults",
            "-display",
            "none",
            "-machine",
            "pc",
            "-accel",
            accel,
            "-m",
            "32",
            "-bios",
            str(bios),
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
        ]
        started = time.monotonic()
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
        try:
            status: int | None = proc.wait(timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            status, timed_out = None, True
        finally:
            if proc.poll() is None:
                proc.kill()  # by PID: the Popen handle
                proc.wait()
        seconds = time.monotonic() - started
        if status is not None and status < 0:
            status = None
        return ProbeRun(status, timed_out, seconds, stderr_path.read_text(errors="replace")[-600:])


def probe_cache_inputs(qemu_path: Path, device: Path = KVM_DEVICE) -> dict[str, object]:
    """What the verdict depends on: change any of these and the probe runs again."""
    qemu_stat = qemu_path.stat()
    try:
        dev = device.stat()
        device_state: object = [dev.st_rdev, dev.st_ino, dev.st_mode, dev.st_uid, dev.st_gid, dev.st_ctime_ns]
    except OSError:
        device_state = None
    return {
        "probe_version": PROBE_VERSION,
        "qemu": [str(qemu_path), qemu_stat.st_mtime_ns, qemu_stat.st_size],
        "host_kernel": os.uname().release,
        "kvm_device": device_state,
        "user": [os.geteuid(), sorted(os.getgroups())],
    }


def probe_accelerator(
    qemu_binary: str = "qemu-system-x86_64",
    timeout: float = DEFAULT_PROBE_TIMEOUT,
    cache_root: Path | None = None,
    use_cache: bool = True,
) -> AccelChoice:
    """KVM if ``/dev/kvm`` is usable and a test guest really runs under it, else TCG."""
    if timeout <= 0:
        raise ValueError(f"probe timeout must be positive, got {timeout}")
    resolved = shutil.which(qemu_binary)
    if resolved is None:
        raise AccelProbeError(f"QEMU binary {qemu_binary!r} not found")
    qemu_path = Path(resolved).resolve()
    problem = kvm_device_problem()
    if problem is not None:
        return AccelChoice("tcg", problem)

    cache_file = None
    if use_cache:
        cache_dir = resolve_cache_root(cache_root) / "accel"
        cache_file = cache_dir / f"{hash_inputs(probe_cache_inputs(qemu_path))}.json"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            cached = json.loads(cache_file.read_text())
            return AccelChoice(str(cached["name"]), f"{cached['reason']} (cached verdict)")

    choice = choose_accelerator(run_probe_guest(str(qemu_path), "kvm", timeout), timeout)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.part")
        tmp.write_text(json.dumps(asdict(choice)))
        os.replace(tmp, cache_file)
    return choice
