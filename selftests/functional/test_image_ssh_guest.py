"""guest_os=image with iofuzz_login=ssh: a disk that boots by itself and runs a real sshd (Dropbear).

The guest (``sshd_guest``) is made from Debian's packages like a user's
image: bootloader on the disk, kernel and init of its own, e1000 driven by
its kernel, root's password checked by the sshd. The product gets nothing
but the params a user would give.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from avocado_jobs import run_avocado
from sshd_guest import HOSTNAME, PASSWORD, PROMPT, sshd_guest_disk

pytestmark = pytest.mark.guest

QUIET_RANGES = ("timer1", "dma page reg", "fpu", "ACPI PM_TMR")


@pytest.fixture(scope="module")
def ssh_disk(tmp_path_factory) -> Path:
    return sshd_guest_disk(tmp_path_factory.mktemp("ssh-guest"))


def _params(disk: Path, password: str | None = None, password_file: Path | None = None) -> dict[str, str]:
    credentials = (
        {"iofuzz_password": password} if password_file is None else {"iofuzz_password_file": str(password_file)}
    )
    return {
        "iofuzz_image": str(disk),
        "iofuzz_image_format": "raw",
        "iofuzz_drive_interface": "ide",
        "iofuzz_login": "ssh",
        "iofuzz_username": "root",
        **credentials,
        "iofuzz_prompt": PROMPT,
        # Ranges whose writes reach nothing the network needs. In the full quick set, the DMA controllers,
        # fw_cfg and the IDE controller (both can DMA into guest memory), SMBus and PCI conf1 ended the
        # session in runs here, once by an interrupt storm on the e1000's line that made the kernel disable
        # it: over SSH each is a hang and a reset (docs/user/ci.rst, "Bring your own image"). This test is about login.
        "only_devices": ", ".join(QUIET_RANGES),
        "pio_widths": "1",  # what was measured quiet here: single bytes
        "fuzz_seed": "12",
    }


def test_image_fuzzed_over_ssh_through_a_loopback_forward(tmp_path, ssh_disk):
    job = run_avocado("iofuzz.quick.image", tmp_path, _params(ssh_disk, PASSWORD))
    test = job.tests[0]
    assert test["name"] == "iofuzz.quick.image" and test["status"] == "PASS", job.output
    summary = job.summary()
    assert summary["guest"] == "image" and len(summary["ranges"]) == len(QUIET_RANGES)
    assert all(r["ops_done"] == r["ops_planned"] > 0 for r in summary["ranges"])
    # the NIC that carries the session sits where the product's skip of it expects it
    ioports = job.data_file("proc-ioports.txt").read_text()
    assert re.search(r"(?m)^  \w+-\w+ : 0000:00:1e\.0\n    \w+-\w+ : e1000$", ioports), ioports
    cmdline = summary["qemu_cmdline"]
    assert re.findall(r"hostfwd=\w+:([^:,]*):", cmdline) == ["127.0.0.1"], cmdline  # one forward, loopback only
    log = (job.test_dir() / "debug.log").read_text()
    port = re.search(r"hostfwd=tcp:127\.0\.0\.1:(\d+)-:22", cmdline)[1]
    assert "login over SSH: ssh " in log and f"-p {port} " in log, log[-3000:]
    assert "not fuzzed: 0000:00:1e.0, the guest's session runs through it" in log
    assert "executor: /tmp/iofuzz-exec --seed 12" in log  # the copied executor is the one that ran
    # the SSH session's own transcript: the guest's login shell ran the copied executor to its end
    session_log = (job.test_dir() / "ssh-vm1.log").read_text()
    assert re.search(rf"(?m): root@{HOSTNAME}:~#$", session_log), session_log[:2000]
    done = sum(r["ops_done"] for r in summary["ranges"])
    assert re.search(rf"(?m): @DONE {done}$", session_log), session_log[-2000:]


def test_wrong_password_fails_fast_naming_the_credentials(tmp_path, ssh_disk):
    job = run_avocado("iofuzz.quick.image", tmp_path, _params(ssh_disk, "not-the-password"))
    test = job.tests[0]
    assert test["status"] == "ERROR", job.output
    assert re.match(
        r"SSH login as 'root' to 127\.0\.0\.1:\d+ \(forwarded to the guest's port 22\) failed: the guest refused "
        r"the credentials \(iofuzz_username = 'root', iofuzz_password\)",
        test["fail_reason"],
    ), test["fail_reason"]  # refused at the first answer: a login retried until login_timeout says "did not succeed
    # within N s" instead (this test's wall-clock bound of 45 s failed under CI load, boot alone took most of it)
    assert not job.data_file("trace.iofuzz").exists()  # nothing was fuzzed


def _files_holding(root: Path, secret: bytes) -> list[str]:
    """Every file under ``root`` (any depth, any content) whose bytes contain ``secret``."""
    return sorted(
        str(path.relative_to(root)) for path in root.rglob("*") if path.is_file() and secret in path.read_bytes()
    )


def _password_file(directory: Path, content: str) -> Path:
    directory.mkdir()
    path = directory / "guest-password"
    path.write_text(content)
    return path


def test_password_from_a_file_logs_in_and_is_in_no_file_of_the_results(tmp_path, ssh_disk):
    # outside the results dir: that dir is what Jenkins archives and what is searched below
    password_file = _password_file(tmp_path / "credentials", f"{PASSWORD}\n")
    results = tmp_path / "results"
    results.mkdir()
    job = run_avocado("iofuzz.quick.image", results, _params(ssh_disk, password_file=password_file))
    test = job.tests[0]
    assert test["status"] == "PASS", job.output
    # the login took the file's password: the guest's root shell ran the copied executor
    session_log = (job.test_dir() / "ssh-vm1.log").read_text()
    assert re.search(rf"(?m): root@{HOSTNAME}:~#$", session_log), session_log[:2000]
    assert all(r["ops_done"] == r["ops_planned"] > 0 for r in job.summary()["ranges"])
    # the path reached the test through the params, as the user gave it
    assert f"iofuzz_password_file = {password_file}" in (job.test_dir() / "debug.log").read_text()
    assert _files_holding(results, PASSWORD.encode()) == []
    assert len([p for p in results.rglob("*") if p.is_file()]) > 20  # the search did see the job's files


def test_wrong_password_file_ends_in_an_error_naming_the_file_param(tmp_path, ssh_disk):
    password_file = _password_file(tmp_path / "credentials", "not-the-password\n")
    results = tmp_path / "results"
    results.mkdir()
    job = run_avocado("iofuzz.quick.image", results, _params(ssh_disk, password_file=password_file))
    test = job.tests[0]
    assert test["status"] == "ERROR", job.output
    assert (
        f"refused the credentials (iofuzz_username = 'root', iofuzz_password_file = '{password_file}')"
        in (test["fail_reason"])
    ), test["fail_reason"]
    assert not job.data_file("trace.iofuzz").exists()  # nothing was fuzzed
    assert _files_holding(results, b"not-the-password") == []
