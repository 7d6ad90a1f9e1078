"""The JUnit schema Jenkins reads, as avocado's own selftests use it.

avocado's source distribution ships the Jenkins JUnit XSD its selftests
validate ``--xunit`` output against (``selftests/.data/jenkins-junit.xsd``).
We fetch that sdist from PyPI with pip, for the avocado version installed,
and read the schema from it: the same well-known schema, not a copy of it in
this repository.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

SCHEMA_MEMBER = "selftests/.data/jenkins-junit.xsd"


def fetch_jenkins_junit_xsd(workdir: Path) -> Path:
    avocado = version("avocado-framework")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
         "--no-binary", ":all:", "-d", str(workdir), f"avocado-framework=={avocado}"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (sdist,) = workdir.glob("avocado_framework-*.tar.gz")
    with tarfile.open(sdist) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith(SCHEMA_MEMBER))
        target = workdir / "jenkins-junit.xsd"
        target.write_bytes(archive.extractfile(member).read())
    return target
