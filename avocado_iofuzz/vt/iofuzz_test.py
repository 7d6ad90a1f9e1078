"""The body of the ``iofuzz`` VT test, in named steps like :mod:`avocado_iofuzz.repro.pipeline`.

params -> boot -> plan -> access check -> campaign -> summary -> triage/verdict.
``tests/iofuzz_vt.py`` keeps avocado-vt's classic ``run(test, params, env)`` and
calls :func:`run_iofuzz`; everything here uses avocado-vt's own machinery
(``env_process.preprocess_vm``, ``qemu_vm``, serial login over aexpect). The
params are read once, at the first step, into an :class:`IofuzzRun`; the steps
below hand its parts to the rooms that need them, and pass on what they
found in small records (:class:`Booted`, :class:`Outcome`).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from virttest import env_process, utils_logfile

from avocado_iofuzz.campaign.guest_access import check_access, read_listings, scratch_reserved
from avocado_iofuzz.campaign.runner import Campaign, CampaignConfig, CampaignError, CampaignResult
from avocado_iofuzz.campaign.trace import TraceWriter, scratch_header
from avocado_iofuzz.executor.protocol import DEFAULT_BINARY
from avocado_iofuzz.model.dma import VALUES_DMA, VALUES_UNIFORM
from avocado_iofuzz.model.kinds import AccessRefused, KindParams, Listings, choose_targets, plan_kinds, renumber
from avocado_iofuzz.model.layout_choice import choose_layouts, pci_functions
from avocado_iofuzz.model.pci import PCI_LISTING_COMMAND, PciFunction
from avocado_iofuzz.model.program import RangePlan, new_seed
from avocado_iofuzz.model.ranges import (
    RangeError,
    check_skip_devices,
    fuzz_targets,
    parse_extra_ranges,
    parse_name_list,
)
from avocado_iofuzz.model.shards import shard_ranges
from avocado_iofuzz.repro.vt_triage import fail_reason, header_extras, run_replay, triage_finding
from avocado_iofuzz.results.report import (
    PICTURE_NAME,
    SUMMARY_NAME,
    build_summary,
    summary_table,
    whiteboard_line,
    write_summary,
)
from avocado_iofuzz.results.rerun import RerunContext
from avocado_iofuzz.vm.image import GuestLoginFailed, GuestNotMarked, ImageGuest, SshLog, session_devices
from avocado_iofuzz.vm.process_guard import TimeUp
from avocado_iofuzz.vm.qom import PERIPHERAL_CONTAINERS, avocado_vt_qmp, machine_type, missing_devices, peripheral_types
from avocado_iofuzz.vm.vt import VtGuest
from avocado_iofuzz.vt.compat import run_qemu_probes_under_bash
from avocado_iofuzz.vt.coverage import prepare_coverage
from avocado_iofuzz.vt.guided_step import fuzz_guided, guided_wanted
from avocado_iofuzz.vt.image_params import apply_image_params
from avocado_iofuzz.vt.iofuzz_params import IofuzzParams, IofuzzRun, check_hang_at, read_iofuzz_run
from avocado_iofuzz.vt.params import ParamError, VmChoice

LOG = logging.getLogger("avocado.test.iofuzz")


def start_embedded_vm(test: Any, params: Any, env: Any, choice: VmChoice) -> tuple[Any, str, str]:
    """Build (or reuse) the embedded guest, pick the accelerator, start the VM.

    ``params`` is avocado-vt's dict: the guest's kernel, initrd and prompt go
    into it for ``preprocess_vm``. Returns (vm, accelerator, why that accelerator).
    """
    qemu = shutil.which(params.get("qemu_binary", "qemu-system-x86_64")) or params.get("qemu_binary")
    params["qemu_binary"] = qemu
    guest = _embedded_guest(choice)
    accel, reason = _accelerator(choice, qemu)
    LOG.info("accelerator: %s (%s)", accel, reason)
    vm_name = params["main_vm"]
    params["vm_accelerator"] = accel
    if guest is not None:
        params["kernel"] = str(guest.kernel)
        params["initrd"] = str(guest.initrd)
        # extra words (lockdown=, iomem=strict...) for the embedded guest's kernel
        params["kernel_params"] = f"{guest.kernel_params} {choice.extra_kernel_params}".strip()
        params["shell_prompt"] = guest.shell_prompt
    append_extra_qemu_args(params)
    params["start_vm"] = "yes"
    run_qemu_probes_under_bash()
    env_process.preprocess_vm(test, params.object_params(vm_name), env, vm_name)
    vm = env.get_vm(vm_name)
    vm.verify_alive()
    return vm, accel, reason


def _embedded_guest(choice: VmChoice) -> Any:
    """The embedded guest's artifacts (kernel, initrd, prompt), or None for the user's image."""
    from avocado_iofuzz.guest.build import build_guest, default_guest  # heavy: apt, cpio

    kernel = Path(choice.kernel) if choice.kernel else None
    if choice.guest == "image":
        return None  # the user's image: apply_image_params() set its params already
    if choice.guest == "busybox":
        return default_guest(kernel=kernel)  # busybox with our executor baked in
    return build_guest(choice.guest, kernel=kernel)


def _accelerator(choice: VmChoice, qemu: str) -> tuple[str, str]:
    """(accelerator, why): probed for ``auto``, else as the param forced it."""
    if choice.accel != "auto":
        return choice.accel, "forced by param iofuzz_accel"
    from avocado_iofuzz.guest.accel import probe_accelerator

    probed = probe_accelerator(qemu)
    return probed.name, probed.reason


def append_extra_qemu_args(params: Any) -> None:
    """Put ``iofuzz_extra_qemu_args`` after the row's own ``extra_params``.

    A user's ``--vt-extra-params extra_params=...`` replaces the row's value,
    device included (cartesian assignments replace); this param only adds.
    """
    extra = str(params.get("iofuzz_extra_qemu_args", "") or "").strip()
    if extra:
        params["extra_params"] = f"{params.get('extra_params', '') or ''} {extra}".strip()


def check_row_devices(test: Any, vm: Any, devices: Sequence[str]) -> None:
    """ERROR unless QEMU really has the devices the row fuzzes (``iofuzz_devices``), asked through QOM."""
    qmp = avocado_vt_qmp(vm.monitor)
    present = peripheral_types(qmp)
    LOG.info("QEMU machine (QOM /machine type): %s", machine_type(qmp))
    LOG.info("QEMU devices (QOM %s): %s", " and ".join(PERIPHERAL_CONTAINERS), ", ".join(present) or "none")
    missing = missing_devices(list(devices), present)
    if missing:
        test.error(
            f"QEMU lacks the device(s) this row fuzzes: {', '.join(missing)} (QOM lists: "
            f"{', '.join(present) or 'no -device at all'}); was the row's extra_params replaced "
            "(--vt-extra-params extra_params=...)? Add QEMU arguments with iofuzz_extra_qemu_args instead"
        )


def spare_session_devices(
    devices: tuple[str, ...], settings: IofuzzParams, kinds: KindParams
) -> tuple[IofuzzParams, KindParams]:
    """``settings`` and ``kinds`` with ``devices`` added to what every kind skips (ports, MMIO, PCI config)."""
    if not devices:
        return settings, kinds
    LOG.info("not fuzzed: %s, the guest's session runs through it", ", ".join(devices))

    def plus(names: str) -> str:
        return ", ".join([*parse_name_list(names), *devices])

    return (
        replace(settings, skip_devices=plus(settings.skip_devices)),
        replace(kinds, skip_iomem=plus(kinds.skip_iomem), skip_pci=plus(kinds.skip_pci)),
    )


def _ssh_log(vm_name: str) -> SshLog:
    """One SSH session log per VM in the test's log dir, like avocado-vt's serial-*.log; each login appends."""
    return SshLog(utils_logfile.get_log_filename(f"ssh-{vm_name}.log"), utils_logfile.log_line)


def _executor_binary() -> Path:
    """The static in-guest executor, built (or taken from the cache) for copying into an image."""
    from avocado_iofuzz.executor.build import build_executor
    from avocado_iofuzz.guest.cache import resolve_cache_root

    executor_dir = resolve_cache_root(None) / "executor"
    executor_dir.mkdir(parents=True, exist_ok=True)
    return build_executor(executor_dir)


# --- the steps -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Booted:
    """What the boot step hands on: the logged-in guest and how its VM runs."""

    guest: Any  # VtGuest or ImageGuest
    session: Any  # the shell the campaign starts in
    accel: str
    reason: str  # why that accelerator
    executor: str  # the executor's path in the guest
    coverage: Any  # the run's trace-event coverage (coverage.run.RunCoverage)


@dataclass(frozen=True)
class Outcome:
    """What the summary is written from, after the campaign (or what it did before it failed)."""

    seed: int
    settings: IofuzzParams
    rerun: RerunContext
    accel: str
    reason: str
    plans: Sequence[RangePlan]
    result: CampaignResult
    trace_path: Path
    guest: Any
    coverage: Any
    guided: dict[str, Any] | None = None  # a guided run's rounds and corpus (fuzz_strategy = guided)
    guided_coverage_by_range: list[dict[str, Any]] | None = None
    interrupted: str = ""  # the test's time limit (iofuzz_test_timeout) cut the campaign: why


def run_iofuzz(test: Any, params: Any, env: Any) -> None:
    """The iofuzz test: each step ends the test itself (ERROR, CANCEL, FAIL) when the run cannot go on."""
    run = read_params(test, params)
    outdir = Path(test.outputdir)
    seed = record_seed(run.fuzz, outdir)
    booted = boot(test, params, env, run)
    if run.triage.replay:
        # replay mode: re-execute a recorded finding in this VM instead of fuzzing
        run_replay(test, run.triage.replay, booted.guest, outdir, run.fuzz, booted.executor)
        return
    plans, listings = plan_ranges(test, run, booted, seed, outdir)
    plans = check_ranges(test, run, booted, plans)
    outcome = fuzz(test, run, booted, seed, plans, listings, outdir)
    summary = finish(test, outcome)
    judge(test, run, booted, outcome, summary)


def read_params(test: Any, params: Any) -> IofuzzRun:
    """Every param, read and checked before anything boots (ERROR naming a bad one)."""
    try:
        return read_iofuzz_run(params)
    except ParamError as err:
        test.error(str(err))
        raise  # test.error raises; this keeps the type checker and a fake test honest


def record_seed(settings: IofuzzParams, outdir: Path) -> int:
    """The run's seed (the param's, or a fresh one), logged and written to disk before anything can go wrong."""
    seed = settings.seed if settings.seed is not None else new_seed()
    LOG.info("fuzz_seed = %d (rerun with --vt-extra-params fuzz_seed=%d)", seed, seed)
    (outdir / "seed").write_text(f"{seed}\n", encoding="utf-8")
    return seed


def boot(test: Any, params: Any, env: Any, run: IofuzzRun) -> Booted:
    """Start the VM (the embedded guest or the user's image), check its devices, log in."""
    ssh_port = apply_image_params(run.image, params) if run.image else 0
    # device coverage from QEMU's trace events (docs/user/coverage.rst): its -trace args go in before the start
    coverage = prepare_coverage(params, env, Path(test.outputdir))
    vm, accel, reason = start_embedded_vm(test, params, env, run.vm)
    check_row_devices(test, vm, run.devices)
    if run.image is None:
        guest: Any = VtGuest(vm, login_timeout=run.fuzz.login_timeout)
    else:
        guest = ImageGuest(vm, run.fuzz.login_timeout, run.image, ssh_port, _executor_binary(), _ssh_log(vm.name))
    try:
        session = guest.login()
    except (GuestNotMarked, GuestLoginFailed) as err:
        test.error(str(err))
    executor = run.image.executor_path if run.image else DEFAULT_BINARY
    return Booted(guest, session, accel, reason, executor, coverage)


def plan_ranges(test: Any, run: IofuzzRun, booted: Booted, seed: int, outdir: Path) -> tuple[list[RangePlan], Listings]:
    """The ranges of every kind from the guest's listings, then this shard's share (CANCEL if none)."""
    settings, kinds = run.fuzz, run.kinds
    if run.image is not None:
        settings, kinds = spare_session_devices(session_devices(run.image), settings, kinds)
    ioports = booted.session.cmd_output("cat /proc/ioports")
    (outdir / "proc-ioports.txt").write_text(ioports, encoding="utf-8")
    try:
        # needs the guest's listing, so after boot; still before any fuzzing op; the user's names only
        check_skip_devices(ioports, run.fuzz.skip_devices, settings.extra_ioports)
        targets = fuzz_targets(
            ioports,
            skip_devices=settings.skip_devices,
            skip_ports=settings.skip_ports,
            extra_ioports=settings.extra_ioports,
            only_devices=settings.only_devices,
        )
        # the kinds (fuzz_kinds) add MMIO and PCI config ranges from the guest's listings
        listings = read_listings(booted.session, kinds, outdir)
        extra_names = [r.name for r in parse_extra_ranges(settings.extra_ioports)]
        plans = plan_kinds(seed, settings.fuzz_count, kinds, choose_targets(kinds, listings, targets, extra_names))
        plans = [replace(plan, values=run.fuzz.values) for plan in plans]  # fuzz_values
        plans = choose_layouts(plans, pci_functions(listings.pci), run.fuzz.layout)  # dma_layout
    except RangeError as err:
        test.error(f"cannot choose ranges: {err}")
    shard = run.shard
    if shard.count > 1:
        every = len(plans)
        plans = renumber(shard_ranges(plans, shard, weight=lambda p: p.op_count))
        LOG.info("shard %s: %d of %d ranges", shard, len(plans), every)
        if not plans:
            test.cancel(f"shard {shard} has no range to fuzz: only {every} ranges for {shard.count} shards")
    return plans, listings


def check_ranges(test: Any, run: IofuzzRun, booted: Booted, plans: list[RangePlan]) -> list[RangePlan]:
    """The ranges the guest's kernel lets the executor reach (CANCEL if a kind is left with none),
    with the debug hang position checked against them; each is logged."""
    try:
        plans = check_access(booted.session, plans, booted.executor)
    except AccessRefused as err:
        test.cancel(str(err))
    except RuntimeError as err:
        test.error(str(err))
    try:
        check_hang_at(run.fuzz.debug_hang_at, plans)
    except ParamError as err:
        test.error(str(err))
    for plan in plans:
        LOG.info(
            "range %2d %-4s %#06x-%#06x %-24s %d-byte, %d ops, %s values%s",
            plan.index, plan.space, plan.start, plan.end, plan.name, plan.width, plan.op_count, plan.values,
            f" ({plan.layout} scratch layout)" if plan.values == VALUES_DMA else "",
        )  # fmt: skip
    return plans


def fuzz(
    test: Any, run: IofuzzRun, booted: Booted, seed: int, plans: list[RangePlan], listings: Listings, outdir: Path
) -> Outcome:
    """The campaign, traced ahead of execution; if it cannot go on, the summary is written and the test ERRORs."""
    settings = run.fuzz
    config = CampaignConfig(
        report_every=settings.report_every,
        hang_timeout=settings.hang_timeout,
        max_hangs=settings.max_hangs,
        login_timeout=settings.login_timeout,
        hang_at=settings.debug_hang_at,
        progress_log_interval=settings.progress_interval,
        executor=booted.executor,
        pci_restore=settings.pci_restore,
    )
    trace_path = outdir / "trace.iofuzz"
    pci_listing = listings.pci or booted.session.cmd_output(PCI_LISTING_COMMAND, timeout=120)
    header = {
        "seed": seed,
        "fuzz_count": settings.fuzz_count,
        "accelerator": booted.accel,
        "qemu_cmdline": booted.guest.qemu_cmdline(),
        "machine_type": run.machine_type,
        "guest": settings.guest,
        "ranges": [[p.start, p.end, p.name] for p in plans],
        # what a replay needs beyond the command line: the firmware's PCI setup, the fault injection
        **header_extras(
            pci_listing,
            settings.debug_hang_at,
            settings.report_every,
        ),
    }

    def outcome(result: CampaignResult) -> Outcome:
        return Outcome(
            seed, settings, run.rerun, booted.accel, booted.reason, plans, result, trace_path, booted.guest,
            booted.coverage,
        )  # fmt: skip

    if any(plan.values != VALUES_UNIFORM for plan in plans):
        header["scratch"] = scratch_header()  # where the fills of the DMA-aware ranges went
    if guided_wanted(run, booted.coverage):
        return _fuzz_guided(test, run, booted, seed, plans, trace_path, header, config, pci_functions(pci_listing))
    with TraceWriter(trace_path, header) as trace:
        campaign = Campaign(booted.guest, plans, trace, config, session=booted.session, observer=booted.coverage)
        try:
            return outcome(campaign.run())
        except CampaignError as err:
            finish(test, outcome(campaign.result))
            test.error(str(err))
            raise  # test.error raises; this keeps the type checker and a fake test honest
        except TimeUp as up:
            # the test's time is up: what the campaign did goes into summary.json before the test ends
            # INTERRUPTED (the trace has it already); guard.py turns TimeUp into the verdict
            finish(test, replace(outcome(campaign.result), interrupted=str(up)))
            raise


def _fuzz_guided(
    test: Any, run: IofuzzRun, booted: Booted, seed: int, plans: list[RangePlan], trace_path: Path,
    header: dict[str, Any], config: CampaignConfig, functions: Sequence[PciFunction],
) -> Outcome:  # fmt: skip
    """fuzz() for ``fuzz_strategy = guided``: the Outcome's ranges are the batches of every round."""
    settings = run.fuzz
    # the recipes fill the scratch memory in a uniform run too: asked only when they may run
    scratch = run.guided.recipes and scratch_reserved(booted.session, plans, booted.executor)
    if scratch:
        header = {**header, "scratch": scratch_header()}
    with TraceWriter(trace_path, {**header, "fuzz_strategy": "guided"}) as trace:
        guided = fuzz_guided(
            run, booted.guest, booted.session, booted.coverage, seed, plans, trace, config, functions, scratch
        )
    # a batch reruns as a blind run of that one stretch: same seed, bounds, width and count, hence the same ops
    # (a program's step, fuzz-only or fixed, gets a note pointing to the trace replay instead: results/rerun.py)
    rerun = replace(run.rerun, cmdline=(*run.rerun.cmdline, ("fuzz_strategy", "blind")))
    outcome = Outcome(
        seed, settings, rerun, booted.accel, booted.reason, guided.plans, guided.result, trace_path, booted.guest,
        booted.coverage, guided.summary, guided.coverage_by_range,
    )  # fmt: skip
    if guided.interrupted:
        finish(test, replace(outcome, interrupted=guided.interrupted))
        raise TimeUp(guided.interrupted)
    if guided.error:
        finish(test, outcome)
        test.error(guided.error)
    return outcome


def finish(test: Any, outcome: Outcome) -> dict[str, Any]:
    """summary.json, its table in the log, the whiteboard and (``iofuzz_plot``) the coverage picture."""
    outdir = Path(test.outputdir)
    settings = outcome.settings
    summary = build_summary(
        seed=outcome.seed,
        fuzz_count=settings.fuzz_count,
        accel=outcome.accel,
        accel_reason=outcome.reason,
        plans=outcome.plans,
        result=outcome.result,
        trace_path=outcome.trace_path,
        qemu_cmdline=outcome.guest.qemu_cmdline(),
        guest=settings.guest,
        shard=settings.shard,
        rerun_context=outcome.rerun,  # the variant and command-line params: each range's rerun command
    )
    summary["coverage"] = outcome.coverage.summary()
    summary["fuzz_strategy"] = "guided" if outcome.guided is not None else "blind"
    if outcome.interrupted:
        summary["interrupted"] = outcome.interrupted
    if outcome.guided is not None:
        summary["guided"] = outcome.guided
        if summary["coverage"].get("enabled") and outcome.guided_coverage_by_range is not None:
            summary["coverage"]["by_range"] = outcome.guided_coverage_by_range
    write_summary(outdir / SUMMARY_NAME, summary)
    table = summary_table(summary)
    for line in table.splitlines():
        LOG.info("%s", line)
    # avocado keeps the whiteboard in results.json; its HTML report shows it per test
    test.whiteboard = whiteboard_line(summary)
    if settings.plot:
        _draw_coverage(summary, outdir)
    return summary


def _draw_coverage(summary: dict[str, Any], outdir: Path) -> None:
    try:
        from avocado_iofuzz.results.plotting import render_coverage  # matplotlib: imported only when drawing

        LOG.info("coverage picture: %s", render_coverage(summary, outdir / PICTURE_NAME))
    except Exception as err:  # a picture must never cost the run's verdict or its summary
        LOG.warning("could not draw %s: %s", PICTURE_NAME, err)


def judge(test: Any, run: IofuzzRun, booted: Booted, outcome: Outcome, summary: dict[str, Any]) -> None:
    """Triage a crash (FAIL) or a hang, then the verdict on hangs and reboots (``hang_status``)."""
    outdir = Path(test.outputdir)
    settings, result, trace_path = run.fuzz, outcome.result, outcome.trace_path
    triage_args = (run.triage, booted.guest, booted.executor, settings.hang_timeout, settings.login_timeout)
    if result.crashed:
        crash = next(f for f in result.findings if f.kind == "crash")
        triaged = triage_finding(trace_path, outdir, "crash", *triage_args)
        _record_triage(outdir, summary, triaged)
        test.fail(
            f"{crash.detail} -- while fuzzing range {crash.range_name} ({crash.range_span}), "
            f"ops [{crash.window[0]}, {crash.window[1]}) of range index {crash.range_index}; "
            f"seed {outcome.seed}; trace {trace_path}{fail_reason(triaged)}"
        )
    hangs = [f for f in result.findings if f.kind in ("hang", "reboot")]
    if any(f.kind == "hang" for f in hangs):
        _record_triage(outdir, summary, triage_finding(trace_path, outdir, "hang", *triage_args))
    if hangs:
        message = f"{len(hangs)} guest hang(s)/reboot(s): " + "; ".join(
            f"{f.kind} in {f.range_name} ops [{f.window[0]}, {f.window[1]})"
            + (f" at op {f.op}" if f.op is not None else "")
            for f in hangs
        )
        if settings.hang_status == "fail":
            test.fail(message)
        if settings.hang_status == "warn":
            LOG.warning(message)
            from avocado.core import exceptions

            raise exceptions.TestWarn(message)
    LOG.info("done: %d ops, seed %d", summary and result.total_done, outcome.seed)


def _record_triage(outdir: Path, summary: dict[str, Any], triaged: Any) -> None:
    """Point summary.json at the reproducer files (it was written before triage ran)."""
    if triaged is None:
        return
    summary.setdefault("triage", []).append(
        {
            "finding": triaged.finding,
            "reproduced": triaged.reproduced,
            "method": triaged.method,
            "ops_before": triaged.original_ops,
            "ops_after": len(triaged.ops),
            "command": triaged.command,
            "files": dict(triaged.files),
            "summary": triaged.summary(),
        }
    )
    write_summary(outdir / SUMMARY_NAME, summary)
