"""The body of the ``sockstates`` VT test: params -> Debian guest (or host) -> sweep -> table -> verdict.

``tests/sockstates_vt.py`` keeps avocado-vt's classic ``run(test, params, env)``
and calls :func:`run_sockstates`. In the guest (the default), the embedded
Debian guest boots through avocado-vt like the iofuzz test's, the
``sockstates`` CLI (baked into the guest) runs detached from the console —
CRIU cannot dump a process whose descriptors are the serial console — and its
progress is polled; afterwards its output directory comes back over the
console as a base64 tarball. On the host (``sockstates_where = host``, for a
CRIU >= 4.1 there) the same CLI runs as a subprocess.

Whatever the mode, the test writes one per-state table
(``sockstates.json``) and logs a human summary; CRIU's findings fail the test
(``sockstates_failure_status``), states that could not be checked error it.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from avocado_iofuzz.vt.params import ParamError
from avocado_iofuzz.vt.sockstates_params import SockstatesParams
from avocado_iofuzz.vt.sockstates_report import (
    REPORT_NAME,
    build_report,
    criu_rows,
    parse_cli_output,
    read_results,
    summary_lines,
    write_report,
)

LOG = logging.getLogger("avocado.test.sockstates")

GUEST_DIR = "/tmp/sockstates-run"
LOCAL_DIRNAME = "sockstates"  # in the test's output dir: the CLI's output directory, log, status
CLI_LOG = "sockstates.log"
STATUS_FILE = "status"
PID_FILE = "pid"
POLL_SECONDS = 5.0
FETCH_TIMEOUT = 600.0
# CRIUs older than 4.1 cannot dump on kernels from 6.13 on (the vDSO moved)
HOST_CRIU_MINIMUM = (4, 1)
VDSO_LAYOUT_KERNEL = (6, 13)


def kernel_version(release: str) -> tuple[int, int]:
    """``6.18.44-fc-v657`` (``uname -r``) → (6, 18); (0, 0) when it does not start with two numbers."""
    parts = release.split(".", 2)
    try:
        return int(parts[0]), int("".join(c for c in parts[1][:3] if c.isdigit()) or "x")
    except (IndexError, ValueError):
        return (0, 0)


def host_criu_too_old(criu_version: tuple[int, ...], kernel_release: str) -> bool:
    """Whether this CRIU fails on this kernel for the vDSO alone (an unparsable kernel counts as new)."""
    kernel = kernel_version(kernel_release)
    return criu_version < HOST_CRIU_MINIMUM and (kernel == (0, 0) or kernel >= VDSO_LAYOUT_KERNEL)


class SweepCutShort(RuntimeError):
    """The sweep did not finish: timeout, or the guest died."""


def run_sockstates(test: Any, params: Any, env: Any) -> None:
    try:
        settings = SockstatesParams.from_params(params)
    except ParamError as err:
        test.error(str(err))
    outdir = Path(test.outputdir)
    local = outdir / LOCAL_DIRNAME
    local.mkdir(parents=True, exist_ok=True)
    cut_short = None
    try:
        if settings.where == "host":
            _run_on_host(test, settings, local)
        else:
            _run_in_guest(test, params, env, settings, local)
    except SweepCutShort as err:
        cut_short = str(err)
    report = _report(settings, local)
    write_report(outdir / REPORT_NAME, report)
    lines = summary_lines(report)
    for line in lines:
        LOG.info("%s", line)
    test.whiteboard = "\n".join(lines)
    if cut_short:
        test.error(f"{cut_short}; {report['states']} states recorded in {outdir / REPORT_NAME}")
    _verdict(test, settings, report)


def _report(settings: SockstatesParams, local: Path) -> dict[str, Any]:
    # what decides the sweep; how the VM logs in and boots does not
    params = {k: v for k, v in vars(settings).items() if k not in ("login_timeout", "extra_kernel_params")}
    log_text = (local / CLI_LOG).read_text(errors="replace") if (local / CLI_LOG).exists() else ""
    status = (local / STATUS_FILE).read_text().strip() if (local / STATUS_FILE).exists() else ""
    extra: dict[str, Any] = {"exit_status": int(status) if status.lstrip("-").isdigit() else None}
    if settings.mode == "criu":
        results = local / "out" / "results.jsonl"
        records = read_results(results) if results.exists() else []
        rows = criu_rows(records, repro_root=local / "out" / "repro")
        summary = local / "out" / "summary.json"
        if summary.exists():
            import json

            extra.update({k: v for k, v in json.loads(summary.read_text()).items() if k in ("line", "criu_version")})
    else:
        rows = parse_cli_output(log_text, settings.mode)
    if not rows and log_text.strip():
        LOG.warning("sockstates printed:\n%s", log_text[-3000:])
    return build_report(settings.mode, settings.where, params, rows, extra)


def _verdict(test: Any, settings: SockstatesParams, report: dict[str, Any]) -> None:
    counts = report["counts"]
    status = report.get("exit_status")
    if settings.mode == "criu":
        failed, errors = counts.get("failed", 0), counts.get("error", 0)
        if failed and settings.failure_status != "pass":
            message = (f"CRIU did not restore {failed} of {report['states']} states intact"
                       f"{f' ({errors} more could not be checked)' if errors else ''}; see {REPORT_NAME}")
            if settings.failure_status == "fail":
                test.fail(message)
            from avocado.core import exceptions

            raise exceptions.TestWarn(message)
        if errors:
            test.error(f"{errors} of {report['states']} states could not be checked (CRIU killed or timed out, "
                       f"or the target failed); see {REPORT_NAME}")
    elif settings.mode == "run":
        bad = counts.get("mismatch", 0) + counts.get("error", 0)
        if bad:
            test.fail(f"the kernel disagrees with the model on {bad} of {report['states']} states; see {REPORT_NAME}")
    if status not in (None, 0, 1):
        test.error(f"sockstates exited with status {status}; see {LOCAL_DIRNAME}/{CLI_LOG}")
    if report["states"] == 0:
        test.error(f"sockstates reported no state; see {LOCAL_DIRNAME}/{CLI_LOG}")


# -- in the guest ----------------------------------------------------------------


def _run_in_guest(test: Any, params: Any, env: Any, settings: SockstatesParams, local: Path) -> None:
    from avocado_iofuzz.vm.vt import VtGuest
    from avocado_iofuzz.vt.iofuzz_test import start_embedded_vm

    if settings.guest != "debian":
        test.error(f"param iofuzz_guest = {settings.guest!r}: sockstates runs in the 'debian' guest (python3, criu)")
    vm, accel, reason = start_embedded_vm(test, params, env, settings.vm)
    LOG.info("guest up under %s (%s)", accel, reason)
    guest = VtGuest(vm, login_timeout=settings.login_timeout)
    session = guest.login()
    command = settings.command("sockstates", f"{GUEST_DIR}/out")
    LOG.info("in the guest: %s", command)
    inner = f"echo $$ > {PID_FILE}; {command} > {CLI_LOG} 2>&1; echo $? > {STATUS_FILE}"
    # setsid -f: not a job of the console's shell, and no descriptor on the console
    session.cmd(f"rm -rf {GUEST_DIR} && mkdir -p {GUEST_DIR} && cd {GUEST_DIR} && "
                f"setsid -f sh -c {shlex.quote(inner)} </dev/null >/dev/null 2>&1", timeout=60)
    try:
        _wait_in_guest(session, guest, settings)
    finally:
        _fetch(session, local)


def _wait_in_guest(session: Any, guest: Any, settings: SockstatesParams) -> None:
    deadline = time.monotonic() + settings.timeout
    last = ""
    while True:
        if not guest.is_alive():
            raise SweepCutShort(f"QEMU died during the sweep: {guest.exit_info().describe()}")
        probe = session.cmd_output(
            f"cat {GUEST_DIR}/{STATUS_FILE} 2>/dev/null; echo \"progress $(wc -l < {GUEST_DIR}/out/results.jsonl "
            f"2>/dev/null || echo 0) $(wc -l < {GUEST_DIR}/{CLI_LOG})\"", timeout=60)
        lines = [line.strip() for line in probe.splitlines() if line.strip()]
        progress = next((line for line in lines if line.startswith("progress ")), "")
        if progress != last:
            words = progress.split()
            if len(words) == 3:
                LOG.info("sweep: %s states checked, %s lines of output", words[1], words[2])
            last = progress
        if lines and lines[0].lstrip("-").isdigit():
            return
        if time.monotonic() > deadline:
            # the sweep's process group (setsid made its shell the leader)
            session.cmd_output(f"kill -- -$(cat {GUEST_DIR}/{PID_FILE}); true", timeout=30)
            raise SweepCutShort(f"the sweep did not finish within sockstates_timeout = {settings.timeout:.0f} s")
        time.sleep(POLL_SECONDS)


def _fetch(session: Any, local: Path) -> None:
    """The guest's run directory, as a gzip tarball in base64 over the console."""
    text = session.cmd_output(f"tar czf - -C {GUEST_DIR} . | base64", timeout=FETCH_TIMEOUT)
    blob = "".join(line.strip() for line in text.splitlines() if line.strip())
    try:
        data = base64.b64decode(blob, validate=True)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            archive.extractall(local, filter="data")
    except (ValueError, tarfile.TarError) as err:
        LOG.error("could not fetch %s from the guest: %s", GUEST_DIR, err)


# -- on the host -----------------------------------------------------------------


def _run_on_host(test: Any, settings: SockstatesParams, local: Path) -> None:
    if settings.mode != "gen" and os.geteuid() != 0:
        test.error(f"sockstates_where = host: --{settings.mode} needs root")
    if settings.mode == "criu":
        from sockstates.criu import CriuSetupError, criu_version

        try:
            version = criu_version(settings.criu)
        except CriuSetupError as err:
            test.error(f"sockstates_where = host: {err} (param sockstates_criu)")
        kernel = os.uname().release
        if host_criu_too_old(version, kernel):
            test.error(
                f"sockstates_where = host: {settings.criu} is CRIU {'.'.join(map(str, version))}; CRIU older than "
                f"{'.'.join(map(str, HOST_CRIU_MINIMUM))} cannot dump on kernels >= 6.13 (vDSO layout) and this is "
                f"{kernel}: run in the guest (sockstates_where = guest) or name a newer criu "
                "(sockstates_criu; `python3 -m avocado_iofuzz.guest.host_criu` builds Debian trixie's "
                "and prints its path)"
            )
        LOG.info("on the host: CRIU %s (%s), kernel %s", ".".join(map(str, version)), settings.criu, kernel)
    argv = [sys.executable, "-m", "sockstates", *settings.cli_args(str(local / "out"))]
    LOG.info("on the host: %s", shlex.join(argv))
    deadline = time.monotonic() + settings.timeout
    with open(local / CLI_LOG, "wb") as log:
        proc = subprocess.Popen(argv, cwd=local, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    raise SweepCutShort(f"the sweep took longer than sockstates_timeout = {settings.timeout:.0f} s")
                time.sleep(min(POLL_SECONDS, 0.5))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    (local / STATUS_FILE).write_text(f"{proc.returncode}\n")
