"""The body of the ``iofuzz`` VT test: params -> guest -> ranges -> campaign -> verdict.

``tests/iofuzz.py`` keeps avocado-vt's classic ``run(test, params, env)`` and
calls :func:`run_iofuzz`; everything here uses avocado-vt's own machinery
(``env_process.preprocess_vm``, ``qemu_vm``, serial login over aexpect).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from virttest import env_process

from avocado_iofuzz.campaign.guest_access import check_access, read_listings
from avocado_iofuzz.campaign.runner import Campaign, CampaignConfig, CampaignError
from avocado_iofuzz.campaign.trace import TraceWriter
from avocado_iofuzz.executor.protocol import DEFAULT_BINARY
from avocado_iofuzz.model.kinds import (
    AccessRefused,
    KindParams,
    choose_targets,
    plan_kinds,
    renumber,
)
from avocado_iofuzz.model.pci import PCI_LISTING_COMMAND
from avocado_iofuzz.model.program import new_seed
from avocado_iofuzz.model.ranges import (
    RangeError,
    check_skip_devices,
    fuzz_targets,
    parse_extra_ranges,
    parse_name_list,
)
from avocado_iofuzz.model.shards import parse_shard, shard_ranges
from avocado_iofuzz.repro.vt_triage import (
    TriageParamError,
    TriageParams,
    fail_reason,
    header_extras,
    run_replay,
    triage_finding,
)
from avocado_iofuzz.results.report import (
    PICTURE_NAME,
    SUMMARY_NAME,
    build_summary,
    summary_table,
    whiteboard_line,
    write_summary,
)
from avocado_iofuzz.vm.image import (
    GuestLoginFailed,
    GuestNotMarked,
    ImageGuest,
    ImageGuestParams,
    apply_image_params,
    session_devices,
)
from avocado_iofuzz.vm.qom import (
    PERIPHERAL_CONTAINERS,
    avocado_vt_qmp,
    machine_type,
    missing_devices,
    parse_device_list,
    peripheral_types,
)
from avocado_iofuzz.vm.vt import VtGuest
from avocado_iofuzz.vt.compat import run_qemu_probes_under_bash
from avocado_iofuzz.vt.coverage import prepare_coverage
from avocado_iofuzz.vt.iofuzz_params import IofuzzParams, ParamError, check_hang_at

LOG = logging.getLogger("avocado.test.iofuzz")


def start_embedded_vm(test: Any, params: Any, env: Any, settings: IofuzzParams) -> tuple[Any, str, str]:
    """Build (or reuse) the embedded guest, pick the accelerator, start the VM.

    Returns (vm, accelerator, why that accelerator).
    """
    from avocado_iofuzz.guest.build import build_guest, default_guest  # heavy: apt, cpio

    qemu = shutil.which(params.get("qemu_binary", "qemu-system-x86_64")) or params.get("qemu_binary")
    params["qemu_binary"] = qemu
    kernel = Path(settings.kernel) if settings.kernel else None
    if settings.guest == "image":
        guest = None  # the user's image: apply_image_params() set its params already
    elif settings.guest == "busybox":
        guest = default_guest(kernel=kernel)  # busybox with our executor baked in
    else:
        guest = build_guest(settings.guest, kernel=kernel)
    if settings.accel == "auto":
        from avocado_iofuzz.guest.accel import probe_accelerator

        choice = probe_accelerator(qemu)
        accel, reason = choice.name, choice.reason
    else:
        accel, reason = settings.accel, "forced by param iofuzz_accel"
    LOG.info("accelerator: %s (%s)", accel, reason)
    vm_name = params["main_vm"]
    params["vm_accelerator"] = accel
    if guest is not None:
        params["kernel"] = str(guest.kernel)
        params["initrd"] = str(guest.initrd)
        # extra words (lockdown=, iomem=strict...) for the embedded guest's kernel
        extra = str(params.get("iofuzz_extra_kernel_params", "") or "").strip()
        params["kernel_params"] = f"{guest.kernel_params} {extra}".strip()
        params["shell_prompt"] = guest.shell_prompt
    append_extra_qemu_args(params)
    params["start_vm"] = "yes"
    run_qemu_probes_under_bash()
    env_process.preprocess_vm(test, params.object_params(vm_name), env, vm_name)
    vm = env.get_vm(vm_name)
    vm.verify_alive()
    return vm, accel, reason


def append_extra_qemu_args(params: Any) -> None:
    """Put ``iofuzz_extra_qemu_args`` after the row's own ``extra_params``.

    A user's ``--vt-extra-params extra_params=...`` replaces the row's value,
    device included (cartesian assignments replace); this param only adds.
    """
    extra = str(params.get("iofuzz_extra_qemu_args", "") or "").strip()
    if extra:
        params["extra_params"] = f"{params.get('extra_params', '') or ''} {extra}".strip()


def check_row_devices(test: Any, vm: Any, params: Any) -> None:
    """ERROR unless QEMU really has the devices the row fuzzes (``iofuzz_devices``), asked through QOM."""
    qmp = avocado_vt_qmp(vm.monitor)
    present = peripheral_types(qmp)
    LOG.info("QEMU machine (QOM /machine type): %s", machine_type(qmp))
    LOG.info("QEMU devices (QOM %s): %s", " and ".join(PERIPHERAL_CONTAINERS), ", ".join(present) or "none")
    missing = missing_devices(parse_device_list(str(params.get("iofuzz_devices", "") or "")), present)
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


def _executor_binary() -> Path:
    """The static in-guest executor, built (or taken from the cache) for copying into an image."""
    from avocado_iofuzz.executor.build import build_executor
    from avocado_iofuzz.guest.cache import resolve_cache_root

    executor_dir = resolve_cache_root(None) / "executor"
    executor_dir.mkdir(parents=True, exist_ok=True)
    return build_executor(executor_dir)


def run_iofuzz(test: Any, params: Any, env: Any) -> None:
    try:
        settings = IofuzzParams.from_params(params)
        kinds = KindParams.from_params(params)
        image = ImageGuestParams.from_params(params) if settings.guest == "image" else None
        triage_params = TriageParams.from_params(params)
    except (ParamError, TriageParamError) as err:
        test.error(str(err))
    user_skip_devices = settings.skip_devices  # the names to check against the guest's listing
    if image is not None:
        settings, kinds = spare_session_devices(session_devices(image), settings, kinds)
    outdir = Path(test.outputdir)
    seed = settings.seed if settings.seed is not None else new_seed()
    LOG.info("fuzz_seed = %d (rerun with --vt-extra-params fuzz_seed=%d)", seed, seed)
    # the seed goes to disk before anything can go wrong
    (outdir / "seed").write_text(f"{seed}\n", encoding="utf-8")

    ssh_port = apply_image_params(image, params) if image else 0
    coverage = prepare_coverage(params, env, outdir)  # device coverage: trace events (docs/user/coverage.rst)
    vm, accel, reason = start_embedded_vm(test, params, env, settings)
    check_row_devices(test, vm, params)
    if image is None:
        guest = VtGuest(vm, login_timeout=settings.login_timeout)
    else:
        guest = ImageGuest(vm, settings.login_timeout, image, ssh_port, _executor_binary())
    try:
        session = guest.login()
    except (GuestNotMarked, GuestLoginFailed) as err:
        test.error(str(err))
    executor = image.executor_path if image else DEFAULT_BINARY
    if triage_params.replay:
        # replay mode: re-execute a recorded finding in this VM instead of fuzzing
        run_replay(test, triage_params.replay, guest, outdir, settings, executor)
        return
    ioports = session.cmd_output("cat /proc/ioports")
    (outdir / "proc-ioports.txt").write_text(ioports, encoding="utf-8")
    try:
        # needs the guest's listing, so after boot; still before any fuzzing op
        check_skip_devices(ioports, user_skip_devices, settings.extra_ioports)
        targets = fuzz_targets(
            ioports,
            skip_devices=settings.skip_devices,
            skip_ports=settings.skip_ports,
            extra_ioports=settings.extra_ioports,
            only_devices=settings.only_devices,
        )
        # the kinds (fuzz_kinds) add MMIO and PCI config ranges from the guest's listings
        listings = read_listings(session, kinds, outdir)
        extra_names = [r.name for r in parse_extra_ranges(settings.extra_ioports)]
        plans = plan_kinds(seed, settings.fuzz_count, kinds, choose_targets(kinds, listings, targets, extra_names))
    except RangeError as err:
        test.error(f"cannot choose ranges: {err}")
    shard = parse_shard(settings.shard)
    if shard.count > 1:
        every = len(plans)
        plans = renumber(shard_ranges(plans, shard, weight=lambda p: p.op_count))
        LOG.info("shard %s: %d of %d ranges", shard, len(plans), every)
        if not plans:
            test.cancel(f"shard {shard} has no range to fuzz: only {every} ranges for {shard.count} shards")
    try:
        plans = check_access(session, plans, image.executor_path if image else DEFAULT_BINARY)
    except AccessRefused as err:
        test.cancel(str(err))
    except RuntimeError as err:
        test.error(str(err))
    try:
        check_hang_at(settings.debug_hang_at, plans)
    except ParamError as err:
        test.error(str(err))
    for plan in plans:
        LOG.info(
            "range %2d %-4s %#06x-%#06x %-24s %d-byte, %d ops",
            plan.index, plan.space, plan.start, plan.end, plan.name, plan.width, plan.op_count,
        )  # fmt: skip

    config = CampaignConfig(
        report_every=settings.report_every,
        hang_timeout=settings.hang_timeout,
        max_hangs=settings.max_hangs,
        login_timeout=settings.login_timeout,
        hang_at=settings.debug_hang_at,
        progress_log_interval=settings.progress_interval,
        **({"executor": image.executor_path} if image else {}),
    )
    trace_path = outdir / "trace.iofuzz"
    header = {
        "seed": seed,
        "fuzz_count": settings.fuzz_count,
        "accelerator": accel,
        "qemu_cmdline": guest.qemu_cmdline(),
        "machine_type": params.get("machine_type"),
        "guest": settings.guest,
        "ranges": [[p.start, p.end, p.name] for p in plans],
        # what a replay needs beyond the command line: the firmware's PCI setup, the fault injection
        **header_extras(
            listings.pci or session.cmd_output(PCI_LISTING_COMMAND, timeout=120),
            settings.debug_hang_at,
            settings.report_every,
        ),
    }
    with TraceWriter(trace_path, header) as trace:
        campaign = Campaign(guest, plans, trace, config, session=session, observer=coverage)
        try:
            result = campaign.run()
        except CampaignError as err:
            result = campaign.result
            _finish(test, outdir, seed, settings, accel, reason, plans, result, trace_path, guest, coverage)
            test.error(str(err))
    summary = _finish(test, outdir, seed, settings, accel, reason, plans, result, trace_path, guest, coverage)

    triage_args = (triage_params, guest, executor, settings.hang_timeout, settings.login_timeout)
    if result.crashed:
        crash = next(f for f in result.findings if f.kind == "crash")
        triaged = triage_finding(trace_path, outdir, "crash", *triage_args)
        _record_triage(outdir, summary, triaged)
        test.fail(
            f"{crash.detail} -- while fuzzing range {crash.range_name} ({crash.range_span}), "
            f"ops [{crash.window[0]}, {crash.window[1]}) of range index {crash.range_index}; "
            f"seed {seed}; trace {trace_path}{fail_reason(triaged)}"
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
    LOG.info("done: %d ops, seed %d", summary and result.total_done, seed)


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


def _finish(test, outdir, seed, settings, accel, reason, plans, result, trace_path, guest, coverage) -> dict[str, Any]:
    summary = build_summary(
        seed=seed,
        fuzz_count=settings.fuzz_count,
        accel=accel,
        accel_reason=reason,
        plans=plans,
        result=result,
        trace_path=trace_path,
        qemu_cmdline=guest.qemu_cmdline(),
        guest=settings.guest,
        shard=settings.shard,
        params=test.params,  # the variant and command-line params: each range's rerun command
    )
    summary["coverage"] = coverage.summary()
    write_summary(outdir / SUMMARY_NAME, summary)
    table = summary_table(summary)
    for line in table.splitlines():
        LOG.info("%s", line)
    # avocado keeps the whiteboard in results.json; its HTML report shows it per test
    test.whiteboard = whiteboard_line(summary)
    if settings.plot:
        try:
            from avocado_iofuzz.results.plotting import render_coverage  # matplotlib: imported only when drawing

            LOG.info("coverage picture: %s", render_coverage(summary, outdir / PICTURE_NAME))
        except Exception as err:  # a picture must never cost the run's verdict or its summary
            LOG.warning("could not draw %s: %s", PICTURE_NAME, err)
    return summary
