"""QEMU's output: every line in the file, a bounded share in the log, the tail read from the end."""

import pickle

from avocado_iofuzz.vm.qemu_output import (
    FIRST_OF_A_KIND,
    LineThrottle,
    QemuOutputLog,
    expand_lines,
    first_line_with,
    line_kind,
    read_tail,
)

WARNING = "eepro100: feature is missing in this emulation: unknown longword write"


def test_lines_that_differ_in_numbers_are_one_kind():
    assert line_kind("bad write at 0x1f val=12") == line_kind("bad write at 0xab val=7")
    assert line_kind("bad write") != line_kind("bad read")
    assert line_kind("wrong value for queue_enable f9412e9a") == line_kind("wrong value for queue_enable ee6ce690")
    assert line_kind("feature is missing: unknown byte write") != line_kind("feature is missing: unknown byte read")


def test_first_lines_of_a_kind_are_logged_then_counted_and_summarized():
    throttle = LineThrottle(first=2, interval=10.0, budget=100)
    logged = [m for i in range(1000) for m in throttle.feed(f"{WARNING} {i}", now=i * 0.001)]
    assert logged == [f"{WARNING} 0", f"{WARNING} 1"]
    # the next line after the interval brings the summary of the 998 counted ones
    summary = throttle.feed(f"{WARNING} 1000", now=20.0)
    assert summary == [f"998 more lines like '{WARNING} 0' suppressed"]
    assert throttle.summary(" (see file)") == [f"1 more line like '{WARNING} 0' suppressed (see file)"]
    assert throttle.summary() == []


def test_many_kinds_stay_within_the_budget_per_interval():
    throttle = LineThrottle(first=3, interval=10.0, budget=5, max_kinds=10)
    logged = [m for i in range(100) for m in throttle.feed(f"message {chr(65 + i % 26)}{i // 26}x", now=0.0)]
    assert len(logged) == 5
    counted = sum(int(m.split()[0]) for m in throttle.summary())
    assert counted == 95  # every line is either logged or counted


def make_log(tmp_path, clock=lambda: 0.0):
    messages = []
    sink = QemuOutputLog(str(tmp_path / "qemu-output-vm1.log"), messages.append, "[qemu output] ", clock=clock)
    return sink, messages


def test_every_line_reaches_the_file_and_the_end_flushes_the_summary(tmp_path):
    sink, messages = make_log(tmp_path)
    for i in range(500):
        sink(f"{WARNING} {i}")
    sink("(Process terminated with status 0)")
    lines = (tmp_path / "qemu-output-vm1.log").read_text().splitlines()
    assert lines[:500] == [f"{WARNING} {i}" for i in range(500)]
    assert lines[500] == "(Process terminated with status 0)"
    assert len(messages) == FIRST_OF_A_KIND + 2
    assert messages[FIRST_OF_A_KIND].startswith(f"[qemu output] {500 - FIRST_OF_A_KIND} more lines like")
    assert str(tmp_path / "qemu-output-vm1.log") in messages[FIRST_OF_A_KIND]
    assert messages[-1] == "[qemu output] (Process terminated with status 0)"


def test_the_sink_pickles_without_its_file_and_appends_after(tmp_path):
    sink, _ = make_log(tmp_path)
    sink("first")
    copy = pickle.loads(pickle.dumps(QemuOutputLog(sink.path, print, "")))
    sink.close()
    copy("second")
    copy.close()
    assert (tmp_path / "qemu-output-vm1.log").read_text().splitlines() == ["first", "second"]


def test_read_tail_reads_only_the_end(tmp_path):
    path = tmp_path / "out"
    path.write_text("".join(f"line {i}\n" for i in range(100000)))
    assert read_tail(str(path), 3) == "line 99997\nline 99998\nline 99999"
    assert read_tail(str(tmp_path / "missing"), 3) == ""


def test_first_line_with_finds_a_line_across_chunk_boundaries(tmp_path):
    path = tmp_path / "out"
    path.write_text("x" * 50 + "\nqemu: hardware error: bad thing\n" + "dump\n" * 10)
    for chunk in (7, 16, 60, 1 << 20):
        assert first_line_with(str(path), "hardware error:", chunk=chunk) == "qemu: hardware error: bad thing"
    assert first_line_with(str(path), "no such text", chunk=7) == ""


class FakeVm:
    def __init__(self, params):
        self.name = "vm1"
        self.params = params


def test_qemu_vm_start_gets_the_file_sink_unless_log_is_asked_for(tmp_path):
    from virttest import utils_logfile

    from avocado_iofuzz.vt import startup

    before = utils_logfile.get_log_file_dir()
    utils_logfile.set_log_file_dir(str(tmp_path))
    try:
        logged = []
        args = ("on-exit", logged.append, "[qemu output] ")
        termination, sink, prefix = startup._output_to_file(args, FakeVm({}))
        assert (termination, prefix) == ("on-exit", "") and isinstance(sink, QemuOutputLog)
        sink("qemu-system-x86_64: warning: something")
        sink.close()
        assert (tmp_path / "qemu-output-vm1.log").read_text() == "qemu-system-x86_64: warning: something\n"
        assert logged == ["[qemu output] qemu-system-x86_64: warning: something"]
        assert startup._output_to_file(args, FakeVm({"qemu_output": "log"})) == args
    finally:
        utils_logfile.set_log_file_dir(before)


def test_a_run_of_identical_lines_is_written_once_with_its_count_and_expands_back(tmp_path):
    clock = [0.0]
    sink, _ = make_log(tmp_path, clock=lambda: clock[0])
    printed = ["boot"] + [WARNING] * 1000 + ["other", WARNING, WARNING, "(Process terminated with status 0)"]
    for number, line in enumerate(printed):
        clock[0] = number * 0.01  # a flush every 100 lines writes the copies counted so far
        sink(line)
    written = (tmp_path / "qemu-output-vm1.log").read_text().splitlines()
    assert len(written) < 30
    assert written[:3] == ["boot", WARNING, "[previous line repeated 99 more times]"]
    assert written[-3:] == [WARNING, "[previous line repeated 1 more time]", "(Process terminated with status 0)"]
    assert list(expand_lines(written)) == printed
    assert sink.lines == len(printed)


class FakeProcess:
    def __init__(self, output_filename, status):
        self.output_filename = output_filename
        self.status = status

    def get_status(self):
        return self.status


class DeadVm:
    def __init__(self, process):
        self.process = process

    def is_dead(self):
        return True

    def get_pid(self):
        return 4242


def test_a_dead_vms_exit_has_the_last_lines_and_the_hardware_error_line_of_a_large_output(tmp_path):
    from avocado_iofuzz.vm.vt import STDERR_TAIL_LINES, VtGuest

    output = tmp_path / "output"
    dump = "".join(f"EAX=00000000 register dump line {i}\n" for i in range(100))
    warnings = f"{WARNING}\n" * 200_000  # megabytes of warnings before the end
    output.write_text(f"{warnings}qemu: hardware error: eepro100: bad state\n{dump}")
    exit_info = VtGuest(DeadVm(FakeProcess(str(output), 134)), login_timeout=1).exit_info()
    assert exit_info is not None and exit_info.signal == 6 and exit_info.status is None
    lines = exit_info.stderr_tail.splitlines()
    assert lines[0] == "qemu: hardware error: eepro100: bad state"
    assert lines[1:] == dump.splitlines()[-STDERR_TAIL_LINES:]
