"""`sockstates_where = host`: the C/R sweep with a CRIU >= 4.1 on the host's own kernel, no guest.

Debian bookworm's criu (3.17.1) cannot dump on this host's kernel (>= 6.13),
so the CRIU here is Debian trixie's 4.1.1, built from its source by
``avocado_iofuzz.guest.host_criu`` (cached after the first build, ≈20 s). Root is
needed, as for any CRIU dump.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from avocado_jobs import run_avocado

from avocado_iofuzz.guest.host_criu import host_criu
from sockstates.criu import criu_version

pytestmark = [
    pytest.mark.criu,
    pytest.mark.skipif(os.geteuid() != 0, reason="CRIU dumps need root"),
]


@pytest.fixture(scope="module")
def new_criu():
    path = host_criu()
    assert criu_version(str(path)) >= (4, 1)
    return path


def report(job) -> dict:
    return json.loads(job.data_file("sockstates.json").read_text())


def restored_processes() -> list[str]:
    """Our C/R targets still alive (a restored one is a child of nobody we know)."""
    out = subprocess.run(["pgrep", "-af", "sockstates.criu_target"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def test_quick_sweep_on_the_host_checks_every_state_with_the_new_criu(tmp_path, new_criu):
    before = restored_processes()
    job = run_avocado(
        "sockstates.quick",
        tmp_path,
        {"sockstates_where": "host", "sockstates_criu": str(new_criu)},
        timeout=600,
    )
    test = job.tests[0]
    table = report(job)
    assert table["mode"] == "criu" and table["where"] == "host", json.dumps(table, indent=1)
    assert table["criu_version"].startswith("4.1")
    # the quick sweep: datagram sockets, two syscalls
    assert table["states"] == len(table["table"]) == 11
    verdicts = {row["description"]: row["verdict"] for row in table["table"]}
    assert table["counts"].get("error", 0) == 0, verdicts
    assert verdicts["empty"] == "intact" and verdicts["DA-C2_DA-C1"] == "intact"
    # what CRIU loses is a finding: the row keeps the commands run with our criu and a reproducer
    failed = [row for row in table["table"] if row["verdict"] == "failed"]
    for row in failed:
        assert [c.split()[:2] for c in row["commands"]] == [[str(new_criu), "dump"], [str(new_criu), "restore"]]
        assert Path(row["reproducer"]).is_file() and row["reasons"]
    if failed:
        assert test["status"] == "FAIL" and f"did not restore {len(failed)} of 11" in test["fail_reason"]
    else:
        assert test["status"] == "PASS", job.output
    log = (job.test_dir() / "debug.log").read_text()
    assert f"on the host: CRIU {table['criu_version']} ({new_criu})" in log
    assert job.test_dir().joinpath("whiteboard").read_text().startswith("sockstates --criu (host): 11 states")
    assert restored_processes() == before  # every restored target was killed


def test_an_old_criu_on_a_new_kernel_is_refused_with_the_way_out(tmp_path):
    kernel = tuple(int(n) for n in os.uname().release.split(".")[:2])
    if kernel < (6, 13):
        pytest.skip(f"kernel {os.uname().release} predates the vDSO move: CRIU 3.17 works here")
    # a stand-in that answers --version like Debian bookworm's criu; nothing else is asked of it
    old = tmp_path / "criu-3.17"
    old.write_text("#!/bin/sh\necho 'Version: 3.17.1'\n")
    old.chmod(0o755)
    job = run_avocado("sockstates.quick", tmp_path, {"sockstates_where": "host", "sockstates_criu": str(old)})
    test = job.tests[0]
    assert test["status"] == "ERROR", job.output
    assert "is CRIU 3.17.1" in test["fail_reason"] and "avocado_iofuzz.guest.host_criu" in test["fail_reason"]
