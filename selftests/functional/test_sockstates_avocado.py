"""`avocado run sockstates` end to end: the resolver, the VT test, the guest or host path, the table."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from avocado_jobs import avocado_command, avocado_env, run_avocado


def report(job) -> dict:
    return json.loads(job.data_file("sockstates.json").read_text())


def test_avocado_list_shows_the_modes_and_sizes(tmp_path):
    # not from the checkout's top: there "sockstates" is the package's folder, and avocado
    # expands a reference naming a folder into the files inside it
    out = subprocess.run(
        [str(avocado_command("x", tmp_path)[0]), "list", "sockstates"],
        env=avocado_env(), capture_output=True, text=True, timeout=120, cwd=tmp_path,
    ).stdout
    listed = set(re.findall(r"^avocado-vt (\S+)$", out, re.M))
    assert {"sockstates.debian", "sockstates.gen.debian", "sockstates.run.debian", "sockstates.quick.debian"} <= listed


def test_gen_on_the_host_lists_the_states_without_a_guest(tmp_path):
    job = run_avocado("sockstates.quick.gen", tmp_path, {"sockstates_where": "host"})
    assert job.tests[0]["status"] == "PASS", job.output
    table = report(job)
    assert table["mode"] == "gen" and table["where"] == "host"
    assert table["states"] == len(table["table"]) > 1 and table["counts"] == {"listed": table["states"]}
    assert table["table"][0]["description"] == "empty"
    assert "sockstates --gen (host)" in job.test_dir().joinpath("whiteboard").read_text()


@pytest.mark.skipif(shutil.which("criu") is not None, reason="a host CRIU is installed: its version decides")
def test_criu_on_a_host_without_criu_is_an_error_naming_the_param(tmp_path):
    job = run_avocado("sockstates.quick", tmp_path, {"sockstates_where": "host"})
    assert job.tests[0]["status"] == "ERROR", job.output
    assert "sockstates_criu" in job.tests[0]["fail_reason"]


def test_a_bad_param_errors_before_anything_boots(tmp_path):
    job = run_avocado("sockstates.quick", tmp_path, {"sockstates_types": "stream,raw"})
    assert job.tests[0]["status"] == "ERROR"
    assert "sockstates_types" in job.tests[0]["fail_reason"] and "raw" in job.tests[0]["fail_reason"]
    assert not job.data_file("sockstates.json").exists()


@pytest.mark.guest
@pytest.mark.criu
def test_criu_sweep_in_the_debian_guest_reports_every_state(tmp_path):
    job = run_avocado("sockstates.quick", tmp_path, {"sockstates_depth": "1"}, timeout=900)
    test = job.tests[0]
    table = report(job)
    assert table["mode"] == "criu" and table["where"] == "guest"
    assert table["states"] == 3, json.dumps(table, indent=1)  # empty, one datagram socket, a datagram pair
    assert table["criu_version"].startswith("3.17")
    failed = table["counts"].get("failed", 0)
    assert test["status"] == ("FAIL" if failed else "PASS"), job.output
    assert table["counts"].get("error", 0) == 0
    rows = table["table"]
    assert [r["index"] for r in rows] == [0, 1, 2]
    for row in rows:
        if row["verdict"] != "intact":
            assert (job.test_dir() / "data").joinpath(row["reproducer"]).exists() or row["reproducer"]
    assert (job.test_dir() / "data" / "sockstates" / "out" / "results.jsonl").exists()
    whiteboard = job.test_dir().joinpath("whiteboard").read_text()
    assert whiteboard.startswith("sockstates --criu (guest): 3 states")
