"""sockstates --criu in the embedded Debian guest, with the real CRIU (3.17.1 on Debian's 6.1 kernel).

One boot (module fixture) serves every test: CRIU's own check, a small
C/R sweep whose every record is checked for consistency, the standalone
reproducer of a failed state, and a fault test where CRIU is killed in the
middle of a dump.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator

import pytest

from avocado_iofuzz.guest.artifacts import GuestArtifacts
from avocado_iofuzz.guest.build import build_guest
from avocado_iofuzz.vm.bare import BareQemu
from avocado_iofuzz.vt.sockstates_report import parse_cli_output
from sockstates.criu import VERDICTS

pytestmark = [
    pytest.mark.guest,
    pytest.mark.criu,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
    pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="mmdebstrap not installed (bootstrap.sh)"),
]

LOG = logging.getLogger(__name__)
LOGIN_TIMEOUT = 120
SWEEP = "--depth 2 --types dgram"  # 11 states, about half a minute under TCG
# Stands in for criu: the second dump is killed with SIGKILL once it has seized
# its target and locked its network, i.e. in the middle of the dump.
# Kills the dump of the sweep's second state (index 1): the sweep's calibration
# run (no socket) dumps first, then state 0, so that is the third dump.
CRIU_KILLER = r"""#!/bin/sh
real=/usr/sbin/criu
if [ "$1" = dump ]; then
    n=$(( $(cat /tmp/killer.count 2>/dev/null || echo 0) + 1 )); echo $n > /tmp/killer.count
    if [ $n = 3 ]; then
        dir=$(echo "$@" | sed -n 's/.* -D \([^ ]*\) .*/\1/p')
        "$real" "$@" & pid=$!
        i=0
        while [ $i -lt 1000 ] && ! grep -q "Lock network" "$dir/dump.log" 2>/dev/null; do sleep 0.01; i=$((i+1)); done
        echo "$i" > /tmp/killer.waited
        kill -9 $pid; wait $pid; exit $?
    fi
fi
exec "$real" "$@"
"""


@pytest.fixture(scope="module")
def debian_guest() -> GuestArtifacts:
    started = time.monotonic()
    guest = build_guest("debian")
    LOG.info("build_guest('debian') took %.1f s", time.monotonic() - started)
    return guest


@pytest.fixture(scope="module")
def shell(debian_guest: GuestArtifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    vm = BareQemu(debian_guest, tmp_path_factory.mktemp("debian-vm"), memory_mb=1024)
    with vm:
        started = time.monotonic()
        session = vm.login(LOGIN_TIMEOUT)
        print(f"\nDebian guest: prompt after {time.monotonic() - started:.1f} s under {vm.accel}")
        yield session
    assert not vm.is_alive()


def guest_json(shell, path: str) -> object:
    return json.loads(shell.cmd_output(f"cat {path}", timeout=60))


def guest_records(shell, path: str) -> list[dict]:
    return [json.loads(line) for line in shell.cmd_output(f"cat {path}", timeout=120).splitlines() if line.strip()]


def test_criu_works_in_the_guest(shell) -> None:
    status, output = shell.cmd_status_output("criu check", timeout=120)
    assert status == 0 and "Looks good" in output, output


def test_a_small_sweep_checks_every_state_consistently(shell) -> None:
    states = parse_cli_output(shell.cmd_output(f"sockstates --gen {SWEEP}", timeout=60), "gen")
    started = time.monotonic()
    status, output = shell.cmd_status_output(f"sockstates --criu {SWEEP} --out /tmp/sweep", timeout=900)
    print(f"\nsweep of {len(states)} states in {time.monotonic() - started:.1f} s:\n{output.splitlines()[-1]}")
    records = guest_records(shell, "/tmp/sweep/results.jsonl")
    summary = guest_json(shell, "/tmp/sweep/summary.json")
    assert [r["description"] for r in records] == [s["description"] for s in states]
    assert [r["index"] for r in records] == list(range(len(states)))
    assert summary["states"] == len(records) and summary["criu_version"].startswith("3.17")
    for verdict in VERDICTS:
        assert summary["counts"][verdict] == sum(r["verdict"] == verdict for r in records)
    for r in records:
        if r["verdict"] == "intact":
            assert r["after"] == r["before"] and not r["reasons"] and len(r["commands"]) == 2, r
        else:
            assert r["reasons"] and r["stage"] in ("dump", "restore", "verify", "reach"), r
            assert r["verdict"] != "error", r  # nothing here kills CRIU or the targets
            assert shell.cmd_status(f"test -x {r['reproducer']}") == 0, r
    assert status == (1 if summary["counts"]["failed"] else 0)
    # C/R of a process without sockets has nothing to lose
    assert records[0]["description"] == "empty" and records[0]["verdict"] == "intact"


def test_the_reproducer_of_a_failed_state_shows_the_difference(shell) -> None:
    records = guest_records(shell, "/tmp/sweep/results.jsonl")
    failed = [r for r in records if r["verdict"] == "failed" and r["stage"] == "verify"]
    if not failed:
        pytest.skip("this CRIU restored every state of the sweep intact: no reproducer to run")
    status, output = shell.cmd_status_output(f"python3 {failed[0]['reproducer']}", timeout=300)
    assert status == 1, output
    assert "--- without C/R" in output and "+++ after C/R" in output


def test_criu_killed_mid_dump_is_an_error_and_the_sweep_goes_on(shell) -> None:
    shell.cmd("rm -f /tmp/killer.count /tmp/killer.waited; rm -rf /tmp/fault", timeout=30)
    shell.cmd(f"cat > /tmp/criu-killer <<'EOF'\n{CRIU_KILLER}EOF", timeout=30)
    shell.cmd("chmod +x /tmp/criu-killer", timeout=30)
    status, output = shell.cmd_status_output(
        "sockstates --criu --depth 1 --types dgram --criu-bin /tmp/criu-killer --out /tmp/fault", timeout=600)
    records = guest_records(shell, "/tmp/fault/results.jsonl")
    summary = guest_json(shell, "/tmp/fault/summary.json")
    assert int(shell.cmd_output("cat /tmp/killer.waited").strip()) < 1000, "the dump never reached its lock"
    assert [r["index"] for r in records] == [0, 1, 2], output
    killed = records[1]
    assert (killed["verdict"], killed["stage"]) == ("error", "dump"), killed
    assert "signal 9" in killed["reasons"][0]
    assert any("dump.log" in line for line in killed["log_lines"])
    # the states before and after were checked in full
    for r in (records[0], records[2]):
        assert r["verdict"] != "error" and len(r["commands"]) == 2, r
    assert summary["counts"]["error"] == 1 and status == 1
    assert "1 errors" in output.splitlines()[-1]
    # the target of the killed dump is gone, none left stopped or traced
    assert shell.cmd_output("pgrep -f sockstates.criu_target; true", timeout=30).strip() == ""
