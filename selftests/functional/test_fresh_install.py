"""A user's first steps: a fresh venv, `pip install .`, `avocado list iofuzz`, `avocado config`.

The package is installed from a copy of the tracked files (what a clone
holds) into a new virtualenv with its own HOME, so nothing of the
development venv or of this checkout's build leftovers can help it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.install


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("fresh")
    source = root / "src"
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    )
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    venv.create(root / "venv", with_pip=True)
    python = root / "venv" / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HOME"] = str(root / "home")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    return root / "venv" / "bin", env


def _avocado(bindir: Path, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [str(bindir / "avocado"), *args], env=env, capture_output=True, text=True, timeout=300, cwd=bindir.parent
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_avocado_list_shows_the_matrix(fresh_venv):
    bindir, env = fresh_venv
    listed = set(re.findall(r"^avocado-vt (\S+)$", _avocado(bindir, env, "list", "iofuzz"), re.M))
    assert {"iofuzz", "iofuzz.quick", "iofuzz.debian", "iofuzz.image", "iofuzz.long.image"} <= listed
    # a filter picks the rows it names (every device/machine row of the quick image variant)
    picked = re.findall(r"^avocado-vt (\S+)$", _avocado(bindir, env, "list", "iofuzz.quick.image"), re.M)
    assert picked and all(".quick." in name and name.endswith(".image") for name in picked)
    assert len(picked) < len(listed)


def test_avocado_config_shows_the_iofuzz_section(fresh_venv):
    bindir, env = fresh_venv
    shown = _avocado(bindir, env, "config")
    for key in ("iofuzz.accel", "iofuzz.hang_timeout", "iofuzz.shards", "iofuzz.image"):
        assert re.search(rf"^\s*{re.escape(key)}\s", shown, re.M), key


def test_avocado_conf_overrides_a_default(fresh_venv, tmp_path):
    bindir, env = fresh_venv
    conf = tmp_path / "avocado.conf"
    conf.write_text("[iofuzz]\nhang_timeout = 33\n")
    shown = _avocado(bindir, env, "--config", str(conf), "config")
    assert re.search(r"^\s*iofuzz\.hang_timeout\s+33\s*$", shown, re.M)


def test_the_installed_package_is_not_this_checkout(fresh_venv):
    bindir, env = fresh_venv
    where = subprocess.run(
        [str(bindir / "python"), "-c", "import avocado_iofuzz; print(avocado_iofuzz.__file__)"],
        env=env, capture_output=True, text=True, cwd=bindir, check=True,
    ).stdout  # fmt: skip
    assert str(REPO) not in where and sys.prefix not in where


def test_avocado_list_shows_sockstates(fresh_venv):
    bindir, env = fresh_venv
    listed = set(re.findall(r"^avocado-vt (\S+)$", _avocado(bindir, env, "list", "sockstates"), re.M))
    assert {"sockstates.debian", "sockstates.quick.debian", "sockstates.run.debian"} <= listed


def test_vt_bootstrap_after_install_changes_nothing_for_us(fresh_venv):
    """Users run avocado-vt's own bootstrap too: our resolver must keep answering the same."""
    bindir, env = fresh_venv
    before = re.findall(r"^avocado-vt (\S+)$", _avocado(bindir, env, "list", "iofuzz.quick"), re.M)
    _avocado(bindir, env, "vt-bootstrap", "--vt-type", "qemu", "--vt-no-downloads", "--yes-to-all")
    after = re.findall(r"^avocado-vt (\S+)$", _avocado(bindir, env, "list", "iofuzz.quick"), re.M)
    assert before and after == before
