"""Run real avocado jobs from selftests and read what they left behind.

Jobs run the way users run them: the venv's ``avocado``, PYTHONPATH unset,
so the installed package (entry points, resolver, cfg, VT test modules) is
what executes; results land in a pytest temporary directory. Before the
first job, the installed package is compared with this checkout (see
``installed_package_is_this_checkout``) so a stale install cannot silently
be what a test proves.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
AVOCADO = Path(sys.executable).with_name("avocado")
PACKAGES = ("avocado_iofuzz", "sockstates")
# where setup.py installs what lives outside the packages: checkout folder -> folder in the installed avocado_iofuzz
DATA_FOLDERS = {"cfg": "data/cfg", "tests": "data/tests"}
PACKAGE_SUFFIXES = (".py", ".cfg", ".c")
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


def user_env() -> dict[str, str]:
    """The environment of a user's shell: nothing points Python into this checkout."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _installed_package_dirs(env: dict[str, str]) -> dict[str, Path]:
    """Where the venv's Python imports our packages from, asked outside the checkout."""
    script = "import importlib.util as u, sys; [print(u.find_spec(n).origin) for n in sys.argv[1:]]"
    proc = subprocess.run(
        [sys.executable, "-c", script, *PACKAGES], env=env, cwd="/", capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        return {}
    return {name: Path(origin).parent for name, origin in zip(PACKAGES, proc.stdout.split(), strict=True)}


def _source_files() -> dict[str, Path]:
    """The package's files in this checkout, keyed by their path inside the installed packages."""
    files = {}
    for name in PACKAGES:
        for path in (REPO / name).rglob("*"):
            if path.suffix in PACKAGE_SUFFIXES and "__pycache__" not in path.parts:
                files[str(path.relative_to(REPO))] = path
    for folder, installed in DATA_FOLDERS.items():
        for path in (REPO / folder).iterdir():
            if path.suffix in PACKAGE_SUFFIXES:
                files[f"avocado_iofuzz/{installed}/{path.name}"] = path
    return files


def install_differences(env: dict[str, str]) -> list[str]:
    """What differs between the installed package and this checkout: changed, missing and extra files.

    An extra module matters as much as a changed one: a VT test module left
    over from an older install is still on avocado-vt's import path.
    """
    installed_dirs = _installed_package_dirs(env)
    if set(installed_dirs) != set(PACKAGES):
        return [f"{', '.join(PACKAGES)} not importable by {sys.executable} without PYTHONPATH"]
    if any(d == REPO / name for name, d in installed_dirs.items()):  # the venv may live in the checkout
        return [f"the venv imports the checkout itself ({installed_dirs}), not an installed copy"]
    source = _source_files()
    installed = {}
    for name, directory in installed_dirs.items():
        for path in directory.rglob("*"):
            if path.suffix in PACKAGE_SUFFIXES and "__pycache__" not in path.parts:
                installed[f"{name}/{path.relative_to(directory)}"] = path
    differences = [f"not installed: {key}" for key in sorted(source.keys() - installed.keys())]
    differences += [f"installed but not in the checkout: {key}" for key in sorted(installed.keys() - source.keys())]
    differences += [
        f"differs: {key}"
        for key in sorted(source.keys() & installed.keys())
        if source[key].read_bytes() != installed[key].read_bytes()
    ]
    return differences


def _reinstall(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # setuptools copies from build/lib, which keeps files deleted or renamed in
    # the checkout: a stale VT test module would be installed again
    shutil.rmtree(REPO / "build", ignore_errors=True)
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check", "."],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@functools.cache
def _install_problem() -> str | None:
    """Once per session: None when the installed package is this checkout's, else what is wrong.

    A stale install is reinstalled (``pip install --no-deps .``, some ten
    seconds) rather than reported: forgetting that step after an edit is the
    usual case, and a guest test that ran the old code would cost minutes and
    prove nothing. What still differs after the reinstall is the problem.
    """
    env = user_env()
    if not install_differences(env):
        return None
    proc = _reinstall(env)
    remaining = install_differences(env)
    if not remaining:
        return None
    return (
        f"the package installed in {sys.prefix} is not this checkout ({REPO}) even after"
        f" `pip install --no-deps .` (exit {proc.returncode}: {proc.stderr[-1500:]}):\n  "
        + "\n  ".join(remaining[:40])
    )


def installed_package_is_this_checkout() -> None:
    """Make sure avocado jobs run this checkout's code, installed as users install it."""
    problem = _install_problem()
    if problem:
        raise RuntimeError(problem)


def avocado_env() -> dict[str, str]:
    """The environment avocado subprocesses get: a user's, with the installed package checked first."""
    installed_package_is_this_checkout()
    return user_env()


# A shell that starts a command in the background without job control (``cmd &`` in a script, or a
# CI runner's) makes it ignore SIGINT, and an ignored signal stays ignored across fork and exec: an
# avocado started under such a pytest never sees the SIGINT a test sends, and runs on (its test
# too) until it is killed. The ``-c`` program restores SIGINT's default action, as a terminal's
# Ctrl+C finds it, then becomes the command (same PID).
_DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
)


def interruptible(command: list[str]) -> list[str]:
    """``command`` started with SIGINT at its default action, whatever this process inherited."""
    return [sys.executable, "-c", _DEFAULT_SIGINT, *command]


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
    reference: str,
    results_dir: Path,
    params: dict[str, str] | None = None,
    timeout: float = 600,
    cwd: Path | None = None,
) -> JobResult:
    """One ``avocado run``, started in ``cwd`` (default: the results dir, a scratch directory)."""
    proc = subprocess.run(
        avocado_command(reference, results_dir, params),
        env=avocado_env(),
        cwd=cwd or results_dir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return read_job(proc.returncode, proc.stdout + proc.stderr, results_dir)


def qemu_pid(marker: str) -> int | None:
    """The QEMU process whose command line holds ``marker``, if one runs now (not avocado's runner,
    whose arguments hold the marker too)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            exe = os.readlink(entry / "exe")
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if os.path.basename(exe).startswith("qemu-system") and marker.encode() in cmdline:
            return int(entry.name)
    return None
