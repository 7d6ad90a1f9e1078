"""The accelerator probe against the real QEMU and /dev/kvm of this machine."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from avocado_iofuzz.guest.accel import PROBE_EXIT_STATUS, kvm_device_problem, probe_accelerator, run_probe_guest

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]


def test_probe_guest_reaches_isa_debug_exit_under_tcg():
    """The probe's long-mode guest itself is right: under TCG it always runs to its exit."""
    result = run_probe_guest("qemu-system-x86_64", "tcg", timeout=30)
    assert not result.timed_out, result
    assert result.exit_status == PROBE_EXIT_STATUS, result.stderr_tail


def test_probe_completes_and_agrees_with_itself(tmp_path: Path):
    fresh = probe_accelerator(timeout=4, cache_root=tmp_path)
    assert fresh.name in ("kvm", "tcg")
    assert fresh.reason
    cached = probe_accelerator(timeout=4, cache_root=tmp_path)
    assert cached.name == fresh.name
    assert cached.reason.endswith("(cached verdict)")
    if kvm_device_problem() is not None:
        assert fresh.name == "tcg"
        assert fresh.reason == kvm_device_problem()
    uncached = probe_accelerator(timeout=4, cache_root=tmp_path, use_cache=False)
    assert uncached.name == fresh.name, (fresh, uncached)
