"""One real sharded `avocado run`, read the way users read it: xunit, HTML, summaries, pictures.

A single job (two shards of iofuzz.quick, side by side with
``--max-parallel-tasks 2``) serves every check here, so the suite pays for
two guest boots only.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import xmlschema
from avocado_jobs import avocado_command, avocado_env, read_job
from junit_schema import fetch_jenkins_junit_xsd
from PIL import Image

from avocado_iofuzz.model.kinds import Listings, choose_targets, plan_kinds
from avocado_iofuzz.model.ranges import fuzz_targets
from avocado_iofuzz.vt.iofuzz_params import IofuzzParams, read_kinds

pytestmark = pytest.mark.guest

SEED = 4242
PROGRESS = re.compile(
    r"progress: \d+/\d+ ops \([\d.]+%\), \d+ ops/s, range \d+/\d+ .+ \(0x[0-9a-f]+-0x[0-9a-f]+\), hangs 0"
)


def _run(tmp: Path, reference: str, params: dict[str, str], *options: str):
    command = avocado_command(reference, tmp, params) + list(options)
    proc = subprocess.run(command, env=avocado_env(), cwd=tmp, capture_output=True, text=True, timeout=900)
    return read_job(proc.returncode, proc.stdout + proc.stderr, tmp)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharded")
    params = {
        "iofuzz_shards": "2",
        "fuzz_seed": str(SEED),
        # ~20 M ops: the executor runs some seconds (~4 M ops/s under TCG here),
        # long enough for progress lines to read
        "fuzz_count": "200000",
        "iofuzz_progress_interval": "0.5",
    }
    xunit, html = tmp / "xunit.xml", tmp / "report.html"
    job = _run(tmp, "iofuzz.quick", params, "--max-parallel-tasks", "2", "--xunit", str(xunit), "--html", str(html))
    return job, xunit, html


@pytest.fixture(scope="module")
def junit_schema(tmp_path_factory):
    return xmlschema.XMLSchema(str(fetch_jenkins_junit_xsd(tmp_path_factory.mktemp("xsd"))))


def test_both_shards_pass(sharded):
    job, _, _ = sharded
    assert [t["status"] for t in job.tests] == ["PASS", "PASS"], job.output
    assert sorted(t["name"] for t in job.tests) == ["iofuzz.quick.shard1of2", "iofuzz.quick.shard2of2"]


def test_each_shard_writes_summary_picture_and_whiteboard(sharded):
    job, _, _ = sharded
    for index, test in enumerate(job.tests):
        summary = job.summary(index)
        assert summary["seed"] == SEED and summary["shard"] in ("1/2", "2/2")
        assert summary["accelerator"] in ("tcg", "kvm") and summary["ops_per_s"] > 0
        assert all(r["ops_done"] == r["ops_planned"] == sum(r["ops_by_phase"].values()) for r in summary["ranges"])
        with Image.open(job.data_file("coverage.png", index)) as picture:
            assert picture.format == "PNG"
        assert test["whiteboard"].startswith(f"seed {SEED}  accel") and "hangs 0" in test["whiteboard"]


def test_shards_split_the_ranges_and_merge_into_the_whole_campaign(sharded):
    job, _, _ = sharded
    parts = [{(r["span"], r["name"]) for r in job.summary(i)["ranges"]} for i in (0, 1)]
    assert parts[0] and parts[1] and not parts[0] & parts[1]
    defaults = IofuzzParams.from_params({})
    ports = fuzz_targets(job.data_file("proc-ioports.txt").read_text(), skip_ports=defaults.skip_ports)
    # the campaign's ranges: every port range at each of pio_widths it holds, named NAME (W-byte)
    kinds = read_kinds({})
    whole = plan_kinds(SEED, 2, kinds, choose_targets(kinds, Listings(), ports))
    assert parts[0] | parts[1] == {(f"{p.start:#06x}-{p.end:#06x}", p.name) for p in whole}
    merged = json.loads((job.job_dir / "iofuzz" / "summary.json").read_text())
    assert merged["seed"] == SEED and merged["shards"] == ["1/2", "2/2"] and merged["overlaps"] == []
    assert merged["ops_done_total"] == sum(job.summary(i)["ops_done_total"] for i in (0, 1))
    assert (job.job_dir / "iofuzz" / "coverage.png").stat().st_size > 0


def test_progress_is_in_the_test_log(sharded):
    job, _, _ = sharded
    for index in (0, 1):
        log = (job.test_dir(index) / "debug.log").read_text()
        assert PROGRESS.search(log), f"no progress line in shard {index + 1}"


def test_xunit_is_valid_jenkins_junit(sharded, junit_schema):
    job, xunit, _ = sharded
    junit_schema.validate(str(xunit))
    junit_schema.validate(str(job.job_dir / "results.xml"))  # the copy avocado keeps in the job dir
    names = [case.get("name") for case in xmlschema.XMLResource(str(xunit)).root.iter("testcase")]
    assert sorted(names) == ["iofuzz.quick.shard1of2", "iofuzz.quick.shard2of2"]


def test_the_schema_check_can_fail(tmp_path, sharded, junit_schema):
    _, xunit, _ = sharded
    broken = tmp_path / "broken.xml"
    broken.write_text(re.sub(r'<testcase classname="VirtTest" name="[^"]*"', '<testcase classname="VirtTest"',
                             xunit.read_text(), count=1))  # fmt: skip
    assert not junit_schema.is_valid(str(broken))


def test_html_report_shows_the_table(sharded):
    _, _, html = sharded
    page = html.read_text()
    assert f"seed {SEED}  accel" in page and "iofuzz.quick.shard1of2" in page


def test_an_erroring_test_still_gives_valid_xunit(tmp_path, junit_schema):
    xunit = tmp_path / "xunit.xml"
    job = _run(tmp_path, "iofuzz.quick", {"fuzz_count": "lots"}, "--xunit", str(xunit))
    assert job.tests[0]["status"] == "ERROR"
    junit_schema.validate(str(xunit))
    (error,) = list(xmlschema.XMLResource(str(xunit)).root.iter("error"))
    assert "fuzz_count" in (error.get("message") or "") + (error.text or "")


def test_debian_row_is_picked_by_its_filter_and_runs(tmp_path):
    job = _run(tmp_path, "iofuzz.quick.debian", {"fuzz_seed": "5"})
    (test,) = job.tests
    assert test["name"] == "iofuzz.quick.debian" and test["status"] == "PASS", job.output
    summary = job.summary()
    assert summary["guest"] == "debian" and summary["ranges"]
    assert all(r["ops_done"] == r["ops_planned"] for r in summary["ranges"])
