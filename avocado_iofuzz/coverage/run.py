"""One run's coverage: off with a reason, or a collector set up for the run's devices when the campaign starts.

:class:`RunCoverage` is what a campaign is given as its progress observer.
The events to watch depend on the ranges the run fuzzes (a rowless run maps
them to devices by name), so the selection is made when the campaign starts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from avocado_iofuzz.coverage.arguments import ArgumentReader
from avocado_iofuzz.coverage.backend import TraceBackend, probe_backend
from avocado_iofuzz.coverage.catalog import FALLBACK_BUS, Catalog
from avocado_iofuzz.coverage.collector import CoverageCollector, QmpCall
from avocado_iofuzz.coverage.summary import coverage_line, coverage_summary, disabled
from avocado_iofuzz.model.kinds import target_name
from avocado_iofuzz.model.program import RangePlan

LOG = logging.getLogger("avocado.test.iofuzz")

TRACE_LOG = "qemu-trace.log"


def trace_args(trace_file: Path) -> list[str]:
    """The QEMU arguments that send the log backend's lines to ``trace_file`` (no event enabled yet)."""
    return ["-trace", f"file={trace_file}"]


class RunCoverage:
    """The campaign's observer for coverage; :meth:`summary` is the ``coverage`` object of summary.json."""

    def __init__(
        self,
        backend: TraceBackend,
        devices: Sequence[str],
        trace_file: Path,
        qmp: QmpCall,
        off_reason: str = "",
        catalog: Catalog | None = None,
        **collector_args: Any,
    ) -> None:
        self.backend = backend
        self.devices = list(devices)
        self.trace_file = Path(trace_file)
        self.qmp = qmp
        self.off_reason = off_reason or ("" if backend.usable else backend.reason)
        self.catalog = catalog
        self.collector_args = collector_args
        self.collector: CoverageCollector | None = None
        # guided rounds: one collector for campaign after campaign, events armed until close()
        self.across_campaigns = False
        self.count_hits = False  # guided rounds: hits per event and range too (the collector's count_hits)

    @classmethod
    def for_qemu(
        cls, qemu: str, devices: Sequence[str], trace_file: Path, qmp: QmpCall, enabled: bool = True, **kw: Any
    ) -> RunCoverage:
        """Probe ``qemu``'s trace backend (once per binary) and say once if coverage is off."""
        if not enabled:
            return cls.switched_off("switched off (iofuzz_coverage)", devices, trace_file, qmp)
        run = cls(probe_backend(qemu), devices, trace_file, qmp, **kw)
        if run.off_reason:
            LOG.warning("coverage: off for this run: %s", run.off_reason)
        return run

    @classmethod
    def switched_off(cls, reason: str, devices: Sequence[str], trace_file: Path, qmp: QmpCall) -> RunCoverage:
        """A run without coverage, for ``reason`` (the summary records it)."""
        return cls(TraceBackend(False, reason), devices, trace_file, qmp, off_reason=reason)

    @property
    def enabled(self) -> bool:
        return not self.off_reason

    def qemu_args(self) -> list[str]:
        return trace_args(self.trace_file) if self.enabled else []

    # -- ProgressObserver --------------------------------------------------------
    def keep_armed(self, count_hits: bool = False) -> None:
        """Serve several campaigns on this QEMU in a row (guided rounds); :meth:`close` after the last.

        ``count_hits``: count each event's hits per range as well (the guided signal); a blind
        control leaves it off and pays what a blind run pays.
        """
        self.across_campaigns = True
        self.count_hits = count_hits

    def start(self, plans: Sequence[RangePlan]) -> None:
        if not self.enabled:
            return
        if self.across_campaigns and self.collector is not None:
            self.collector.next_round(plans)
            return
        catalog = self.catalog or Catalog.load()
        # the catalog's patterns match the guest's range names, which a run at several widths suffixes
        selection = catalog.select(self.devices, [target_name(p.name) for p in plans], self.backend.events)
        for device in selection.devices:
            if device.fallback == FALLBACK_BUS:
                LOG.info("coverage: %s has no trace events in this QEMU; watching the bus events only", device.device)
        LOG.info("coverage: watching %d trace events (%s)", len(selection.events), ", ".join(selection.patterns()))
        arguments = None
        if self.count_hits:  # the guided signal: the events of the [arguments] table also by their arguments
            arguments = ArgumentReader.from_file(catalog.arguments, selection.events, self.backend.formats_file)
            if arguments.readers:
                LOG.info("coverage: %d event(s) also counted by argument values", len(arguments.readers))
        self.collector = CoverageCollector(
            selection, self.trace_file, self.qmp, count_hits=self.count_hits, arguments=arguments,
            **self.collector_args,
        )  # fmt: skip
        self.collector.start(plans)

    def progress(self, range_index: int, ops_done: int) -> None:
        if self.collector is not None:
            self.collector.progress(range_index, ops_done)

    def finish(self) -> None:
        if self.across_campaigns:
            if self.collector is not None:
                self.collector.settle()
            return
        self.close()

    def close(self) -> None:
        """The last campaign ended: switch the events off and log what was reached."""
        if self.collector is not None:
            self.collector.finish()
            LOG.info("coverage: %s", coverage_line(self.summary()))

    def summary(self) -> dict[str, Any]:
        if self.collector is None:
            return disabled(self.off_reason or "the campaign did not start")
        return coverage_summary(self.collector)
