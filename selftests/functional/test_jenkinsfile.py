"""The Jenkinsfile parses as Groovy and has the shape the users' Jenkins needs.

No Jenkins runs here: Debian's Groovy compiler parses the file (syntax and
AST, see data/jenkinsfile_outline.groovy) and prints its outline, and the
checks below read that outline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from avocado_iofuzz.vt.catalog import TestCatalog

REPO = Path(__file__).resolve().parents[2]
OUTLINE_SCRIPT = Path(__file__).with_name("data") / "jenkinsfile_outline.groovy"


def _groovy_env() -> dict[str, str]:
    """Debian's groovy wants JAVA_HOME; derive it from the java on PATH if unset."""
    env = dict(os.environ)
    java = shutil.which("java")
    assert shutil.which("groovy") and java, "groovy and java are needed: ./bootstrap.sh --test installs them"
    env.setdefault("JAVA_HOME", str(Path(java).resolve().parents[1]))
    return env


def outline(jenkinsfile: Path) -> list[tuple[int, list[str]]]:
    proc = subprocess.run(
        ["groovy", str(OUTLINE_SCRIPT), str(jenkinsfile)],
        env=_groovy_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise SyntaxError(proc.stderr.strip() or proc.stdout.strip())
    lines = []
    for line in proc.stdout.splitlines():
        stripped = line.lstrip(" ")
        lines.append(((len(line) - len(stripped)) // 2, stripped.split("\t")))
    return lines


def children(lines, index):
    """The lines nested (at any depth) under line ``index``."""
    depth = lines[index][0]
    nested = []
    for item in lines[index + 1 :]:
        if item[0] <= depth:
            break
        nested.append(item)
    return nested


def find(lines, *words):
    """Indices of calls whose name and first arguments are ``words``."""
    return [i for i, (_, call) in enumerate(lines) if call[: len(words)] == list(words)]


@pytest.fixture(scope="module")
def jenkins():
    return outline(REPO / "Jenkinsfile")


def test_it_is_a_declarative_pipeline(jenkins):
    assert jenkins[0] == (0, ["pipeline"])
    top = [call[0] for depth, call in jenkins if depth == 1]
    assert top[:1] == ["agent"] and "stages" in top


def test_matrix_covers_every_guest_os_row_and_every_shard(jenkins):
    (matrix,) = find(jenkins, "matrix")
    inside = children(jenkins, matrix)
    axes = {call[1]: call for _, call in inside if call[0] == "name"}
    values = [call[1:] for _, call in inside if call[0] == "values"]
    assert set(axes) == {"GUEST_OS", "SHARD"}
    rows = {d["iofuzz_guest"] for d in TestCatalog().variants("iofuzz", expand_all=True)}
    guest_values, shard_values = values
    assert set(guest_values) == rows == {"busybox", "debian", "image"}
    (shard_count,) = [call[2] for _, call in jenkins if call[:2] == ["=", "SHARD_COUNT"]]
    assert shard_values == [str(k) for k in range(1, int(shard_count) + 1)]


def test_each_cell_runs_avocado_with_xunit_and_publishes_results(jenkins):
    (matrix,) = find(jenkins, "matrix")
    inside = children(jenkins, matrix)
    scripts = [arg for _, call in inside if call[0] == "sh" for arg in call[1:]]
    run = next(s for s in scripts if "avocado run" in s)
    for option in (
        "--xunit '$env.RESULTS/xunit-$cell.xml'",
        "--job-results-dir",
        "iofuzz.$params.FUZZ_SIZE.$env.GUEST_OS",
    ):
        assert option in run, option
    # the params are built in Groovy code (a list), not in a step's arguments
    text = (REPO / "Jenkinsfile").read_text()
    assert '"iofuzz_shard=${env.SHARD}/${env.SHARD_COUNT}"' in text and "--vt-extra-params" in text
    published = {call[0]: call[1:] for _, call in inside}
    assert any(arg.startswith("testResults=") and "xunit" in arg for arg in published["junit"])
    assert any(arg.startswith("artifacts=") for arg in published["archiveArtifacts"])


def test_last_stage_merges_the_shards(jenkins):
    (merge,) = find(jenkins, "stage", "Merge shards")
    assert any("iofuzz-merge" in arg for _, call in children(jenkins, merge) for arg in call)


def test_a_broken_jenkinsfile_is_rejected(tmp_path):
    broken = tmp_path / "Jenkinsfile"
    broken.write_text((REPO / "Jenkinsfile").read_text().rstrip()[:-1])  # the last } is missing
    with pytest.raises(SyntaxError, match="startup failed"):
        outline(broken)
