"""Progress lines in the test log: steady pace, ops/s, current range, hangs so far."""

from __future__ import annotations

import logging
import re

from avocado_iofuzz.campaign.runner import Campaign, CampaignConfig
from avocado_iofuzz.campaign.trace import TraceWriter
from avocado_iofuzz.model.program import plan_ranges

PLANS = plan_ranges(3, [(0x70, 0x77, "rtc0"), (0x80, 0x8F, "dma page reg")], 62)  # 512 and 1024 ops
PROGRESS = re.compile(
    r"progress: (?P<done>\d+)/(?P<total>\d+) ops \((?P<pct>[\d.]+)%\), (?P<rate>\d+) ops/s, "
    r"range (?P<pos>\d+)/2 (?P<name>.+) \((?P<span>0x[0-9a-f]+-0x[0-9a-f]+)\), hangs (?P<hangs>\d+), reboots 0 so far"
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SlowExecutorSession:
    """Prints one progress mark (every 32 ops) per read, each read taking a second."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lines: list[str] = []

    def sendline(self, command: str) -> None:
        self.lines = ["@IOFUZZ READY 1 2"]
        for plan in PLANS:
            self.lines += [f"@P {plan.index} {op}" for op in range(0, plan.op_count + 1, 32)]
        self.lines.append("@DONE 0")

    def read_nonblocking(self, internal_timeout=None, timeout=None) -> str:
        self.clock.now += 1.0
        return self.lines.pop(0) + "\n" if self.lines else ""

    def close(self) -> None:
        pass


class Guest:
    pid = 1

    def __init__(self, session):
        self.session = session

    def is_alive(self):
        return True

    def login(self, timeout=None):
        return self.session

    def qemu_cmdline(self):
        return ""


def test_progress_is_logged_every_interval_with_rate_and_range(tmp_path, caplog):
    clock = Clock()
    session = SlowExecutorSession(clock)
    writer = TraceWriter(tmp_path / "trace", {"seed": 3})
    config = CampaignConfig(report_every=32, progress_log_interval=5.0, hang_timeout=30)
    with caplog.at_level(logging.INFO, logger="avocado.test.iofuzz"):
        result = Campaign(Guest(session), PLANS, writer, config, clock=clock).run()
    writer.close()
    assert result.total_done == 1536
    lines = [PROGRESS.fullmatch(r.getMessage()) for r in caplog.records if r.getMessage().startswith("progress:")]
    assert all(lines), [r.getMessage() for r in caplog.records]
    # 1 read = 1 s, 50 reads in all: a line every 5 s, no more, no less
    assert len(lines) == 10
    done = [int(m["done"]) for m in lines]
    assert done == sorted(done) and done[0] > 0 and done[-1] <= 1536
    for m in lines:
        assert int(m["total"]) == 1536 and int(m["hangs"]) == 0
        assert int(m["rate"]) == round(int(m["done"]) / (5 * (lines.index(m) + 1)))
    assert {(m["name"], m["span"]) for m in lines} == {("rtc0", "0x0070-0x0077"), ("dma page reg", "0x0080-0x008f")}
