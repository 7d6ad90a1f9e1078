"""`avocado replay JOB` fuzzes with the seed the job drew, not with a new one.

The resolver draws an empty ``fuzz_seed`` and a job pre plugin records it in
the job config; replay resolves again from that config. Before, the test drew
the seed at run time and every replay fuzzed other ops.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from avocado_jobs import AVOCADO, JobResult, avocado_env, run_avocado

from avocado_iofuzz.vt.seeds import SEEDS_CONFIG_KEY


def _replay(job_dir: Path, results: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AVOCADO), "replay", str(job_dir), *options], env=avocado_env(), cwd=results,
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def _recorded_seeds(job_dir: Path) -> dict[str, str]:
    return json.loads((job_dir / "jobdata" / "args.json").read_text()).get(SEEDS_CONFIG_KEY)


def _job_dirs(results: Path) -> list[Path]:
    return sorted(p for p in results.glob("job-*") if p.is_dir() and not p.is_symlink())


def test_a_replayed_dry_run_of_shards_resolves_the_same_seed(tmp_path):
    command = [str(AVOCADO), "run", "--dry-run", "--dry-run-no-cleanup", "--disable-sysinfo",
               "--job-results-dir", str(tmp_path), "iofuzz.quick", "--vt-extra-params", "iofuzz_shards=2"]  # fmt: skip
    proc = subprocess.run(command, env=avocado_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (first,) = _job_dirs(tmp_path)
    seeds = _recorded_seeds(first)
    assert list(seeds) == ["iofuzz.quick"] and seeds["iofuzz.quick"].isdigit()  # both shards: one campaign seed
    proc = _replay(first, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    replayed = [d for d in _job_dirs(tmp_path) if d != first]
    assert len(replayed) == 1 and _recorded_seeds(replayed[0]) == seeds


@pytest.mark.guest
def test_replay_fuzzes_with_the_seed_of_the_replayed_job(tmp_path):
    job = run_avocado("iofuzz.quick", tmp_path, {"fuzz_count": "1"})
    assert [t["status"] for t in job.tests] == ["PASS"], job.output
    seed = job.data_file("seed").read_text().strip()
    assert _recorded_seeds(job.job_dir) == {"iofuzz.quick": seed}
    proc = _replay(job.job_dir, tmp_path)
    (replayed_dir,) = [d for d in _job_dirs(tmp_path) if d != job.job_dir]
    results = json.loads((replayed_dir / "results.json").read_text())
    replayed = JobResult(proc.returncode, proc.stdout + proc.stderr, results, replayed_dir)
    assert [t["status"] for t in replayed.tests] == ["PASS"], replayed.output
    assert replayed.data_file("seed").read_text().strip() == seed
    log = (replayed.test_dir() / "debug.log").read_text()
    assert f"fuzz_seed = {seed} (rerun with --vt-extra-params fuzz_seed={seed})" in log
