"""CRIU findings as they really happen, on the host with CRIU 4.1.1 (built by host_criu): causes and reproducers.

* the "Empty list on file desc id" states are a restore crash (a BUG and a
  restorer killed by SIGSEGV), not the RLIMIT_NOFILE complaint every run here
  logs first;
* a reproducer finds CRIU or says how to name it, and leaves no process
  behind, whether CRIU is missing, refuses, or crashes.
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

EMPTY_LIST_STATE = "SA-C2-M2+2_S~A-C1"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sweep")
    proc = subprocess.run([sys.executable, "-m", "sockstates", "--criu", "--criu-bin", str(host_criu()),
                           "--state", EMPTY_LIST_STATE, "--out", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 1
    return out, records[0]


def leftovers(script: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", script.name], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def test_the_empty_list_states_are_a_restore_crash(sweep) -> None:
    _, record = sweep
    assert record["verdict"] == "failed" and record["stage"] == "restore" and record["crashed"]
    assert record["reasons"][0].startswith("criu restore crashed: BUG at criu/files.c:")
    assert "Empty list on file desc id" in record["reasons"][0] and "signal 11" in record["reasons"][0]
    assert "RLIMIT" not in record["criu_failure"]
    summary = json.loads((sweep[0] / "summary.json").read_text())
    assert summary["groups"][0]["group"].startswith("restore crashed: BUG at criu/files.c:")


def test_a_reproducer_without_criu_says_how_to_name_it_and_starts_nothing(sweep, tmp_path) -> None:
    script = Path(record_repro(sweep))
    env = {k: v for k, v in os.environ.items() if k != "CRIU"} | {"PATH": str(tmp_path)}  # no criu on it
    text = script.read_text()
    standalone = tmp_path / script.name
    # as if copied to a machine where the sweep's criu is not: only argument, $CRIU and PATH remain
    standalone.write_text("\n".join("CRIU_USED = None" if line.startswith("CRIU_USED =") else line
                                    for line in text.splitlines()))
    proc = subprocess.run([sys.executable, str(standalone)], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "cannot find criu" in proc.stderr and "/path/to/criu" in proc.stderr and "CRIU=" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, str(standalone), str(tmp_path / "nowhere")], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 3 and str(tmp_path / "nowhere") in proc.stderr
    assert leftovers(standalone) == []


def test_a_reproducer_whose_criu_refuses_kills_its_target(sweep, tmp_path) -> None:
    script = Path(record_repro(sweep))
    refusing = tmp_path / "criu"
    refusing.write_text("#!/bin/sh\necho 'Error (criu/cr-dump.c:1): stand-in refuses' >&2\nexit 1\n")
    refusing.chmod(0o755)
    proc = subprocess.run([sys.executable, str(script), str(refusing)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2 and "criu dump failed" in proc.stdout, proc.stdout + proc.stderr
    assert leftovers(script) == []


def test_a_reproducer_shows_the_crash_with_the_criu_it_finds_and_leaves_nothing(sweep) -> None:
    script = Path(record_repro(sweep))
    env = dict(os.environ, CRIU=str(host_criu()))
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "criu restore failed" in proc.stdout and "BUG at criu/files.c:" in proc.stdout
    assert "killed by signal 11" in proc.stdout
    assert leftovers(script) == []


def record_repro(sweep) -> str:
    _, record = sweep
    assert record["reproducer"], record
    return record["reproducer"]


def test_a_dead_peer_shows_its_full_effect_a_stranger_gets_through(tmp_path) -> None:
    """DB@1-CX refuses a stranger's datagram (EPERM: still connected); restored, it takes it."""
    out = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "sockstates", "--criu", "--criu-bin", str(host_criu()),
                           "--state", "DB@1-CX", "--depth", "5", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["verdict"] == "failed", proc.stdout + proc.stderr
    assert "@1 dgram sendto: EPERM" in record["strangers_before"]
    assert "@1 dgram sendto: ok" in record["strangers_after"]
    assert "a stranger's @1 dgram sendto was EPERM without C/R, ok after" in record["reasons"]
