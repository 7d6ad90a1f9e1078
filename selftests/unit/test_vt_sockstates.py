"""The sockstates VT test's params, its reading of the CLI's output, and its table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avocado_iofuzz.vt.catalog import TestCatalog
from avocado_iofuzz.vt.params import ParamError
from avocado_iofuzz.vt.sockstates_params import SockstatesParams
from avocado_iofuzz.vt.sockstates_report import build_report, criu_rows, parse_cli_output, read_results, summary_lines


def test_defaults_come_from_the_cfg_and_make_a_cli_line() -> None:
    (params,) = TestCatalog().variants("sockstates.quick", extra_params=["iofuzz_shard=2/3"])
    settings = SockstatesParams.from_params(params)
    assert (settings.mode, settings.depth, settings.types, settings.where) == ("criu", 2, ("dgram",), "guest")
    assert settings.command("sockstates", "/tmp/out") == (
        "sockstates --criu --depth 2 --types dgram --names abstract --max-sockets 3 --max-queue 1 "
        "--shard 2/3 --out /tmp/out"
    )


def test_a_state_is_given_in_its_canonical_spelling() -> None:
    settings = SockstatesParams.from_params({"sockstates_state": "DA-C2-M2_DA-C1", "sockstates_mode": "run"})
    assert settings.cli_args("/o")[-2:] == ["--state", "DA-C2_DA-C1-M1"]


def test_the_inet_variants_sweep_tcp_and_udp_and_shard_like_the_unix_ones() -> None:
    (params,) = TestCatalog().variants("sockstates.inet.quick", extra_params=["iofuzz_shard=1/2"])
    settings = SockstatesParams.from_params(params)
    assert (settings.mode, settings.depth, settings.types) == ("criu", 2, ("tcp", "udp"))
    assert "--types tcp,udp" in settings.command("sockstates", "/o") and "--shard 1/2" in settings.command("s", "/o")
    from avocado_iofuzz.model.shards import expand_shards

    dicts = expand_shards(TestCatalog().variants("sockstates.inet.quick", extra_params=["iofuzz_shards=2"]))
    assert [d["shortname"] for d in dicts] == [f"sockstates.inet.quick.debian.shard{k}of2" for k in (1, 2)]
    # the unix variants are what they were
    (unix,) = TestCatalog().variants("sockstates.quick")
    assert SockstatesParams.from_params(unix).types == ("dgram",)
    state = SockstatesParams.from_params({"sockstates_state": "T~:e.TW_T:1.LI", "sockstates_mode": "run"})
    assert state.cli_args("/o")[-2:] == ["--state", "T:1.LI_T~:e.TW"]


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("sockstates_mode", "dump", "sockstates_mode = 'dump'"),
        ("sockstates_depth", "deep", "sockstates_depth = 'deep': not an integer"),
        ("sockstates_depth", "99", "between 0 and 12"),
        ("sockstates_types", "stream,raw", "raw is not one"),
        ("sockstates_names", "", None),  # empty: the default
        ("sockstates_where", "cloud", "sockstates_where"),
        ("sockstates_timeout", "-5", "sockstates_timeout = '-5': must be > 0"),
        ("sockstates_failure_status", "maybe", "sockstates_failure_status"),
        ("sockstates_state", "ZZ", "sockstates_state = 'ZZ'"),
        ("iofuzz_shard", "5/4", "iofuzz_shard"),
    ],
)
def test_bad_params_are_named(key: str, value: str, says: str | None) -> None:
    if says is None:
        assert SockstatesParams.from_params({key: value}).names == ("abstract",)
        return
    with pytest.raises(ParamError, match=says.replace("(", r"\(")):
        SockstatesParams.from_params({key: value})


def test_every_sockstates_variant_runs_in_the_debian_guest() -> None:
    variants = TestCatalog().variants("sockstates", expand_all=True)
    assert {d["sockstates_mode"] for d in variants} == {"gen", "run", "criu"}
    assert {d["iofuzz_guest"] for d in variants} == {"debian"}


RUN_OUTPUT = """empty
    => kernel agrees
DA
    socket(D) = 1
    => kernel agrees
DA-CX
    socketpair(D) = 1, 2
    close(1)
    => MODEL BUG: kernel says DA
       step 2 close(1): kernel said EBADF, model expected success
       note: something
DB@1
    socket(D) = 1
    bind(1, @1)
    => ERROR: child did not finish within 10 s
run: 4 states, 2 match, 1 model bugs, 1 errors in 0.3 s
"""


def test_run_output_becomes_rows() -> None:
    rows = parse_cli_output(RUN_OUTPUT, "run")
    assert [(r["description"], r["verdict"], r["depth"]) for r in rows] == [
        ("empty", "match", 0), ("DA", "match", 1), ("DA-CX", "mismatch", 2), ("DB@1", "error", 2)]
    assert rows[2]["reasons"] == ["MODEL BUG: kernel says DA", "step 2 close(1): kernel said EBADF, model expected "
                                  "success", "note: something"]
    assert rows[2]["syscalls"] == ["socketpair(D) = 1, 2", "close(1)"]


def test_gen_output_lists_states() -> None:
    rows = parse_cli_output("empty\nDA\n    socket(D) = 1\n# depth 1: 1 states\n", "gen")
    assert [(r["description"], r["verdict"], r["syscalls"]) for r in rows] == [
        ("empty", "listed", []), ("DA", "listed", ["socket(D) = 1"])]


def record(index: int, description: str, verdict: str, **extra) -> dict:
    return {"index": index, "description": description, "depth": 1, "syscalls": ["socket(D) = 1"],
            "verdict": verdict, "stage": extra.pop("stage", None), "reasons": extra.pop("reasons", []),
            "seconds": 1.0, **extra}


def test_criu_results_become_a_table_with_groups_and_local_reproducers(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    lines = [
        json.dumps(record(0, "empty", "intact")),
        json.dumps(record(10, "DA-CX", "failed", stage="verify", reasons=["restored as DA, was DA-CX"],
                          before=["DA-CX"], after=["DA"], reproducer="/tmp/sockstates-run/out/repro/00010-DA-CX.py",
                          commands=["criu dump ..."], log_lines=["dump.log: ok"])),
        '{"index": 11, "descr',  # the sweep was cut while writing
    ]
    results.write_text("\n".join(lines))
    rows = criu_rows(read_results(results), repro_root=tmp_path / "repro")
    assert [r["verdict"] for r in rows] == ["intact", "failed"]
    assert rows[1]["reproducer"] == str(tmp_path / "repro" / "00010-DA-CX.py")
    assert rows[1]["group"] == "restored differently: peer gone (-CX) lost" and "group" not in rows[0]
    report = build_report("criu", "guest", {"depth": 2}, rows, {"line": "criu: 2 states"})
    assert report["counts"] == {"failed": 1, "intact": 1} and report["states"] == 2
    assert report["groups"] == [{"group": "restored differently: peer gone (-CX) lost", "states": 1,
                                 "examples": ["DA-CX"]}]
    text = "\n".join(summary_lines(report))
    assert "sockstates --criu (guest): 2 states: 1 failed, 1 intact" in text
    assert "DA-CX" in text and "restored as DA, was DA-CX" in text and "00010-DA-CX.py" in text
    assert "criu: 2 states" in text


def test_shards_of_the_test_split_the_sweep() -> None:
    from avocado_iofuzz.model.shards import expand_shards

    dicts = expand_shards(TestCatalog().variants("sockstates.quick", extra_params=["iofuzz_shards=3"]))
    assert [d["shortname"] for d in dicts] == [f"sockstates.quick.debian.shard{k}of3" for k in (1, 2, 3)]
    lines = [SockstatesParams.from_params(d).cli_args("/o") for d in dicts]
    assert [args[args.index("--shard") + 1] for args in lines] == ["1/3", "2/3", "3/3"]


class Ended(Exception):
    """What a fake avocado test raises where the real one would end the test."""


class FakeTest:
    def fail(self, message: str) -> None:
        raise Ended("FAIL", message)

    def error(self, message: str) -> None:
        raise Ended("ERROR", message)


def verdict_of(mode: str, counts: dict[str, int], failure_status: str = "fail", exit_status: int = 0) -> str:
    from avocado.core import exceptions

    from avocado_iofuzz.vt.sockstates_test import _verdict

    settings = SockstatesParams.from_params({"sockstates_mode": mode, "sockstates_failure_status": failure_status})
    report = {"counts": counts, "states": sum(counts.values()), "exit_status": exit_status}
    try:
        _verdict(FakeTest(), settings, report)
    except Ended as end:
        return end.args[0]
    except exceptions.TestWarn:
        return "WARN"
    return "PASS"


def test_the_verdict_follows_the_table() -> None:
    assert verdict_of("criu", {"intact": 3}) == "PASS"
    assert verdict_of("criu", {"intact": 2, "failed": 1}, exit_status=1) == "FAIL"
    assert verdict_of("criu", {"intact": 2, "failed": 1}, "warn", exit_status=1) == "WARN"
    assert verdict_of("criu", {"intact": 2, "failed": 1}, "pass", exit_status=1) == "PASS"
    assert verdict_of("criu", {"intact": 2, "error": 1}, exit_status=1) == "ERROR"
    assert verdict_of("criu", {"failed": 1, "error": 1}, exit_status=1) == "FAIL"  # findings first
    assert verdict_of("run", {"match": 3, "mismatch": 1}, exit_status=1) == "FAIL"
    assert verdict_of("gen", {"listed": 5}) == "PASS"
    assert verdict_of("gen", {}) == "ERROR"  # nothing reported
    assert verdict_of("criu", {"intact": 1}, exit_status=2) == "ERROR"  # the CLI could not start (no root, no criu)
