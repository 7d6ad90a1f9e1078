"""The iofuzz test's params, read from the cartesian dict once, at the test's entry.

:func:`read_iofuzz_run` reads every param the test uses into one typed record,
:class:`IofuzzRun`; its parts go down to the rooms that need them (the kinds to
the model, the image guest to the VM room, the triage params to repro/, the
rerun context to results/), and none of those rooms sees the dict. Each value
is validated here (see :mod:`avocado_iofuzz.vt.params`) so that a typo in a
cfg or in ``--vt-extra-params`` ends the test with an error naming the param,
before a VM is started. What needs the guest (range names, the ranges a debug
hang position points into) is checked by :func:`check_hang_at` and the range
readers after boot, before the first fuzzing op.

An empty value means the param's default (logged, so that a blank
``fuzz_count =`` is not silent); for list params (``skip_*``, ``only_*``,
``extra_*``) empty is the empty list.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avocado_iofuzz.guided.readback import DEFAULT_MODE as READBACK_DEFAULT
from avocado_iofuzz.guided.readback import MODES as READBACK_MODES
from avocado_iofuzz.guided.recipes import load as load_recipes
from avocado_iofuzz.model.dma import VALUE_MODES, VALUES_UNIFORM
from avocado_iofuzz.model.iomem import DEFAULT_MAX_SIZE, DEFAULT_SKIP_IOMEM, parse_address_spans, parse_extra_iomem
from avocado_iofuzz.model.kinds import KindParams
from avocado_iofuzz.model.layout_choice import LAYOUT_AUTO, LAYOUT_CHOICES
from avocado_iofuzz.model.pci import CONFIG_SPACE_SIZE, DEFAULT_CONFIG_HOLES, parse_config_holes
from avocado_iofuzz.model.port_widths import DEFAULT_PIO_WIDTHS
from avocado_iofuzz.model.program import (
    MAX_FUZZ_COUNT,
    MMIO_WIDTHS,
    PCI_WIDTHS,
    PIO_WIDTHS,
    SPACE_PIO,
    SPACES,
    RangePlan,
)
from avocado_iofuzz.model.ranges import DEFAULT_SKIP_PORTS, RangeError, parse_extra_ranges, parse_port_spans
from avocado_iofuzz.model.shards import Shard
from avocado_iofuzz.repro.vt_triage import TriageParams
from avocado_iofuzz.results.rerun import CMDLINE_PARAM, DEFAULT_REFERENCE, RerunContext
from avocado_iofuzz.vm.image import ImageGuestParams
from avocado_iofuzz.vm.qemu_output import QEMU_OUTPUT_FILE, QEMU_OUTPUT_MODES, QEMU_OUTPUT_PARAM
from avocado_iofuzz.vm.qom import parse_device_list
from avocado_iofuzz.vt.image_params import read_image_guest
from avocado_iofuzz.vt.params import (
    ACCELERATORS,
    ParamError,
    Params,
    VmChoice,
    choice,
    integer,
    number,
    read_shard,
    text,
    verbatim,
    words,
    yes_no,
)

__all__ = [
    "GuidedParams",
    "IofuzzParams",
    "IofuzzRun",
    "ParamError",
    "check_hang_at",
    "read_guided",
    "read_iofuzz_run",
    "read_kinds",
]

LOG = logging.getLogger("avocado.test.iofuzz")

# The executor keeps random writes per slot and the progress interval in
# 32 bits (iofuzz_exec.c: MAX_FUZZ_COUNT, MAX_REPORT_EVERY): with at most
# 2**32-1 writes per slot, even a 65536-port range's op indices stay far
# below the 2**62 its 64-bit generator counters allow.
FUZZ_COUNT_LIMIT = (
    MAX_FUZZ_COUNT,
    "the in-guest executor counts random writes per slot in 32 bits, which keeps op indices within its 64-bit counters",
)
REPORT_EVERY_LIMIT = (0xFFFFFFFF, "the in-guest executor's progress interval is a 32-bit count")
HANG_STATUSES = ("pass", "warn", "fail")
STRATEGIES = ("blind", "guided")
DEFAULT_STRATEGY = "blind"  # the measurements (docs/results/performance.rst, "Guided fuzzing") chose it


def _position(params: Params, key: str) -> tuple[int, int] | None:
    """``RANGE_INDEX:OP_INDEX`` (empty: None)."""
    raw = text(params, key)
    if not raw:
        return None
    try:
        range_index, op_index = (int(part, 0) for part in raw.split(":"))
    except ValueError:
        raise ParamError(f"param {key} = {raw!r}: expected RANGE_INDEX:OP_INDEX, e.g. 2:100") from None
    if range_index < 0 or op_index < 0:
        raise ParamError(f"param {key} = {raw!r}: indices must be >= 0")
    return range_index, op_index


def check_hang_at(position: tuple[int, int] | None, plans: Sequence[RangePlan]) -> None:
    """ParamError unless ``iofuzz_debug_hang_at`` points at an op of the run's ranges (known after boot)."""
    if position is None:
        return
    range_index, op_index = position
    where = f"param iofuzz_debug_hang_at = '{range_index}:{op_index}'"
    by_index = {plan.index: plan for plan in plans}
    if range_index not in by_index:
        raise ParamError(f"{where}: no range {range_index} in this run (its ranges are 0..{len(plans) - 1})")
    plan = by_index[range_index]
    if op_index >= plan.op_count:
        raise ParamError(f"{where}: range {range_index} ({plan.name}) has ops 0..{plan.op_count - 1} only")


def _seed(params: Params) -> int | None:
    """``fuzz_seed``: a 64-bit integer, or None (empty) for a fresh one."""
    raw = text(params, "fuzz_seed")
    if not raw:
        return None  # not a default to log: the seed drawn is logged with how to rerun it
    seed = integer(params, "fuzz_seed", 0, 0)
    if seed >= 2**64:
        raise ParamError(f"param fuzz_seed = {raw!r}: must fit in 64 bits")
    return seed


def _port_selection(params: Params) -> tuple[str, str]:
    """``skip_ports`` and ``extra_ioports``, syntax checked (the names they give are looked up after boot)."""
    skip_ports = verbatim(params, "skip_ports", " ".join(DEFAULT_SKIP_PORTS))
    extra = verbatim(params, "extra_ioports")
    try:
        parse_port_spans(skip_ports, "skip_ports")
        parse_extra_ranges(extra)
    except ValueError as err:
        raise ParamError(f"param {err}") from None
    return skip_ports, extra


@dataclass(frozen=True)
class IofuzzParams:
    """The fuzz settings: the pio kind's selection, the op budget, how the run is watched and judged."""

    seed: int | None
    fuzz_count: int
    skip_devices: str
    skip_ports: str
    extra_ioports: str
    only_devices: str
    report_every: int
    hang_timeout: float
    max_hangs: int
    hang_status: str
    login_timeout: float
    accel: str
    guest: str
    kernel: str
    debug_hang_at: tuple[int, int] | None
    progress_interval: float = 5.0
    plot: bool = True
    shard: str = ""
    values: str = VALUES_UNIFORM  # fuzz_values: where write values come from (model/dma.py)
    layout: str = LAYOUT_AUTO  # dma_layout: the scratch memory's layout (model/layout_choice.py)
    pci_restore: bool = True  # put each pci range's function header back when leaving it (model/pci_restore.py)
    qemu_output: str = QEMU_OUTPUT_FILE  # where QEMU's output lines go (vm/qemu_output.py; vt/startup.py applies it)

    @classmethod
    def from_params(cls, params: Params) -> IofuzzParams:
        skip_ports, extra_ioports = _port_selection(params)
        return cls(
            seed=_seed(params),
            fuzz_count=integer(params, "fuzz_count", 100000, 0, *FUZZ_COUNT_LIMIT),
            skip_devices=verbatim(params, "skip_devices"),
            skip_ports=skip_ports,
            extra_ioports=extra_ioports,
            only_devices=verbatim(params, "only_devices"),
            report_every=integer(params, "report_every", 16384, 1, *REPORT_EVERY_LIMIT),
            hang_timeout=number(params, "hang_timeout", 20.0),
            max_hangs=integer(params, "max_hangs", 10, 1),
            hang_status=choice(params, "hang_status", HANG_STATUSES, "warn"),
            login_timeout=number(params, "login_timeout", 60.0),
            accel=choice(params, "iofuzz_accel", ACCELERATORS, "auto"),
            guest=text(params, "iofuzz_guest", "busybox"),
            kernel=text(params, "iofuzz_kernel"),
            debug_hang_at=_position(params, "iofuzz_debug_hang_at"),
            progress_interval=number(params, "iofuzz_progress_interval", 5.0),
            plot=yes_no(params, "iofuzz_plot", True),
            shard=str(read_shard(params)),
            values=choice(params, "fuzz_values", VALUE_MODES, VALUES_UNIFORM),
            layout=choice(params, "dma_layout", LAYOUT_CHOICES, LAYOUT_AUTO),
            pci_restore=yes_no(params, "pci_restore", True),
            qemu_output=choice(params, QEMU_OUTPUT_PARAM, QEMU_OUTPUT_MODES, QEMU_OUTPUT_FILE),
        )


# --- the kinds (fuzz_kinds, pio_widths and the mmio and pci params) -------------------------


def read_kinds(params: Params) -> KindParams:
    """The kinds' record; the address syntax is checked here, what names match after boot."""
    kinds = KindParams(
        weights=parse_kinds(verbatim(params, "fuzz_kinds", SPACE_PIO)),
        pio_widths=_widths(verbatim(params, "pio_widths", _spelled(DEFAULT_PIO_WIDTHS)), "pio_widths", PIO_WIDTHS),
        skip_iomem=verbatim(params, "skip_iomem", ", ".join(DEFAULT_SKIP_IOMEM)),
        extra_iomem=verbatim(params, "extra_iomem"),
        only_iomem=verbatim(params, "only_iomem"),
        skip_mmio=verbatim(params, "skip_mmio"),
        mmio_widths=_widths(verbatim(params, "mmio_widths", "4"), "mmio_widths", MMIO_WIDTHS),
        mmio_max_size=_size(verbatim(params, "mmio_max_size"), "mmio_max_size", DEFAULT_MAX_SIZE),
        skip_pci=verbatim(params, "skip_pci"),
        only_pci=verbatim(params, "only_pci"),
        skip_pci_config=verbatim(params, "skip_pci_config", " ".join(DEFAULT_CONFIG_HOLES)),
        pci_widths=_widths(verbatim(params, "pci_widths", "4"), "pci_widths", PCI_WIDTHS),
        pci_config_size=_size(verbatim(params, "pci_config_size"), "pci_config_size", CONFIG_SPACE_SIZE),
    )
    try:
        parse_address_spans(kinds.skip_mmio, "skip_mmio")
        parse_extra_iomem(kinds.extra_iomem)
        parse_config_holes(kinds.skip_pci_config)
    except RangeError as err:
        raise ParamError(f"param {err}") from None
    return kinds


def parse_kinds(text: str) -> dict[str, int]:
    """``pio mmio:2 pci`` -> ``{"pio": 1, "mmio": 2, "pci": 1}``; ParamError names a bad item.

    Without any weight, every kind gets 0: no weighting (see kind_fuzz_counts).
    """
    weights: dict[str, int] = {}
    for token in re.split(r"[\s,]+", text.strip()):
        if not token:
            continue
        kind, sep, weight_text = token.partition(":")
        if kind not in SPACES:
            raise ParamError(f"param fuzz_kinds: unknown kind {kind!r} (expected {', '.join(SPACES)})")
        if kind in weights:
            raise ParamError(f"param fuzz_kinds: kind {kind!r} given twice")
        try:
            weight = int(weight_text) if sep else 1
        except ValueError:
            weight = 0
        if weight < 1:
            raise ParamError(f"param fuzz_kinds: {token!r}: the weight after ':' must be an integer >= 1")
        weights[kind] = weight
    if not weights:
        raise ParamError("param fuzz_kinds: empty (expected some of pio, mmio, pci)")
    if ":" not in text:
        return dict.fromkeys(weights, 0)
    return weights


def _spelled(widths: Sequence[int]) -> str:
    return " ".join(map(str, widths))


def _widths(text: str, key: str, allowed: Sequence[int]) -> tuple[int, ...]:
    widths = []
    for token in re.split(r"[\s,]+", text.strip()):
        if not token:
            continue
        if not token.isdigit() or int(token) not in allowed:
            raise ParamError(f"param {key}: {token!r} is not an access width in bytes ({', '.join(map(str, allowed))})")
        if int(token) not in widths:
            widths.append(int(token))
    if not widths:
        raise ParamError(f"param {key}: empty (expected some of {', '.join(map(str, allowed))})")
    return tuple(widths)


def _size(text: str, key: str, default: int) -> int:
    if not text.strip():
        return default
    try:
        return int(text.strip(), 0)
    except ValueError:
        raise ParamError(f"param {key} = {text!r}: not an integer (decimal, or hex with 0x)") from None


# --- the strategy: blind or guided ---------------------------------------------------------


@dataclass(frozen=True)
class GuidedParams:
    """``fuzz_strategy`` and what a guided run needs: its round size and where its corpus lives."""

    strategy: str = DEFAULT_STRATEGY
    round_ops: int = 200_000
    corpus_dir: str = ""  # empty: <avocado data_dir>/avocado-iofuzz
    readback: str = READBACK_DEFAULT  # which batches' read-backs become corpus features (guided/readback.py)
    recipes: bool = True  # round 0 runs the bring-up recipes that apply (avocado_iofuzz/guided/recipes.toml)
    # recipes left out by name: one that trips a QEMU bug already reported ends every run at that bug
    skip_recipes: tuple[str, ...] = ()


def read_guided(params: Params) -> GuidedParams:
    strategy = choice(params, "fuzz_strategy", STRATEGIES, DEFAULT_STRATEGY)
    if strategy == "guided" and text(params, "iofuzz_debug_hang_at"):
        raise ParamError(
            "param iofuzz_debug_hang_at works with fuzz_strategy = blind only (a guided run's ranges are its rounds' "
            "batches, not known before it runs)"
        )
    return GuidedParams(
        strategy=strategy,
        round_ops=integer(params, "guided_round_ops", 200_000, 1000),
        corpus_dir=text(params, "guided_corpus_dir"),
        readback=choice(params, "guided_readback", READBACK_MODES, READBACK_DEFAULT),
        recipes=yes_no(params, "guided_recipes", True),
        skip_recipes=words(
            params, "guided_recipes_skip", [r.name for r in load_recipes()], "", empty_ok=True, noun="recipe"
        ),
    )


# --- triage and the rerun commands ---------------------------------------------------------


def read_triage(params: Params) -> TriageParams:
    """What triage does after a finding (see :mod:`avocado_iofuzz.repro.vt_triage`), and replay mode."""
    replay = text(params, "iofuzz_replay")
    if replay:
        path = Path(replay).expanduser()
        if not path.is_file():
            raise ParamError(f"param iofuzz_replay = {replay!r}: no such file")
        replay = str(path.resolve())
    return TriageParams(
        minimize=yes_no(params, "minimize", True),
        minimize_hangs=yes_no(params, "minimize_hangs", False),
        budget=number(params, "minimize_budget", 300.0, strict=False, unit="seconds"),
        guest_budget=number(params, "minimize_guest_budget", 600.0, strict=False, unit="seconds"),
        replay=replay,
    )


def read_rerun_context(params: Params) -> RerunContext:
    """What each range's rerun command needs of the run; never raises: the summary that holds
    the reruns is written also after errors, so a problem becomes the context's ``problem``."""
    reference = text(params, "shortname", DEFAULT_REFERENCE)
    try:
        # every value here was checked before the run; only a broken resolver record can fail
        kinds = read_kinds(params)
        shard = read_shard(params)
        cmdline = parse_cmdline_record(params.get(CMDLINE_PARAM))
        hang_at = _position(params, "iofuzz_debug_hang_at")
    except ValueError as err:
        return RerunContext(reference=reference, problem=f"the run's params cannot be read back: {err}")
    # expand_shards named each shard test <variant>.shardKofN: the variant itself is the part before
    if shard.count > 1 and reference.endswith(f".{shard.label}"):
        reference = reference[: -len(shard.label) - 1]
    return RerunContext(
        reference=reference,
        shard=str(shard),
        cmdline=cmdline,
        pio_widths=kinds.pio_widths,
        mmio_widths=kinds.mmio_widths,
        pci_config_size=kinds.pci_config_size,
        hang_at=hang_at,
    )


def parse_cmdline_record(record: Any) -> tuple[tuple[str, str], ...]:
    """The resolver's :data:`CMDLINE_PARAM` (a JSON ``[[key, value], ...]``) as pairs, in order."""
    if not record:
        return ()
    try:
        pairs = json.loads(str(record))
        return tuple((str(key), str(value)) for key, value in pairs)
    except (ValueError, TypeError):
        raise ParamError(f"param {CMDLINE_PARAM} = {record!r}: not the resolver's [[key, value], ...] record") from None


# --- the whole run -------------------------------------------------------------------------


@dataclass(frozen=True)
class IofuzzRun:
    """Every param of one iofuzz test, read and checked: the parts go to the rooms that use them."""

    fuzz: IofuzzParams
    kinds: KindParams
    shard: Shard
    vm: VmChoice
    image: ImageGuestParams | None  # guest_os image only
    triage: TriageParams
    rerun: RerunContext
    devices: tuple[str, ...]  # iofuzz_devices: what the row's QEMU must have (QOM type names)
    machine_type: str | None  # avocado-vt's, recorded in the trace header
    guided: GuidedParams = GuidedParams()


def read_iofuzz_run(params: Params) -> IofuzzRun:
    """All the iofuzz test's params; ParamError names the first one that cannot be used."""
    fuzz = IofuzzParams.from_params(params)
    machine = params.get("machine_type")
    return IofuzzRun(
        fuzz=fuzz,
        kinds=read_kinds(params),
        shard=read_shard(params),
        vm=VmChoice(
            guest=fuzz.guest,
            kernel=fuzz.kernel,
            accel=fuzz.accel,
            extra_kernel_params=text(params, "iofuzz_extra_kernel_params"),
        ),
        image=read_image_guest(params) if fuzz.guest == "image" else None,
        triage=read_triage(params),
        rerun=read_rerun_context(params),
        devices=tuple(parse_device_list(text(params, "iofuzz_devices"))),
        machine_type=None if machine is None else str(machine),
        guided=read_guided(params),
    )
