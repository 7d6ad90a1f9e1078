"""Every finding page's reproducer, run with the CRIU the page names, gives the exit status it states.

CRIU 4.1.1 (trixie) and 4.2.1 (sid) are built from Debian's source by
``avocado_iofuzz.guest.host_criu`` (cached after the first build). Root is needed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from avocado_iofuzz.guest.host_criu import host_criu
from sockstates import finding_classes

pytestmark = [
    pytest.mark.criu,
    pytest.mark.skipif(os.geteuid() != 0, reason="CRIU dumps need root"),
]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "criu-findings"
SUITES = {"4.1.1": "trixie", "4.2.1": "sid"}


@pytest.mark.parametrize("cls", finding_classes.CLASSES, ids=lambda c: c.slug)
def test_the_reproducer_shows_what_the_page_says(cls, tmp_path) -> None:
    criu = host_criu(suite=SUITES[cls.criu])
    env = dict(os.environ, TMPDIR=str(tmp_path), CRIU=str(criu))  # its work dirs under tmp_path
    proc = subprocess.run([sys.executable, str(DOCS / f"{cls.slug}.py")], env=env, capture_output=True, text=True,
                          timeout=180, check=False)
    assert proc.returncode == cls.exit_status, proc.stdout + proc.stderr
    left = subprocess.run(["pgrep", "-af", str(tmp_path)], capture_output=True, text=True).stdout
    assert [line for line in left.splitlines() if "pgrep" not in line] == []
