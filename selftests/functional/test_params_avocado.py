"""A bad param ends `avocado run iofuzz` with ERROR before any QEMU process starts."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest
from avocado_jobs import avocado_command, avocado_env, qemu_pid, read_job

pytestmark = pytest.mark.guest



def test_fuzz_count_beyond_the_executors_limit_errors_before_qemu_starts(tmp_path):
    marker = str(uuid.uuid4())
    params = {"fuzz_count": "99999999999", "extra_params": f"-uuid {marker}"}
    proc = subprocess.Popen(
        avocado_command("iofuzz.quick", tmp_path, params),
        env=avocado_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    qemu_seen = None
    try:
        # watch from outside for the whole job: a QEMU started even briefly would show here
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            qemu_seen = qemu_seen or qemu_pid(marker)
            time.sleep(0.05)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        leftover = qemu_pid(marker)
        if leftover:
            os.kill(leftover, 9)
    assert qemu_seen is None, f"QEMU {qemu_seen} was started"
    job = read_job(proc.returncode, output, tmp_path)
    test = job.tests[0]
    assert test["status"] == "ERROR", output
    assert test["fail_reason"].startswith("param fuzz_count = '99999999999': must be <= 4294967295 ("), test
    debug_log = (job.test_dir() / "debug.log").read_text(errors="replace")
    assert "Running qemu command" not in debug_log and "Created qemu process" not in debug_log
    assert not job.data_file("seed").exists()  # written right before the VM starts
