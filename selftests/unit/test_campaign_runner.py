"""The campaign's watchdog logic against a scripted guest (pure logic, no QEMU).

The fake guest interprets the real executor command line the campaign sends
and answers with the protocol lines the real executor would print, so these
tests pin down decisions (window, resume point, reset, crash) while the
functional tests prove the same on a real guest.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from avocado_iofuzz.campaign.runner import Campaign, CampaignConfig, CampaignError
from avocado_iofuzz.campaign.trace import TraceWriter, read_trace
from avocado_iofuzz.model.program import plan_ranges
from avocado_iofuzz.vm.interface import QemuExit


class ScriptedGuest:
    """A guest whose executor hangs or kills QEMU at chosen (range, op) positions."""

    def __init__(
        self,
        hang_at=(),
        crash_at=None,
        reboot_at=(),
        answers_after_hang=False,
        reset_helps=True,
        announce_hang=False,
        unread_at_death=0,
    ):
        self.hang_at = set(hang_at)
        self.announce_hang = announce_hang  # print @HANG as the executor's injected hang does
        self.unread_at_death = unread_at_death  # lines still in the console buffer when QEMU is seen dead
        self.crash_at = crash_at
        self.reboot_at = set(reboot_at)
        self.answers_after_hang = answers_after_hang
        self.alive = True
        self.hung = False
        self.reset_helps = reset_helps
        self.resets = 0
        self.restarts = 0
        self.logins = 0
        self.closed = 0
        self.commands: list[str] = []
        self.pid = 4242

    # GuestVM protocol
    def is_alive(self):
        return self.alive

    def login(self, timeout=None):
        if not self.alive or (self.hung and not self.answers_after_hang):
            raise TimeoutError("no prompt")
        self.hung = False
        self.logins += 1
        return ScriptedSession(self)

    def reset(self):
        self.resets += 1
        self.hung = not self.reset_helps

    def restart(self):
        self.restarts += 1
        self.hung = False

    def exit_info(self):
        return None if self.alive else QemuExit(status=None, signal=6, stderr_tail="hw/foo.c:12: assertion failed")

    def qemu_cmdline(self):
        return "qemu-system-x86_64 -machine pc"


class ScriptedSession:
    def __init__(self, guest: ScriptedGuest):
        self.guest = guest
        self.pending = ""
        self.held: list[str] = []

    def sendline(self, command):
        self.guest.commands.append(command)
        argv = shlex.split(command)
        opts = dict(zip(argv[1::2], argv[2::2], strict=False))
        every = int(opts["--report-every"])
        resume = tuple(int(x) for x in opts["--resume"].split(":"))
        ranges = [a for a in argv if a[:1].isdigit() and "-" in a]
        plans = {int(r.split(":")[0]): r for r in ranges}
        out = [f"@IOFUZZ READY 1 {len(plans)}"]
        for index in sorted(plans):
            if index < resume[0]:
                continue
            count = self.op_counts[index]
            op = resume[1] if index == resume[0] else 0
            out.append(f"@P {index} {op}")
            while op < count:
                nxt = min(count, (op // every + 1) * every)
                for stop_op in range(op, nxt):
                    if (index, stop_op) in self.guest.hang_at:
                        self.guest.hang_at.discard((index, stop_op))
                        self.guest.hung = True
                        if self.guest.announce_hang:
                            out.append(f"@HANG {index} {stop_op}")
                        self.pending = "\n".join(out) + "\n"
                        return
                    if (index, stop_op) == self.guest.crash_at:
                        self.guest.alive = False
                        held = self.guest.unread_at_death
                        self.held = out[len(out) - held :] if held else []
                        self.pending = "\n".join(out[: len(out) - held]) + "\n"
                        return
                    if (index, stop_op) in self.guest.reboot_at:
                        self.guest.reboot_at.discard((index, stop_op))
                        out.append("[    0.000000] Linux version 6.1.0-99-amd64")
                        self.pending = "\n".join(out) + "\n"
                        return
                op = nxt
                out.append(f"@P {index} {op}")
        if self.guest.crash_at == "after-last-op":  # a device timer fires once the executor is done
            self.guest.alive = False
            self.pending = "\n".join(out) + "\n"
            return
        out.append("@DONE 0")
        if self.guest.crash_at == "after-done":  # the console holds @DONE, QEMU is gone
            self.guest.alive = False
        self.pending = "\n".join(out) + "\n"

    def read_nonblocking(self, internal_timeout=None, timeout=None):
        if not self.pending and self.held and not self.guest.alive:
            # what QEMU wrote just before it died reaches the host after the death is seen
            self.pending, self.held = "\n".join(self.held) + "\n", []
        data, self.pending = self.pending, ""
        return data

    def close(self):
        self.guest.closed += 1


PLANS = plan_ranges(7, [(0x70, 0x71, "rtc0"), (0x80, 0x8F, "dma page reg"), (0x510, 0x51B, "fw_cfg_io")], 50)


def make_campaign(tmp_path: Path, guest: ScriptedGuest, session=None, hand_back=False, **config):
    ScriptedSession.op_counts = {p.index: p.op_count for p in PLANS}
    writer = TraceWriter(tmp_path / "trace", {"seed": 7})
    settings = {
        "report_every": 64, "hang_timeout": 0.3, "relogin_timeout": 0.1, "login_timeout": 0.1, "done_linger": 0.05,
        **config,
    }  # fmt: skip
    cfg = CampaignConfig(**settings)
    return Campaign(guest, PLANS, writer, cfg, session=session, hand_back=hand_back), writer


def test_clean_run_confirms_every_op(tmp_path):
    campaign, writer = make_campaign(tmp_path, ScriptedGuest())
    result = campaign.run()
    writer.close()
    assert result.findings == []
    assert result.ops_done == {p.index: p.op_count for p in PLANS}
    trace = read_trace(tmp_path / "trace")
    assert all(trace.last_done(p.index) == p.op_count for p in PLANS)


def test_hang_with_silent_guest_resets_and_resumes_after_window(tmp_path):
    guest = ScriptedGuest(hang_at=[(1, 200)])
    campaign, writer = make_campaign(tmp_path, guest)
    result = campaign.run()
    writer.close()
    (hang,) = result.findings
    assert (hang.kind, hang.range_index, hang.window) == ("hang", 1, (192, 256))
    assert guest.resets == 1
    assert "--resume 1:256" in guest.commands[-1]
    # the guest did not say which op hung: the window may have run, none of it is confirmed
    assert result.ops_unconfirmed[1] == 64 and result.ops_skipped[1] == 0
    assert result.ops_done[1] == PLANS[1].op_count - 64
    assert result.tallies[1].ops_executed == PLANS[1].op_count
    assert result.ops_done[2] == PLANS[2].op_count
    kinds = [e.kind for e in read_trace(tmp_path / "trace").events]
    assert kinds.index("hang") < kinds.index("reset") < kinds.index("resume")


def test_guest_that_a_reset_does_not_bring_back_gets_a_fresh_qemu(tmp_path):
    guest = ScriptedGuest(hang_at=[(1, 3)], reset_helps=False)
    campaign, writer = make_campaign(tmp_path, guest)
    result = campaign.run()
    writer.close()
    assert (guest.resets, guest.restarts) == (1, 1)
    assert [f.kind for f in result.findings] == ["hang"]
    assert result.ops_done[2] == PLANS[2].op_count
    kinds = [e.kind for e in read_trace(tmp_path / "trace").events]
    assert kinds.index("reset") < kinds.index("restart") < kinds.index("resume")


def test_hang_with_answering_guest_relogs_without_reset(tmp_path):
    guest = ScriptedGuest(hang_at=[(0, 10)], answers_after_hang=True)
    campaign, _ = make_campaign(tmp_path, guest)
    result = campaign.run()
    assert [f.kind for f in result.findings] == ["hang"]
    assert guest.resets == 0 and guest.logins == 2


def test_hang_in_last_window_of_a_range_moves_to_next_range(tmp_path):
    last = PLANS[0].op_count - 1
    guest = ScriptedGuest(hang_at=[(0, last)])
    campaign, _ = make_campaign(tmp_path, guest)
    result = campaign.run()
    assert result.findings[0].window[1] == PLANS[0].op_count
    assert "--resume 1:0" in guest.commands[-1]


def test_reboot_is_noticed_without_waiting_for_the_watchdog(tmp_path):
    guest = ScriptedGuest(reboot_at=[(2, 5)])
    campaign, _ = make_campaign(tmp_path, guest, hang_timeout=30.0)
    result = campaign.run()
    assert [f.kind for f in result.findings] == ["reboot"]
    assert result.elapsed < 5


def test_crash_ends_run_with_exit_info_and_window(tmp_path):
    guest = ScriptedGuest(crash_at=(1, 700))
    campaign, writer = make_campaign(tmp_path, guest)
    result = campaign.run()
    writer.close()
    assert result.crashed and result.qemu_exit.signal == 6
    (crash,) = result.findings
    assert (crash.kind, crash.range_index, crash.window) == ("crash", 1, (640, 704))
    assert "SIGABRT" in crash.detail and "assertion failed" in crash.detail
    events = read_trace(tmp_path / "trace").events
    assert events[-1].kind == "crash"


def test_max_hangs_stops_the_run(tmp_path):
    guest = ScriptedGuest(hang_at=[(0, 1), (1, 1), (2, 1)])
    campaign, _ = make_campaign(tmp_path, guest, max_hangs=2)
    result = campaign.run()
    assert len(result.findings) == 2
    assert "max_hangs" in result.stopped_early


def test_no_login_is_a_campaign_error(tmp_path):
    guest = ScriptedGuest()
    guest.alive = False
    campaign, _ = make_campaign(tmp_path, guest)
    with pytest.raises(CampaignError, match="could not log into the guest"):
        campaign.run()


def test_hang_the_executor_names_confirms_the_ops_before_it(tmp_path):
    guest = ScriptedGuest(hang_at=[(1, 200)], announce_hang=True)
    campaign, writer = make_campaign(tmp_path, guest)
    result = campaign.run()
    writer.close()
    (hang,) = result.findings
    assert (hang.window, hang.op) == ((192, 256), 200)
    tally = result.tallies[1]
    assert tally.confirmed == [(0, 200), (256, PLANS[1].op_count)]
    assert tally.skipped == [(200, 256)] and tally.unconfirmed == []
    assert result.ops_done[1] == PLANS[1].op_count - 56 and result.ops_skipped[1] == 56
    hang_event = next(e for e in read_trace(tmp_path / "trace").events if e.kind == "hang")
    assert hang_event.data["op"] == 200


def test_hang_at_the_second_op_counts_the_first_read(tmp_path):
    guest = ScriptedGuest(hang_at=[(0, 1)], announce_hang=True)
    campaign, _ = make_campaign(tmp_path, guest)
    result = campaign.run()
    assert result.tallies[0].confirmed[0] == (0, 1)
    assert result.tallies[0].by_phase(PLANS[0])["read"] == 1  # rtc0 has 2 slots: op 1 was left out


def test_crash_leaves_the_window_unconfirmed_not_lost(tmp_path):
    guest = ScriptedGuest(crash_at=(1, 700))
    campaign, _ = make_campaign(tmp_path, guest)
    result = campaign.run()
    tally = result.tallies[1]
    assert tally.ops_confirmed == 640 and tally.unconfirmed == [(640, 704)]
    assert tally.ops_executed == 704 and result.ops_unconfirmed[1] == 64
    assert result.tallies[2].ops_executed == 0  # never reached


def test_marks_still_in_the_console_when_qemu_died_are_counted(tmp_path):
    guest = ScriptedGuest(crash_at=(1, 700), unread_at_death=2)  # "@P 1 576" and "@P 1 640" come late
    campaign, _ = make_campaign(tmp_path, guest)
    result = campaign.run()
    (crash,) = result.findings
    assert crash.window == (640, 704)
    assert result.tallies[1].confirmed == [(0, 640)] and result.tallies[1].unconfirmed == [(640, 704)]


class RecordingObserver:
    """What a progress observer (the coverage collector) is told, in order."""

    def __init__(self):
        self.calls = []

    def start(self, plans):
        self.calls.append(("start", [p.index for p in plans]))

    def progress(self, range_index, ops_done):
        self.calls.append(("progress", range_index, ops_done))

    def finish(self):
        self.calls.append(("finish",))


def test_observer_sees_start_every_mark_and_finish_also_after_a_crash(tmp_path):
    runs = ((ScriptedGuest(), (2, PLANS[2].op_count)), (ScriptedGuest(crash_at=(1, 100)), (1, 64)))
    for n, (guest, last_mark) in enumerate(runs):
        observer = RecordingObserver()
        (tmp_path / str(n)).mkdir()
        campaign, writer = make_campaign(tmp_path / str(n), guest)
        campaign.observer = observer
        campaign.run()
        writer.close()
        assert observer.calls[0] == ("start", [0, 1, 2])
        assert observer.calls[-1] == ("finish",)
        marks = [c[1:] for c in observer.calls if c[0] == "progress"]
        assert marks[-1] == last_mark
        assert marks == sorted(marks)  # in the order the executor printed them


@pytest.mark.parametrize("when", ["after-last-op", "after-done"])
def test_a_crash_after_the_last_op_is_a_crash_in_the_last_ops(tmp_path, when):
    guest = ScriptedGuest(crash_at=when)
    campaign, writer = make_campaign(tmp_path, guest)
    result = campaign.run()
    writer.close()
    (crash,) = result.findings
    last = PLANS[-1]
    assert result.crashed and "assertion failed" in crash.detail
    assert (crash.range_index, crash.window) == (last.index, (last.op_count - 64, last.op_count))
    assert result.ops_done == {p.index: p.op_count for p in PLANS}  # every op was confirmed
    event = read_trace(tmp_path / "trace").events[-1]
    assert event.kind == "crash" and event.data["window"] == [last.op_count - 64, last.op_count]


def test_the_watch_after_done_is_timed_apart_from_the_ops(tmp_path):
    """An op rate divides by the ops' time: the fixed watch for late crashes is counted on its own."""
    campaign, _ = make_campaign(tmp_path, ScriptedGuest(), done_linger=0.2)
    result = campaign.run()
    assert result.findings == []
    assert 0.2 <= result.watched_after_done < result.elapsed
    assert result.ops_elapsed == pytest.approx(result.elapsed - result.watched_after_done)
    assert result.as_dict()["watched_after_done_s"] == round(result.watched_after_done, 3)


class Cut(BaseException):
    """What the test's time limit raises (process_guard.TimeUp is one): no Exception, so no recovery catches it."""


def cut_when_hung(monkeypatch):
    """The test's time runs out while the guest sits in its hang: the next console read raises Cut."""
    read = ScriptedSession.read_nonblocking

    def read_or_cut(self, internal_timeout=None, timeout=None):
        if self.guest.hung and not self.pending:
            raise Cut("test timeout of 1 s reached")
        return read(self, internal_timeout, timeout)

    monkeypatch.setattr(ScriptedSession, "read_nonblocking", read_or_cut)


@pytest.mark.parametrize("announced", [True, False])
def test_a_run_cut_while_the_executor_runs_books_its_window_and_says_why(tmp_path, monkeypatch, announced):
    cut_when_hung(monkeypatch)
    guest = ScriptedGuest(hang_at=[(1, 200)], announce_hang=announced)
    campaign, writer = make_campaign(tmp_path, guest, hang_timeout=60)
    with pytest.raises(Cut):
        campaign.run()
    writer.close()
    result = campaign.result
    assert result.findings == [] and result.ops_done[0] == PLANS[0].op_count
    tally = result.tallies[1]
    if announced:  # the executor named op 200: the ops before it ran
        assert tally.confirmed == [(0, 200)] and tally.unconfirmed == []
    else:  # the last mark was 192: any op of the window may have run
        assert tally.confirmed == [(0, 192)] and tally.unconfirmed == [(192, 256)]
    assert result.stopped_early == "interrupted: test timeout of 1 s reached"
    (stop,) = [e for e in read_trace(tmp_path / "trace").events if e.kind == "stop"]
    assert stop.data["reason"] == result.stopped_early


def test_a_cut_between_executor_runs_books_nothing_twice(tmp_path, monkeypatch):
    """Cut during the hang recovery (after the window was booked): the counts stay those of the hang."""
    guest = ScriptedGuest(hang_at=[(1, 200)], announce_hang=True)
    campaign, writer = make_campaign(tmp_path, guest)

    def reset_cut():
        raise Cut("test timeout of 1 s reached")

    monkeypatch.setattr(guest, "reset", reset_cut)  # the silent guest's relogin fails first, then the reset is cut
    with pytest.raises(Cut):
        campaign.run()
    writer.close()
    tally = campaign.result.tallies[1]
    assert tally.confirmed == [(0, 200)] and tally.skipped == [(200, 256)] and tally.unconfirmed == []
    assert not any(e.kind == "stop" for e in read_trace(tmp_path / "trace").events)


def test_a_hang_finding_says_whether_qemus_monitor_answered(tmp_path):
    """Asked before the recovery: a guest stuck in its own code leaves QEMU's main loop free to answer."""

    class AnsweringGuest(ScriptedGuest):
        def query_status(self, timeout):
            assert self.hung, "the monitor must be asked at the stall, before any reset"
            return "running"

    campaign, writer = make_campaign(tmp_path, AnsweringGuest(hang_at=[(1, 200)]))
    result = campaign.run()
    writer.close()
    (hang,) = result.findings
    assert hang.detail.startswith("no progress for ")
    assert hang.detail.endswith("(status running): the guest is stuck, QEMU's main loop is not")
    (event,) = [e for e in read_trace(tmp_path / "trace").events if e.kind == "hang"]
    assert event.data["monitor"]["verdict"] == "answered" and event.data["detail"] == hang.detail


def test_a_run_that_ends_at_done_hands_its_shell_on_when_asked_and_the_next_run_needs_no_login(tmp_path):
    guest = ScriptedGuest()
    first, _ = make_campaign(tmp_path, guest, hand_back=True)
    first.run()
    assert first.handed_back is not None and (guest.logins, guest.closed) == (1, 0)
    (tmp_path / "second").mkdir()
    second, _ = make_campaign(tmp_path / "second", guest, session=first.handed_back)
    result = second.run()
    assert result.ops_done == {p.index: p.op_count for p in PLANS}
    assert (guest.logins, guest.closed) == (1, 1)  # no second login; without hand_back the run closes it
    assert second.handed_back is None


@pytest.mark.parametrize(
    "guest",
    [ScriptedGuest(crash_at=(1, 700)), ScriptedGuest(hang_at=[(0, 1), (1, 1), (2, 1)])],
    ids=["crash", "stopped-early"],
)
def test_a_run_that_did_not_end_at_done_closes_its_shell_even_when_asked_to_hand_it_on(tmp_path, guest):
    campaign, _ = make_campaign(tmp_path, guest, hand_back=True, max_hangs=2)
    campaign.run()
    assert campaign.handed_back is None
    assert guest.closed >= 1
