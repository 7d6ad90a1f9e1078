"""`--criu` pieces that need no CRIU: command outcomes, log excerpts, checks, shards, reproducers, groups.

CRIU itself is stood in for by small shell scripts (real processes that exit,
fail or die of a signal as CRIU would); the functional tests run the real one.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sockstates import criu, criu_repro, criu_target, findings, probe, shard


def fake_criu(tmp_path: Path, body: str) -> str:
    script = tmp_path / "criu"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_criu_outcomes_tell_a_refusal_from_a_death(tmp_path: Path) -> None:
    refuses = fake_criu(tmp_path, "echo 'Error (criu/sk-unix.c:1): cannot' >&2; exit 1")
    assert criu._run_criu([refuses, "dump"], 10) == ("failed", "criu dump exited with status 1: "
                                                      "Error (criu/sk-unix.c:1): cannot")
    dies = fake_criu(tmp_path, "kill -9 $$")
    status, why = criu._run_criu([dies, "dump"], 10)
    assert status == "killed" and "signal 9" in why
    hangs = fake_criu(tmp_path, "exec sleep 30")
    status, why = criu._run_criu([hangs, "restore"], 0.3)
    assert status == "killed" and "within" in why
    assert criu._run_criu([str(tmp_path / "missing"), "dump"], 10)[0] == "killed"
    assert criu._run_criu([fake_criu(tmp_path, "exit 0"), "dump"], 10) == ("ok", "")


def test_criu_version_is_read_or_refused(tmp_path: Path) -> None:
    assert criu.criu_version(fake_criu(tmp_path, "echo 'Version: 3.17.1'")) == (3, 17, 1)
    assert criu.criu_version(fake_criu(tmp_path, "echo 'Version: 4.1'; echo 'GitID: v4.1'")) == (4, 1)
    with pytest.raises(criu.CriuSetupError, match="no version"):
        criu.criu_version(fake_criu(tmp_path, "echo hello"))
    with pytest.raises(criu.CriuSetupError, match="cannot run"):
        criu.criu_version(str(tmp_path / "nowhere"))


def test_log_excerpt_keeps_errors_and_what_led_to_the_first(tmp_path: Path) -> None:
    lines = [f"(00.{i:02d}) step {i}" for i in range(30)]
    lines[20] = "(00.20) Error (criu/sk-unix.c:842): unix: Can't dump socket"
    lines[25] = "(00.25) Warn  (criu/x.c:1): something odd"
    lines[27] = "(00.27) Error (criu/cr-dump.c:2053): Dumping FAILED."
    log = tmp_path / "dump.log"
    log.write_text("\n".join(lines))
    excerpt = criu.log_excerpt(log)
    assert excerpt[0] == "dump.log: (00.14) step 14"  # context before the first error
    assert "dump.log: " + lines[20] in excerpt and "dump.log: " + lines[25] in excerpt
    assert excerpt[-1] == "dump.log: " + lines[27]
    assert "dump.log: (00.05) step 5" not in excerpt
    assert criu.log_excerpt(tmp_path / "absent.log") == [f"(no log at {tmp_path / 'absent.log'})"]


def test_a_clean_log_gives_its_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "restore.log"
    log.write_text("a\nb\nc\nRestore finished successfully.\n")
    assert criu.log_excerpt(log) == ["restore.log: b", "restore.log: c", "restore.log: Restore finished successfully."]


def test_shards_split_the_states_round_robin_without_overlap() -> None:
    items = list(range(10))
    parts = [[p for p, _ in shard.take(items, k, 3)] for k in (1, 2, 3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(p for part in parts for p in part) == items
    assert shard.parse_shard("") == (1, 1) and shard.parse_shard(" 2 / 4 ") == (2, 4)
    for bad in ("0/3", "4/3", "x/3", "3"):
        with pytest.raises(shard.ShardError, match="shard"):
            shard.parse_shard(bad)


def message(sender_ino: int, serial: int) -> bytes:
    return probe.PAYLOAD.pack(sender_ino, serial)


def test_messages_must_come_back_unchanged_in_order_and_once() -> None:
    sends = {1: {"payload": message(10, 1).hex(), "delivered": True, "passes": None},
             2: {"payload": message(10, 2).hex(), "delivered": True, "passes": None},
             3: {"payload": message(11, 3).hex(), "delivered": False, "passes": None}}
    good = SimpleNamespace(raw={20: [(message(10, 1), None), (message(10, 2), None)]})
    assert criu_target.check_messages(good, sends) == []
    swapped = SimpleNamespace(raw={20: [(message(10, 2), None), (message(10, 1), None)]})
    assert any("after message 2" in p for p in criu_target.check_messages(swapped, sends))
    twice = SimpleNamespace(raw={20: [(message(10, 1), None)], 21: [(message(10, 1), None)]})
    assert any("twice" in p for p in criu_target.check_messages(twice, sends))
    altered = SimpleNamespace(raw={20: [(message(99, 1), None)]})
    assert any(f"is {message(99, 1).hex()}, was" in p for p in criu_target.check_messages(altered, sends))
    never_sent = SimpleNamespace(raw={20: [(message(11, 3), None)], 21: [(b"short", None)]})
    problems = criu_target.check_messages(never_sent, sends)
    assert len(problems) == 2 and "does not match any message sent" in problems[0] and "5 bytes" in problems[1]


def test_senders_are_renamed_to_the_restored_inodes() -> None:
    # before the dump: handle 1 was inode 100, handle 2 inode 200 (passed in flight by message 2)
    before = {"inodes": {1: 100, 2: 200}, "sends": {1: {"passes": None}, 2: {"passes": 2}}}
    reader = SimpleNamespace(
        raw={500: [(message(100, 1), None), (message(200, 2), 700)]},
        queues={500: [(100, None), (200, 700)]},
    )
    criu_target.translate_senders(reader, before, now_by_handle={1: 501})
    assert reader.queues[500] == [(501, None), (700, 700)]


def test_the_reproducer_is_a_standalone_python_script(tmp_path: Path) -> None:
    result = criu.StateResult(7, "DA-CX", 2, ["socketpair(D) = 1, 2", "close(1)"], verdict="failed",
                              stage="verify", reasons=["restored as DA, was DA-CX"])
    path = criu_repro.write_reproducer(tmp_path, result, criu.CriuConfig())
    text = path.read_text()
    compile(text, str(path), "exec")
    assert path.name.startswith("00007-DA-CX") and os.access(path, os.X_OK)
    assert "sockstates" not in text.split('"""', 2)[2].split("SYSCALLS")[0]  # imports nothing of ours
    assert "'op': 'socketpair'" in text and "'op': 'close'" in text and "restored as DA, was DA-CX" in text


def test_the_reproducers_reference_run_performs_the_sequence(tmp_path: Path) -> None:
    """Its --reference mode runs anywhere a network namespace can be made; here only if we may."""
    result = criu.StateResult(1, "DA-C2_DA-C1-M1", 2, ["socketpair(D) = 1, 2", "send(1)"])
    path = criu_repro.write_reproducer(tmp_path, result, criu.CriuConfig())
    names = tmp_path / "names"
    names.mkdir()
    proc = subprocess.run([sys.executable, str(path), "--reference", str(names)], capture_output=True, text=True,
                          timeout=60, check=False)
    if proc.returncode != 0 and "network namespace" in proc.stderr + proc.stdout:
        pytest.skip("cannot make a network namespace here")
    report = json.loads(proc.stdout)
    assert report[0].startswith("h1 type=2") and report[1].startswith("h2 type=2")
    assert report[2] == f"h2 message 2 from h1 bytes {message(1, 2).hex()} carrying []"
    assert report[-2:] == ["h1 send: ok", "h2 send: ok"]


def test_groups_name_what_was_lost() -> None:
    assert findings.difference("DA-CX", "DA") == "peer gone (-CX) lost"
    assert findings.difference("SA", "SA") == "same features, different structure"
    lost_message = findings.difference("DA-C2_DA-C1-M1", "DA-C2_DA-C1")
    assert lost_message == "queued message (-M) lost"
    record = {"verdict": "failed", "stage": "verify", "reasons": ["restored as DA, was DA-CX"],
              "before": ["DA-CX"], "after": ["DA"], "description": "DA-CX"}
    assert findings.group(record) == "restored differently: peer gone (-CX) lost"
    refused = {"verdict": "failed", "stage": "restore", "reasons": ["criu restore exited with status 1"],
               "log_lines": ["restore.log: (00.1) Error (criu/sk-unix.c:1234): unix: Can't bind 17 to @x"],
               "description": "DB@1"}
    assert findings.group(refused) == "restore refused: criu/sk-unix.c: unix: Can't bind N to @x"
    killed = {"verdict": "error", "stage": "dump", "reasons": ["criu dump killed by signal 9: x"],
              "description": "SA"}
    assert findings.group(killed) == "error at dump: criu dump killed by signal N"
    grouped = findings.grouped([record, dict(record, description="DA-CX_DA"), refused,
                                {"verdict": "intact", "description": "DA"}])
    assert grouped[0] == ("restored differently: peer gone (-CX) lost", 2, ["DA-CX", "DA-CX_DA"])
    assert len(grouped) == 2


def test_sweep_refuses_without_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(criu.os, "geteuid", lambda: 1000)
    with pytest.raises(criu.CriuSetupError, match="root"):
        criu.sweep([], criu.CriuConfig(), tmp_path, sys.stdout)


def test_a_connected_pair_is_checked_both_ways() -> None:
    """check_reachability on real sockets: pairs deliver, a shut end is not asked to, a link that
    the kernel's table claims but that carries nothing is reported."""
    from sockstates.netlink import DiagSocket

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    c, d = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    e, f = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    d.shutdown(socket.SHUT_RD)
    everything = (a, b, c, d, e, f)
    ino = {s: os.fstat(s.fileno()).st_ino for s in everything}

    def diag(s: socket.socket, peer: socket.socket, kind: str, shut: int = 0) -> DiagSocket:
        return DiagSocket(ino[s], kind, 1, None, None, ino[peer], (), 0, shut)

    table = {ino[a]: diag(a, b, "P"), ino[b]: diag(b, a, "P"), ino[c]: diag(c, d, "D"), ino[d]: diag(d, c, "D", 1)}
    reader = SimpleNamespace(socks={ino[s]: s for s in everything})
    assert criu_target.check_reachability(reader, table) == []
    # e's messages go to f, but the table says e and b are peers: b reads nothing from e
    table = {ino[e]: diag(e, b, "S"), ino[b]: diag(b, e, "S")}
    problems = criu_target.check_reachability(reader, table)
    assert problems and all("which read" in p for p in problems)
    for s in everything:
        s.close()


def test_the_cli_shards_any_mode_round_robin(capsys: pytest.CaptureFixture[str]) -> None:
    from sockstates.__main__ import main

    def listed(*extra: str) -> list[str]:
        assert main(["--gen", "--depth", "2", "--types", "dgram", *extra]) == 0
        return [line for line in capsys.readouterr().out.splitlines() if line and not line.startswith(" ")]

    everything = listed()
    parts = [listed("--shard", f"{k}/3") for k in (1, 2, 3)]
    assert parts == [everything[0::3], everything[1::3], everything[2::3]]
    with pytest.raises(SystemExit):
        main(["--gen", "--shard", "4/3"])
    assert "K must be between 1 and N" in capsys.readouterr().err
