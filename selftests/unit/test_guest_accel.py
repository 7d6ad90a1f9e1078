"""The accelerator decision, its cache, and the probe guest's bytes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from avocado_iofuzz.guest import accel
from avocado_iofuzz.guest.accel import (
    PROBE_EXIT_STATUS,
    AccelProbeError,
    ProbeRun,
    choose_accelerator,
    kvm_device_problem,
    probe_accelerator,
    probe_bios_image,
)


def run(status: int | None = None, timed_out: bool = False, stderr: str = "") -> ProbeRun:
    return ProbeRun(exit_status=status, timed_out=timed_out, seconds=0.12, stderr_tail=stderr)


def test_probe_exit_status_chooses_kvm():
    choice = choose_accelerator(run(PROBE_EXIT_STATUS), 4)
    assert choice.name == "kvm"
    assert "ran under KVM" in choice.reason


def test_hung_guest_chooses_tcg():
    choice = choose_accelerator(run(timed_out=True), 3.5)
    assert choice == accel.AccelChoice("tcg", "KVM guest did not run within 3.5 s")


def test_other_exit_chooses_tcg_with_qemu_stderr():
    choice = choose_accelerator(run(1, stderr="failed to initialize kvm: Permission denied\n"), 4)
    assert choice.name == "tcg"
    assert "status 1" in choice.reason and "Permission denied" in choice.reason


def test_signal_chooses_tcg():
    assert choose_accelerator(run(None), 4).name == "tcg"


def test_missing_device_is_reported(tmp_path: Path):
    assert kvm_device_problem(tmp_path / "kvm") == f"{tmp_path / 'kvm'} does not exist"


def test_device_that_is_not_kvm_is_reported(tmp_path: Path):
    fake = tmp_path / "kvm"
    fake.write_bytes(b"")
    problem = kvm_device_problem(fake)
    assert problem is not None and "KVM_GET_API_VERSION" in problem


def test_bios_image_layout():
    image = probe_bios_image()
    assert len(image) == 0x10000  # QEMU wants a multiple of 64 KiB
    assert image[0xFFF0] == 0xE9  # near jmp at the reset vector ...
    offset = int.from_bytes(image[0xFFF1:0xFFF3], "little", signed=True)
    assert 0xFFF3 + offset == 0xFE00  # ... to the probe code
    assert image[0xFE00:0xFE01] == b"\xfa"  # cli


@pytest.mark.skipif(shutil.which("as") is None or shutil.which("objcopy") is None, reason="binutils missing")
def test_embedded_bytes_match_the_assembly_source(tmp_path: Path):
    source = Path(accel.__file__).with_name("kvm_probe.S")
    subprocess.run(["as", "-o", str(tmp_path / "p.o"), str(source)], check=True)
    subprocess.run(
        ["objcopy", "-O", "binary", "-j", ".text", str(tmp_path / "p.o"), str(tmp_path / "p.raw")], check=True
    )
    assert (tmp_path / "p.raw").read_bytes() == probe_bios_image()[-0x200:]


@pytest.fixture
def fake_probe(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """KVM device looks usable; the probe guest 'runs' without QEMU; returns the list of runs."""
    runs: list[float] = []

    def fake_run(qemu_binary: str, accel_name: str, timeout: float) -> ProbeRun:
        assert accel_name == "kvm"
        runs.append(timeout)
        return run(timed_out=True)

    monkeypatch.setattr(accel, "kvm_device_problem", lambda device=accel.KVM_DEVICE: None)
    monkeypatch.setattr(accel, "run_probe_guest", fake_run)
    monkeypatch.setattr(accel.shutil, "which", lambda name: "/bin/true")
    return runs


def test_verdict_is_cached(fake_probe: list[float], tmp_path: Path):
    first = probe_accelerator(timeout=2, cache_root=tmp_path)
    second = probe_accelerator(timeout=2, cache_root=tmp_path)
    assert fake_probe == [2]
    assert first.name == second.name == "tcg"
    assert second.reason.endswith("(cached verdict)")


def test_changed_inputs_probe_again(fake_probe: list[float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    probe_accelerator(cache_root=tmp_path)
    original = accel.probe_cache_inputs
    monkeypatch.setattr(
        accel, "probe_cache_inputs", lambda qemu, device=accel.KVM_DEVICE: {**original(qemu), "host_kernel": "x"}
    )
    probe_accelerator(cache_root=tmp_path)
    assert len(fake_probe) == 2


def test_no_cache_always_probes(fake_probe: list[float], tmp_path: Path):
    probe_accelerator(cache_root=tmp_path, use_cache=False)
    probe_accelerator(cache_root=tmp_path, use_cache=False)
    assert len(fake_probe) == 2
    assert not (tmp_path / "accel").exists()


def test_unusable_device_skips_the_guest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(accel, "kvm_device_problem", lambda device=accel.KVM_DEVICE: "/dev/kvm does not exist")
    monkeypatch.setattr(accel, "run_probe_guest", lambda *a: pytest.fail("must not run a guest"))
    assert probe_accelerator(cache_root=tmp_path) == accel.AccelChoice("tcg", "/dev/kvm does not exist")


def test_missing_qemu_is_named(tmp_path: Path):
    with pytest.raises(AccelProbeError, match="'no-such-qemu' not found"):
        probe_accelerator("no-such-qemu", cache_root=tmp_path)


def test_bad_timeout_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="timeout must be positive"):
        probe_accelerator(timeout=0, cache_root=tmp_path)
