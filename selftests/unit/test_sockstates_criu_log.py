"""A failed CRIU run's cause is read from its log, not taken from its first Error line.

The log lines below are those of real CRIU 4.1.1 runs on this project's host
(kernel 6.18, no CAP_SYS_RESOURCE, no iptables), trimmed to the Error lines.
"""

from __future__ import annotations

from sockstates import criu_log, findings

# logged by a C/R of a process without sockets that came back intact
CALIBRATION = [
    "(00.032569) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted",
    'Error (criu/util.c:641): execvp("iptables-restore", ...) failed: No such file or directory',
    "(00.057166)  14061: Error (criu/util.c:1722): iptables-restore -V failed",
]
# the restore of SA-C2-M2+2_S~A-C1 (a socket whose only reference is in its peer's queue)
EMPTY_LIST = [
    "(00.031935) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted",
    'Error (criu/util.c:641): execvp("iptables-restore", ...) failed: No such file or directory',
    "(00.057166)  14061: Error (criu/util.c:1722): iptables-restore -V failed",
    "(00.063208)  14061: Error (criu/files.c:243): Empty list on file desc id 0x20(5)",
    "(00.063209)  14061: Error (criu/files.c:244): BUG at criu/files.c:244",
    "(00.064205) Error (criu/cr-restore.c:1262): 14061 killed by signal 11: Segmentation fault",
    "(00.064218) Error (criu/cr-restore.c:2320): Restoring FAILED.",
]
REFUSED = [
    "(00.031935) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted",
    "(00.070001)  2201: Error (criu/sk-unix.c:1510): unix: Can't find sender for 17",
    "(00.070500) Error (criu/cr-restore.c:2320): Restoring FAILED.",
]


def test_a_bug_and_the_restorers_death_are_the_cause_whatever_comes_first() -> None:
    benign = criu_log.benign_messages(CALIBRATION)
    for known in (benign, frozenset()):  # the crash is found with or without the calibration
        cause = criu_log.fatal(EMPTY_LIST, known)
        assert cause is not None and cause.crashed
        assert cause.reason == ("BUG at criu/files.c:244 (Empty list on file desc id 0x20(5)); "
                                "a task died of signal 11 (Segmentation fault)"), known
    assert "RLIMIT" not in cause.reason
    # grouping blanks ids but keeps the assertion's place and the signal
    assert cause.group() == ("BUG at criu/files.c:244 (Empty list on file desc id N(N)); "
                             "a task died of signal 11 (Segmentation fault)")


def test_errors_a_successful_run_logs_too_are_no_cause() -> None:
    benign = criu_log.benign_messages(CALIBRATION)
    assert "criu/util.c: rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted" in benign
    cause = criu_log.fatal(REFUSED, benign)
    assert cause is not None and not cause.crashed
    assert cause.reason == "criu/sk-unix.c: unix: Can't find sender for 17"
    assert cause.group() == "criu/sk-unix.c: unix: Can't find sender for N"
    # without the calibration the first error is taken: that is why sweeps calibrate
    assert "RLIMIT_NOFILE" in criu_log.fatal(REFUSED).reason


def test_a_death_without_a_bug_is_a_crash_and_summaries_are_never_causes() -> None:
    died = ["(00.1) Error (criu/cr-restore.c:1262): 77 killed by signal 7"]
    cause = criu_log.fatal(died)
    assert cause is not None and cause.crashed and cause.reason == "a task died of signal 7"
    assert criu_log.fatal(["(00.2) Error (criu/cr-restore.c:2320): Restoring FAILED."]) is None
    assert criu_log.fatal(CALIBRATION, criu_log.benign_messages(CALIBRATION)) is None
    assert criu_log.fatal(["no error here"]) is None


def test_groups_of_refusals_and_crashes_use_the_cause() -> None:
    crashed = {"verdict": "failed", "stage": "restore", "crashed": True, "description": "SA-C2-M2+2_S~A-C1",
               "criu_failure": criu_log.fatal(EMPTY_LIST).group(),
               "log_lines": ["restore.log: " + line for line in EMPTY_LIST]}
    assert findings.group(crashed).startswith("restore crashed: BUG at criu/files.c:244 (Empty list")
    refused = {"verdict": "failed", "stage": "restore", "description": "DB@1-M1+1",
               "criu_failure": criu_log.fatal(REFUSED, criu_log.benign_messages(CALIBRATION)).group()}
    assert findings.group(refused) == "restore refused: criu/sk-unix.c: unix: Can't find sender for N"
