"""Job-level avocado plugins: one merged iofuzz summary per job, and tidying up.

``IofuzzJobSummary`` (a result plugin) runs when the job's results are
rendered: if any test of the job left an iofuzz ``summary.json``, it merges
them into ``<job dir>/iofuzz/summary.json`` with one coverage picture, so the
shards of a campaign read as one. ``IofuzzEnvCleanup`` (a job post plugin)
removes the private avocado-vt env files our resolver gave each test.
``IofuzzSeedRecord`` (a job pre plugin) puts the seeds the resolver drew into
the job config avocado records, for ``avocado replay`` (see ``seeds.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from avocado.core.plugin_interfaces import JobPost, JobPre, Result

from avocado_iofuzz.results.merge import MERGED_DIR, merge_files
from avocado_iofuzz.results.report import SUMMARY_NAME
from avocado_iofuzz.vt.catalog import IOFUZZ_TYPE
from avocado_iofuzz.vt.env import remove_private_env
from avocado_iofuzz.vt.seeds import SEEDS_CONFIG_KEY, resolved_seeds

LOG = logging.getLogger("avocado.app")


def _runnable_params(job: Any) -> list[dict[str, Any]]:
    # every kind: --dry-run turns our avocado-vt runnables into "dry-run" ones, params intact
    return [
        getattr(runnable, "kwargs", None) or {}
        for suite in getattr(job, "test_suites", None) or []
        for runnable in getattr(suite, "tests", None) or []
    ]


def _test_summaries(result: Any, job_logdir: Path) -> list[Path]:
    found = []
    for test in result.tests:
        logdir = Path(str(test.get("logdir", "")))
        if not logdir.is_absolute():
            logdir = job_logdir / "test-results" / logdir
        candidate = logdir / "data" / SUMMARY_NAME
        if candidate.is_file():
            found.append(candidate)
    return found


class IofuzzJobSummary(Result):
    name = "iofuzz"
    description = "Merges the iofuzz summaries of a job's tests (shards) into <job dir>/iofuzz/"

    def render(self, result: Any, job: Any) -> None:
        summaries = _test_summaries(result, Path(job.logdir))
        if not summaries:
            return
        try:
            merged = merge_files(summaries, Path(job.logdir) / MERGED_DIR, relative_to=Path(job.logdir))
        except Exception as err:  # a merge problem must not hide the job's own results
            LOG.warning("iofuzz: could not merge %d summaries: %s", len(summaries), err)
            return
        LOG.info("IOFUZZ    : %s (%d tests merged)", merged, len(summaries))


class IofuzzEnvCleanup(JobPost):
    name = "iofuzz-env-cleanup"
    description = "Removes the per-test avocado-vt env files of avocado-iofuzz tests"

    def post(self, job: Any) -> None:
        # Only a persistent vt.common.tmp_dir outlives the test processes:
        # by default each test process has a tmp dir of its own, gone with it.
        tmp_dir = (job.config or {}).get("vt.common.tmp_dir") or ""
        if not tmp_dir:
            return
        for suite in getattr(job, "test_suites", None) or []:
            for runnable in getattr(suite, "tests", None) or []:
                if getattr(runnable, "kind", "") == "avocado-vt":
                    remove_private_env(runnable.kwargs, tmp_dir)


class IofuzzSeedRecord(JobPre):
    name = "iofuzz-seeds"
    description = "Records the fuzz seeds drawn at resolution in the job config, so avocado replay reuses them"

    def pre(self, job: Any) -> None:
        # Job.run() calls the pre plugins before it writes the job config to the results dir
        seeds = resolved_seeds(_runnable_params(job), IOFUZZ_TYPE)
        if seeds and job.config is not None:
            job.config[SEEDS_CONFIG_KEY] = seeds
