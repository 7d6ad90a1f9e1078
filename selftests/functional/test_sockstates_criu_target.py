"""The C/R target on the host with no C/R in between: it must agree with `--run` on every state.

`sockstates.criu_target` reaches a state, waits, then probes and checks
itself. Told to go on without being dumped and restored, its view must be
exactly the twin's (`run.run_sequence`) and its message and connection
checks must find nothing: otherwise `--criu` would blame CRIU for our own
differences. Needs root (or user namespaces) for the private network
namespace; no guest, no CRIU.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sockstates import actions, explore, run
from sockstates.criu import _target_env


def can_make_a_network_namespace() -> bool:
    probe = subprocess.run([sys.executable, "-c", "from sockstates import run; run.unshare_net()"],
                           env=_target_env(), capture_output=True, timeout=60, check=False)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not can_make_a_network_namespace(), reason="no private network namespace here")


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None or path.exists(), f"target exited with {proc.returncode} before {path.name}"
        assert time.monotonic() < deadline, f"no {path.name} within {timeout} s"
        time.sleep(0.005)
    return json.loads(path.read_text())


def target_without_cr(syscalls: list[str]) -> tuple[dict, dict]:
    with tempfile.TemporaryDirectory(prefix="criu-target-") as tmp:
        workdir = Path(tmp)
        (workdir / "names").mkdir()
        (workdir / "sequence.json").write_text(json.dumps({"syscalls": syscalls}))
        proc = subprocess.Popen([sys.executable, "-S", "-m", "sockstates.criu_target", str(workdir)],
                                env=_target_env(), stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            ready = wait_for(workdir / "ready.json", proc)
            (workdir / "go").touch()
            result = wait_for(workdir / "result.json", proc)
        finally:
            proc.kill()
            proc.wait()
    return ready, result


def states() -> list[explore.Found]:
    shallow = list(explore.explore(actions.Bounds(), 2))
    deeper = [f for f in explore.explore(actions.Bounds(), 3) if f.depth == 3][::7]
    return shallow + deeper


def test_the_target_sees_what_the_runner_sees_on_every_state() -> None:
    checked = 0
    for found in states():
        lines = [str(c) for c in found.syscalls]
        twin = run.run_sequence(found.syscalls)
        assert not twin.error and not twin.call_mismatches, (found.description, twin)
        ready, result = target_without_cr(lines)
        assert ready["pid"] > 0 and not ready["mismatches"], (found.description, ready)
        assert set(ready["inodes"]) == {str(h) for c in found.syscalls for h in c.result}
        assert "error" not in result, (found.description, result.get("trace"))
        assert set(result["descriptions"]) == set(twin.descriptions), found.description
        assert result["messages"] == [] and result["reachability"] == [], (found.description, result)
        checked += 1
    assert checked > 50
