"""A device row of cfg/devices.cfg on a bare QEMU: its VM arguments and its ranges, as ``avocado run`` plans them.

Shared by the coverage benchmarks: the row's params come from the package's
own cfg (TestCatalog), the ranges from the guest's listings through the same
functions the VT test calls (fuzz_targets, read_listings, choose_targets,
plan_kinds, check_access).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from avocado_iofuzz.campaign.guest_access import check_access, read_listings
from avocado_iofuzz.campaign.runner import Campaign, CampaignConfig, CampaignResult
from avocado_iofuzz.campaign.trace import TraceWriter
from avocado_iofuzz.coverage.backend import probe_backend
from avocado_iofuzz.coverage.run import RunCoverage, trace_args
from avocado_iofuzz.executor.protocol import DEFAULT_BINARY
from avocado_iofuzz.model.kinds import choose_targets, plan_kinds
from avocado_iofuzz.model.layout_choice import choose_layouts, pci_functions
from avocado_iofuzz.model.program import RangePlan
from avocado_iofuzz.model.ranges import fuzz_targets
from avocado_iofuzz.vm.qom import parse_device_list
from avocado_iofuzz.vt.catalog import TestCatalog
from avocado_iofuzz.vt.iofuzz_params import IofuzzParams, read_kinds


def row_params(reference: str) -> dict[str, Any]:
    """The cartesian params of ``avocado run <reference>`` (e.g. ``iofuzz.quick.nic.e1000e``)."""
    variants = TestCatalog().variants(reference)
    if not variants:
        raise ValueError(f"no iofuzz variant matches {reference!r}")
    return variants[0]


def row_qemu_args(params: dict[str, Any]) -> list[str]:
    """The row's ``extra_params`` (its ``-device``) as QEMU arguments."""
    return shlex.split(str(params.get("extra_params", "") or ""))


def row_plans(session: Any, params: dict[str, Any], seed: int, fuzz_count: int) -> list[RangePlan]:
    """The ranges the VT test would fuzz for this row, with ``fuzz_count`` writes per slot."""
    return row_plans_and_listing(session, params, seed, fuzz_count)[0]


def row_plans_and_listing(
    session: Any, params: dict[str, Any], seed: int, fuzz_count: int
) -> tuple[list[RangePlan], str]:
    """:func:`row_plans`, and the guest's PCI listing they came from (empty when the row's kinds need none)."""
    settings = IofuzzParams.from_params(params)
    kinds = read_kinds(params)
    targets = fuzz_targets(
        session.cmd_output("cat /proc/ioports"),
        skip_devices=settings.skip_devices,
        skip_ports=settings.skip_ports,
        extra_ioports=settings.extra_ioports,
        only_devices=settings.only_devices,
    )
    listings = read_listings(session, kinds)
    plans = plan_kinds(seed, fuzz_count, kinds, choose_targets(kinds, listings, targets, []))
    plans = [replace(plan, values=settings.values) for plan in plans]  # fuzz_values, as the VT test does
    plans = choose_layouts(plans, pci_functions(listings.pci), settings.layout)  # dma_layout, likewise
    return check_access(session, plans, DEFAULT_BINARY), listings.pci


def row_devices(params: dict[str, Any]) -> list[str]:
    return parse_device_list(str(params.get("iofuzz_devices", "") or ""))


def coverage_for(vm: Any, devices: Sequence[str], trace_file: Path) -> RunCoverage:
    """Coverage on a BareQemu started with :func:`trace_args` (its QMP socket)."""
    return RunCoverage(probe_backend(vm.qemu_binary), devices, trace_file, lambda c, a: vm.qmp(c, **a))


def vm_trace_args(trace_file: Path) -> list[str]:
    return trace_args(trace_file)


def run_campaign(
    vm: Any, plans: Sequence[RangePlan], config: CampaignConfig, trace_path: Path, observer: Any = None
) -> CampaignResult:
    """One campaign as the VT test runs it (a logged-in session, a trace), with an optional observer."""
    session = vm.login(60)
    with TraceWriter(trace_path, {"benchmark": "coverage"}, plans) as writer:
        return Campaign(vm, plans, writer, config, session=session, observer=observer).run()
