"""Run real avocado jobs from selftests and read what they left behind.

Jobs run with this checkout first on PYTHONPATH, so the installed entry
points (resolver, init plugin) execute the code under test, and with their
results in a pytest temporary directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
AVOCADO = Path(sys.executable).with_name("avocado")


@dataclass
class JobResult:
    returncode: int
    output: str
    results: dict[str, Any]
    job_dir: Path

    @property
    def tests(self) -> list[dict[str, Any]]:
        return self.results["tests"]

    def test_dir(self, index: int = 0) -> Path:
        return Path(self.tests[index]["logdir"])

    def data_file(self, name: str, index: int = 0) -> Path:
        """A file the test wrote into its output (data) dir."""
        return self.test_dir(index) / "data" / name

    def summary(self, index: int = 0) -> dict[str, Any]:
        return json.loads(self.data_file("summary.json", index).read_text())


def avocado_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def avocado_command(reference: str, results_dir: Path, params: dict[str, str] | None = None) -> list[str]:
    command = [str(AVOCADO), "run", reference, "--job-results-dir", str(results_dir), "--disable-sysinfo"]
    for key, value in (params or {}).items():
        command += ["--vt-extra-params", f"{key}={value}"]
    return command


def read_job(returncode: int, output: str, results_dir: Path) -> JobResult:
    jobs = sorted(p for p in results_dir.glob("job-*") if p.is_dir())
    assert jobs, f"avocado left no job dir in {results_dir}:\n{output}"
    results = json.loads((jobs[-1] / "results.json").read_text())
    return JobResult(returncode, output, results, jobs[-1])


def run_avocado(
    reference: str, results_dir: Path, params: dict[str, str] | None = None, timeout: float = 600
) -> JobResult:
    proc = subprocess.run(
        avocado_command(reference, results_dir, params),
        env=avocado_env(),
        cwd=results_dir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return read_job(proc.returncode, proc.stdout + proc.stderr, results_dir)
