"""Job-level plugins: the merged summary of a job, private env files and their removal."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from avocado_iofuzz.campaign.runner import CampaignResult
from avocado_iofuzz.model.program import plan_ranges
from avocado_iofuzz.plugins.job import IofuzzEnvCleanup, IofuzzJobSummary
from avocado_iofuzz.results.report import build_summary, write_summary
from avocado_iofuzz.vt.env import PRIVATE_PREFIX, assign_private_env, remove_private_env


def _write_test_summary(job_dir: Path, logdir: str, shard: str, ranges) -> None:
    plans = plan_ranges(1, ranges, 1)
    result = CampaignResult(ops_done={p.index: p.op_count for p in plans}, ops_skipped={p.index: 0 for p in plans})
    summary = build_summary(
        seed=1, fuzz_count=1, accel="tcg", accel_reason="", plans=plans, result=result,
        trace_path=Path("t"), qemu_cmdline="", shard=shard,
    )  # fmt: skip
    data = job_dir / "test-results" / logdir / "data"
    data.mkdir(parents=True)
    write_summary(data / "summary.json", summary)


def test_job_summary_merges_the_tests_that_left_one(tmp_path):
    _write_test_summary(tmp_path, "1-a", "1/2", [(0, 7, "a")])
    _write_test_summary(tmp_path, "2-b", "2/2", [(8, 9, "b")])
    (tmp_path / "test-results" / "3-other").mkdir()
    result = SimpleNamespace(tests=[{"logdir": "1-a"}, {"logdir": str(tmp_path / "test-results" / "2-b")},
                                    {"logdir": "3-other"}])  # fmt: skip
    IofuzzJobSummary().render(result, SimpleNamespace(logdir=str(tmp_path)))
    merged = json.loads((tmp_path / "iofuzz" / "summary.json").read_text())
    assert [r["name"] for r in merged["ranges"]] == ["a", "b"]
    assert merged["merged_from"] == ["test-results/1-a/data/summary.json", "test-results/2-b/data/summary.json"]
    assert (tmp_path / "iofuzz" / "coverage.png").is_file()


def test_job_without_iofuzz_tests_gets_no_iofuzz_folder(tmp_path):
    IofuzzJobSummary().render(SimpleNamespace(tests=[{"logdir": "1-x"}]), SimpleNamespace(logdir=str(tmp_path)))
    assert not (tmp_path / "iofuzz").exists()


def test_private_env_is_assigned_once_and_only_ours_are_removed(tmp_path):
    params = {}
    assign_private_env(params)
    name = params["env"]
    assert name.startswith(PRIVATE_PREFIX)
    assign_private_env(params)
    assert params["env"] == name  # kept
    chosen = {"env": "my-env"}
    assign_private_env(chosen)
    assert chosen["env"] == "my-env"  # the user's choice stays
    (tmp_path / name).write_text("pickle")
    (tmp_path / "my-env").write_text("pickle")
    assert remove_private_env(params, str(tmp_path)) and not (tmp_path / name).exists()
    assert not remove_private_env(chosen, str(tmp_path)) and (tmp_path / "my-env").exists()
    assert not remove_private_env({"env": f"{PRIVATE_PREFIX}../../etc"}, str(tmp_path))


def test_env_cleanup_acts_only_with_a_persistent_vt_tmp_dir(tmp_path):
    params = {}
    assign_private_env(params)
    (tmp_path / params["env"]).write_text("pickle")
    runnable = SimpleNamespace(kind="avocado-vt", kwargs=params)
    job = SimpleNamespace(config={}, test_suites=[SimpleNamespace(tests=[runnable])])
    IofuzzEnvCleanup().post(job)
    assert (tmp_path / params["env"]).exists()  # per-process tmp dirs: nothing of ours to find
    job.config["vt.common.tmp_dir"] = str(tmp_path)
    IofuzzEnvCleanup().post(job)
    assert not (tmp_path / params["env"]).exists()
