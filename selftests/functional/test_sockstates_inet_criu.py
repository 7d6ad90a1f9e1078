"""TCP/UDP states through CRIU on the host: which it restores, refuses, or restores wrongly.

Two CRIUs built from Debian's source by ``avocado_iofuzz.guest.host_criu``: trixie's
4.1.1 (the project's host CRIU) and sid's 4.2.1. On kernels >= 6.16,
``getsockopt(SO_PASSCRED)`` fails on inet sockets, and 4.1.1 refuses to dump
any process holding one (CRIU issue #2718, fixed in 4.2); 4.2.1 dumps them,
and what it loses is checked state by state. Root is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from avocado_iofuzz.guest.host_criu import host_criu

pytestmark = [
    pytest.mark.criu,
    pytest.mark.skipif(os.geteuid() != 0, reason="CRIU dumps need root"),
]


def kernel_at_least(major: int, minor: int) -> bool:
    release = os.uname().release.split("-")[0].split(".")
    return (int(release[0]), int(release[1])) >= (major, minor)


def in_tmp(tmp: Path) -> dict[str, str]:
    """Work directories (and so the targets' command lines) under the test's own tmp_path."""
    return dict(os.environ, TMPDIR=str(tmp))


def sweep(criu: Path, state: str, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "sockstates", "--criu", "--criu-bin", str(criu), "--types", "tcp,udp",
                           "--depth", "8", "--state", state, "--out", str(out)],
                          capture_output=True, text=True, timeout=300, check=False, env=in_tmp(out))
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 1, proc.stdout + proc.stderr
    assert proc.returncode == (0 if records[0]["verdict"] == "intact" else 1)
    return records[0]


def leftovers(tmp: Path) -> list[str]:
    """Processes this test started and left: targets, restored targets, reproducers' targets."""
    out = subprocess.run(["pgrep", "-af", str(tmp)], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


@pytest.mark.skipif(not kernel_at_least(6, 16), reason="SO_PASSCRED is refused on inet sockets from 6.16 on")
def test_criu_4_1_refuses_every_inet_socket_on_new_kernels(tmp_path) -> None:
    record = sweep(host_criu(), "U:1", tmp_path)
    assert record["verdict"] == "failed" and record["stage"] == "dump"
    assert record["criu_failure"] == "criu/sockets.c: sockets: Can't get N:N opt: Operation not supported"


@pytest.fixture(scope="module")
def criu42() -> Path:
    return host_criu(suite="sid")


@pytest.mark.parametrize(("state", "verdict", "stage", "words"), [
    ("T:1.ES-C3-Q1_T:1.LI_T:e.ES-C1", "intact", None, ""),  # an accepted connection with unread data
    ("U:1-C2_U:2-C1", "intact", None, ""),  # two UDP sockets connected to each other
    ("T:1.LI-I3_T:e.ES-C3_T~:1.ES-C2", "failed", "dump", "In-flight connection"),
    ("T:e.CLRW!f", "failed", "verify", "restored as T:e.CLRW, was T:e.CLRW!f"),  # ECONNREFUSED lost
    ("U:1-M1", "failed", "verify", "restored as U:1, was U:1-M1"),  # a queued datagram lost
    ("T:1.LI_T~:e.TW", "failed", "verify", "restored as T:1.LI, was T:1.LI_T~:e.TW"),  # TIME_WAIT lost
    # half-closed: the FIN_WAIT2 end no longer gets what the CLOSE_WAIT end sends
    ("T:1.CWR-C3_T:1.LI_T:e.F2W-C1", "failed", "verify", "sent to handle 2, which read"),
])
def test_criu_4_2_per_state(criu42, tmp_path, state, verdict, stage, words) -> None:
    record = sweep(criu42, state, tmp_path)
    assert (record["verdict"], record["stage"]) == (verdict, stage), record
    assert words in " ".join(record["reasons"])
    if verdict == "failed":
        proc = subprocess.run([sys.executable, record["reproducer"], str(criu42)], capture_output=True, text=True,
                              timeout=120, check=False, env=in_tmp(tmp_path))
        assert proc.returncode == (2 if stage == "dump" else 1), proc.stdout + proc.stderr
    assert leftovers(tmp_path) == []
