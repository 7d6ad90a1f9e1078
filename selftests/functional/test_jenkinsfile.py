"""The Jenkinsfile parses as Groovy, has the shape the users' Jenkins needs, and its own code works.

No Jenkins runs here: Debian's Groovy compiler parses the file (syntax and
AST, see data/jenkinsfile_outline.groovy) and prints its outline, which the
shape checks read. The Jenkinsfile's functions that use no Jenkins step run
under Groovy (data/jenkinsfile_functions.groovy), and the shell script a cell
runs is run by sh in a workspace of its own, with a real avocado job.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from xml.etree import ElementTree

import pytest
from avocado_jobs import avocado_env

from avocado_iofuzz.vt.catalog import TestCatalog

REPO = Path(__file__).resolve().parents[2]
OUTLINE_SCRIPT = Path(__file__).with_name("data") / "jenkinsfile_outline.groovy"
FUNCTIONS_SCRIPT = Path(__file__).with_name("data") / "jenkinsfile_functions.groovy"


def _groovy_env() -> dict[str, str]:
    """Debian's groovy wants JAVA_HOME; derive it from the java on PATH if unset."""
    env = dict(os.environ)
    java = shutil.which("java")
    assert shutil.which("groovy") and java, "groovy and java are needed: ./bootstrap.sh --test installs them"
    env.setdefault("JAVA_HOME", str(Path(java).resolve().parents[1]))
    return env


def call_functions(*calls: tuple[str, list], jenkinsfile: Path = REPO / "Jenkinsfile") -> list:
    """Run functions of the Jenkinsfile with Groovy (one JVM for all calls); their values, or the error texts."""
    calls_file = Path(tempfile.mkdtemp()) / "calls.json"
    calls_file.write_text(json.dumps([list(call) for call in calls]))
    try:
        proc = subprocess.run(
            ["groovy", str(FUNCTIONS_SCRIPT), str(jenkinsfile), str(calls_file)],
            env=_groovy_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(calls_file.parent)
    assert proc.returncode == 0, proc.stderr
    return [answer.get("value", answer.get("error")) for answer in json.loads(proc.stdout)]


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


def test_each_cell_runs_the_cell_script_and_publishes_results(jenkins):
    (matrix,) = find(jenkins, "matrix")
    inside = children(jenkins, matrix)
    calls = [call for _, call in inside]
    assert ["sh", "returnStatus=true", "script=this.cellScript()"] in calls
    # the params a cell sets, then the user's, one per line, into the file the script reads
    assert ["cellParams", "env.CAMPAIGN_SEED", "env.SHARD", "env.SHARD_COUNT", "env.GUEST_OS", "params.IMAGE"] in calls
    assert ["extraParamLines", "params.EXTRA_PARAMS"] in calls
    assert ["references", "params.FUZZ_SIZE", "env.GUEST_OS", "params.ROWS"] in calls
    assert any(call[0] == "writeFile" and "file=paramsFile" in call for call in calls)
    published = {call[0]: call[1:] for call in calls}
    assert any(arg.startswith("testResults=") and "xunit" in arg for arg in published["junit"])
    assert any(arg.startswith("artifacts=") for arg in published["archiveArtifacts"])


def test_parameters_take_multi_line_params_rows_credentials_and_a_cell_timeout(jenkins):
    (block,) = find(jenkins, "parameters")
    declared = {call[1].removeprefix("name="): call[0] for _, call in children(jenkins, block)}
    assert declared["EXTRA_PARAMS"] == "text"  # one param per line: values keep their spaces
    assert {"ROWS", "IMAGE_PASSWORD_CREDENTIALS", "CELL_TIMEOUT_MINUTES"} <= set(declared)


def test_a_job_timeout_and_a_cell_timeout(jenkins):
    (block,) = find(jenkins, "options")
    assert ["timeout", "time=6", "unit=HOURS"] in [call for _, call in children(jenkins, block)]
    (matrix,) = find(jenkins, "matrix")
    inside = [call for _, call in children(jenkins, matrix)]
    assert ["cellMinutes", "params.CELL_TIMEOUT_MINUTES"] in inside
    assert ["timeout", "time=(minutes + 15)", "unit=MINUTES"] in inside  # the backstop around the cell


def test_image_cells_without_an_image_take_no_agent(jenkins):
    (matrix,) = find(jenkins, "matrix")
    depth = jenkins[matrix][0]
    (when,) = [i for i, (d, call) in enumerate(jenkins) if d == depth + 1 and call[0] == "when" and i > matrix]
    assert ["beforeAgent", "true"] in [call for _, call in children(jenkins, when)]


def test_exit_status_decides_the_cell_result(jenkins):
    (matrix,) = find(jenkins, "matrix")
    inside = [call for _, call in children(jenkins, matrix)]
    assert ["avocadoOutcome", "status"] in inside
    assert ["unstable", "cell $cell: $outcome.message"] in inside
    assert ["catchError", "buildResult=FAILURE", "stageResult=FAILURE"] in inside


def test_the_image_password_comes_from_a_secret_file_credential(jenkins):
    (function,) = find(jenkins, "def", "withPasswordFile")
    body = [call for _, call in children(jenkins, function)]
    assert ["file", "credentialsId=id", "variable=IOFUZZ_PASSWORD_FILE"] in body
    assert "iofuzz_password_file=$IOFUZZ_PASSWORD_FILE" in call_functions(("cellScript", []))[0]


def test_last_stage_merges_the_shards(jenkins):
    (merge,) = find(jenkins, "stage", "Merge shards")
    assert any("iofuzz-merge" in arg for _, call in children(jenkins, merge) for arg in call)


def test_a_broken_jenkinsfile_is_rejected(tmp_path):
    broken = tmp_path / "Jenkinsfile"
    broken.write_text((REPO / "Jenkinsfile").read_text().rstrip()[:-1])  # the last } is missing
    with pytest.raises(SyntaxError, match="startup failed"):
        outline(broken)


def test_extra_params_are_one_per_line_and_keep_their_spaces():
    text = "extra_params=-device e1000,romfile=\n\n  # a comment\nonly_devices=timer1, dma page reg\r\nlast=x"
    (lines,) = call_functions(("extraParamLines", [text]))
    assert lines == ["extra_params=-device e1000,romfile=", "only_devices=timer1, dma page reg", "last=x"]
    assert call_functions(("extraParamLines", [None])) == [[]]


@pytest.mark.parametrize(
    ("status", "result", "words"),
    [
        (0, "SUCCESS", "status 0"),
        (1, "UNSTABLE", "tests failed or errored"),
        (2, "FAILURE", "job failed (no tests found"),
        (3, "FAILURE", "tests failed or errored, job failed"),
        (4, "FAILURE", "avocado failed (crash)"),
        (8, "FAILURE", "job interrupted"),
        (9, "FAILURE", "tests failed or errored, job interrupted"),
        (124, "FAILURE", "ran out of CELL_TIMEOUT_MINUTES"),
        (137, "FAILURE", "killed by signal 9"),
        (64, "FAILURE", "not an avocado exit status"),
    ],
)
def test_avocado_exit_status_bits_map_to_a_build_result(status, result, words):
    (outcome,) = call_functions(("avocadoOutcome", [status]))
    assert outcome["result"] == result and words in outcome["message"], outcome


def test_rows_references_cell_params_and_minutes():
    answers = call_functions(
        ("references", ["quick", "busybox", ""]),
        ("references", ["long", "image", " nic.e1000  storage.nvme.q35 "]),
        ("references", ["quick", "busybox", "nic;reboot"]),
        ("cellParams", ["7", "2", "2", "image", " /disks/my disk.img "]),
        ("cellParams", ["7", "1", "2", "busybox", ""]),
        ("cellMinutes", ["45"]),
        ("cellMinutes", ["1.5"]),
    )
    assert answers == [
        ["iofuzz.quick.busybox"],
        ["iofuzz.long.image.nic.e1000", "iofuzz.long.image.storage.nvme.q35"],
        "ROWS: 'nic;reboot' is not a cartesian filter (names joined by dots)",
        ["fuzz_seed=7", "iofuzz_shard=2/2", "iofuzz_image=/disks/my disk.img"],
        ["fuzz_seed=7", "iofuzz_shard=1/2"],
        45,
        "CELL_TIMEOUT_MINUTES: '1.5' is not a whole number of minutes",
    ]


def run_cell_script(workspace: Path, cell: str, references: list[str], lines: list[str], **env: str):
    """Run the cell's shell script as Jenkins' sh step would (sh -xe on a file), in a workspace of its own."""
    (script,) = call_functions(("cellScript", []))
    (workspace / ".venv").symlink_to(Path(sys.executable).parents[1])  # the workspace's bootstrap venv
    params_file = workspace / "results" / f"params-{cell}.txt"
    params_file.parent.mkdir(parents=True)
    params_file.write_text("".join(f"{line}\n" for line in lines))
    (workspace / "script.sh").write_text(script)
    cell_env = (
        avocado_env()
        | env
        | {
            "RESULTS": "results",
            "CELL": cell,
            "PARAMS_FILE": str(params_file.relative_to(workspace)),
            "REFERENCES": " ".join(references),
            "CELL_TIMEOUT": "10m",
        }
    )
    proc = subprocess.run(
        ["sh", "-xe", "script.sh"], cwd=workspace, env=cell_env, capture_output=True, text=True, timeout=600
    )
    (outcome,) = call_functions(("avocadoOutcome", [proc.returncode]))
    return proc, outcome


def test_cell_script_gives_avocado_each_param_whole(tmp_path):
    """A real avocado job: the image row whose image path has spaces and a comma, and values with quotes and $."""
    image = tmp_path / "my disk, v2.img"  # missing on purpose: the test names it and ends before booting
    password_file = tmp_path / "pw"
    password_file.write_text("secret-not-looked-at\n")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    lines = call_functions(
        ("cellParams", ["5", "1", "2", "image", str(image)]),
        ("extraParamLines", ["only_devices=timer1, dma page reg\niofuzz_kernel_params=console=ttyS0 x='$HOME'\n"]),
    )
    proc, outcome = run_cell_script(
        workspace, "image-1", ["iofuzz.quick.image"], lines[0] + lines[1], IOFUZZ_PASSWORD_FILE=str(password_file)
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and outcome["result"] == "UNSTABLE", output
    assert "(1/1) iofuzz.quick.image: STARTED" in output  # avocado's progress reaches the cell's console
    (job,) = (workspace / "results" / "image-1").glob("job-*")
    test = json.loads((job / "results.json").read_text())["tests"][0]
    assert test["fail_reason"] == f"param iofuzz_image = {str(image)!r}: no such file"
    dump = next(job.glob("test-results/*/debug.log")).read_text()
    for param in (
        "only_devices = timer1, dma page reg",
        "iofuzz_kernel_params = console=ttyS0 x='$HOME'",
        f"iofuzz_password_file = {password_file}",
        "iofuzz_shard = 1/2",
    ):
        assert f"|     {param}\n" in dump, param
    suite = ElementTree.parse(workspace / "results" / "xunit-image-1.xml").getroot()
    assert suite.get("name") == "image-1"  # shards publish under names of their own


def test_no_tests_found_fails_the_cell(tmp_path):
    proc, outcome = run_cell_script(tmp_path, "busybox-2", ["iofuzz.quick.busybox.no_such_row"], ["fuzz_seed=1"])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert outcome["result"] == "FAILURE" and "job failed (no tests found" in outcome["message"]
