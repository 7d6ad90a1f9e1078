"""Where a strategy's round wall time goes, measured from outside the package's logic (guided_vs_blind --profile).

A :class:`RoundProfile` wraps, on one contender, the calls that cost time and
reads what the processes spent, without changing what a round does:

* ``qemu_cpu_s``: QEMU's user+system CPU over the contender's turns
  (``/proc/PID/stat``, all its threads: vCPU, main loop, the trace writes);
* ``trace_bytes`` / ``trace_lines``: what the collector read of QEMU's trace
  file (the lines QEMU wrote while events were on);
* ``qmp_calls`` / ``qmp_s``: the collector's ``trace-event-set-state`` calls and
  their round trips;
* ``collector_s`` / ``collector_cpu_s``: wall and this thread's CPU inside the
  collector (reads and switches), which runs in the campaign's loop;
* ``login_s``: the shell login each round's campaign makes;
* ``campaign_s``: the rounds' campaigns (executor started to done, the linger
  after it, the collector and login inside);
* ``linger_s``: the watch for a late crash after each round's @DONE;
* ``gap_s``: round wall time outside the campaign (planning the round, the
  corpus, the trace's write-ahead and events).

``executor_s`` is what is left of the campaigns for the guest's executor and
the console: campaign - linger - collector - login.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a live process and all its threads (0 if it is gone)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            after_name = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(after_name[11]) + int(after_name[12])) / _TICKS  # utime, stime: fields 14 and 15


@dataclass
class RoundProfile:
    rounds: int = 0
    ops: int = 0
    wall_s: float = 0.0
    campaign_s: float = 0.0
    linger_s: float = 0.0
    login_s: float = 0.0
    collector_s: float = 0.0
    collector_cpu_s: float = 0.0
    qmp_calls: int = 0
    qmp_s: float = 0.0
    qemu_cpu_s: float = 0.0
    trace_bytes: int = 0
    trace_lines: int = 0

    def attach(self, vm: Any, run: Any) -> None:
        """Wrap the VM's login and the run's coverage observer and QMP (before the first round)."""
        vm.login = self._timed(vm.login, "login_s")
        coverage = run.coverage
        coverage.qmp = self._qmp(coverage.qmp)
        for name in ("start", "progress", "finish"):
            setattr(coverage, name, self._collector(getattr(coverage, name)))

    def round(self, vm: Any, step: Callable[[], Any]) -> Any:
        """Run one round (``step``), booking its wall time and QEMU's CPU meanwhile."""
        pid = vm.pid
        cpu = process_cpu_s(pid)
        started = time.monotonic()
        try:
            return step()
        finally:
            self.wall_s += time.monotonic() - started
            if vm.pid == pid:  # a restarted QEMU's CPU is not comparable; its round is rare and booked as 0
                self.qemu_cpu_s += max(0.0, process_cpu_s(pid) - cpu)

    def book(self, record: Any, collector: Any) -> None:
        self.rounds += 1
        self.ops += record.result.total_done
        self.campaign_s += record.result.elapsed
        self.linger_s += record.result.watched_after_done
        if collector is not None:
            self.trace_bytes, self.trace_lines = collector.bytes_read, collector.lines_read

    def figures(self) -> dict[str, Any]:
        figures: dict[str, Any] = {f.name: round(getattr(self, f.name), 3) for f in fields(self)}
        figures["executor_s"] = round(self.campaign_s - self.linger_s - self.collector_s - self.login_s, 3)
        figures["gap_s"] = round(self.wall_s - self.campaign_s, 3)
        per_op = {"qemu_cpu_us": self.qemu_cpu_s, "trace_lines": self.trace_lines, "qmp_calls": self.qmp_calls}
        figures["per_mop"] = {k: round(v * 1e6 / self.ops, 3) if self.ops else None for k, v in per_op.items()}
        figures["qmp_ms_mean"] = round(1000 * self.qmp_s / self.qmp_calls, 3) if self.qmp_calls else None
        return figures

    # -- wrappers ---------------------------------------------------------------
    def _timed(self, call: Callable[..., Any], total: str) -> Callable[..., Any]:
        @functools.wraps(call)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return call(*args, **kwargs)
            finally:
                setattr(self, total, getattr(self, total) + time.monotonic() - started)

        return timed

    def _qmp(self, call: Callable[[str, dict[str, Any]], Any]) -> Callable[[str, dict[str, Any]], Any]:
        def qmp(command: str, arguments: dict[str, Any]) -> Any:
            self.qmp_calls += 1
            started = time.monotonic()
            try:
                return call(command, arguments)
            finally:
                self.qmp_s += time.monotonic() - started

        return qmp

    def _collector(self, call: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call)
        def observed(*args: Any) -> Any:
            started, cpu = time.monotonic(), time.thread_time()
            try:
                return call(*args)
            finally:
                self.collector_s += time.monotonic() - started
                self.collector_cpu_s += time.thread_time() - cpu

        return observed


def ratios(guided: dict[str, Any], blind: dict[str, Any]) -> dict[str, float | None]:
    """guided / blind of the per-op costs and of the shares of wall time, measured in the same run."""
    out: dict[str, float | None] = {}
    for key in ("qemu_cpu_us", "trace_lines", "qmp_calls"):
        g, b = guided["per_mop"][key], blind["per_mop"][key]
        out[f"{key}_per_op"] = round(g / b, 2) if g is not None and b else None
    out["ops"] = round(guided["ops"] / blind["ops"], 3) if blind["ops"] else None
    for key in ("executor_s", "collector_s", "gap_s", "login_s", "linger_s"):
        out[f"{key}_share_guided"] = round(guided[key] / guided["wall_s"], 3) if guided["wall_s"] else None
        out[f"{key}_share_blind"] = round(blind[key] / blind["wall_s"], 3) if blind["wall_s"] else None
    return out
