"""The iofuzz test's params, read from the cartesian dict and checked once.

Every value is validated here so that a typo in a cfg or in
``--vt-extra-params`` ends the test with an error naming the param, before a
VM is started.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from avocado_iofuzz.ranges import DEFAULT_SKIP_PORTS, parse_extra_ranges, parse_port_spans
from avocado_iofuzz.shards import SHARD_PARAM, ShardError, parse_shard


class ParamError(ValueError):
    """A test param with a value we cannot use; the message names it."""


def _int(params: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    raw = str(params.get(key, "") or "").strip()
    if not raw:
        return default
    try:
        value = int(raw, 0)
    except ValueError:
        raise ParamError(f"param {key} = {raw!r}: not an integer") from None
    if value < minimum:
        raise ParamError(f"param {key} = {raw!r}: must be >= {minimum}")
    return value


def _float(params: Mapping[str, Any], key: str, default: float, minimum: float) -> float:
    raw = str(params.get(key, "") or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ParamError(f"param {key} = {raw!r}: not a number") from None
    if value <= minimum:
        raise ParamError(f"param {key} = {raw!r}: must be > {minimum}")
    return value


def _position(params: Mapping[str, Any], key: str) -> tuple[int, int] | None:
    raw = str(params.get(key, "") or "").strip()
    if not raw:
        return None
    try:
        range_index, op_index = (int(part, 0) for part in raw.split(":"))
    except ValueError:
        raise ParamError(f"param {key} = {raw!r}: expected RANGE_INDEX:OP_INDEX, e.g. 2:100") from None
    if range_index < 0 or op_index < 0:
        raise ParamError(f"param {key} = {raw!r}: indices must be >= 0")
    return range_index, op_index


def yes_no(params: Mapping[str, Any], key: str, default: bool, error: type[ValueError] = ParamError) -> bool:
    """A yes/no param (empty: ``default``); ``error`` is raised, naming the param, for anything else."""
    raw = str(params.get(key, "") or "").strip().lower()
    if not raw:
        return default
    if raw not in ("yes", "no"):
        raise error(f"param {key} = {raw!r}: expected yes or no")
    return raw == "yes"


def _shard(params: Mapping[str, Any]) -> str:
    try:
        return str(parse_shard(str(params.get(SHARD_PARAM, "") or "")))
    except ShardError as err:
        raise ParamError(str(err)) from None


@dataclass(frozen=True)
class IofuzzParams:
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

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> IofuzzParams:
        seed_text = str(params.get("fuzz_seed", "") or "").strip()
        seed = _int(params, "fuzz_seed", 0, 0) if seed_text else None
        if seed is not None and seed >= 2**64:
            raise ParamError(f"param fuzz_seed = {seed_text!r}: must fit in 64 bits")
        skip_ports = str(params.get("skip_ports", " ".join(DEFAULT_SKIP_PORTS)))
        extra = str(params.get("extra_ioports", "") or "")
        try:
            parse_port_spans(skip_ports, "skip_ports")
            parse_extra_ranges(extra)
        except ValueError as err:
            raise ParamError(f"param {err}") from None
        accel = str(params.get("iofuzz_accel", "auto") or "auto").strip()
        if accel not in ("auto", "kvm", "tcg"):
            raise ParamError(f"param iofuzz_accel = {accel!r}: expected auto, kvm or tcg")
        hang_status = str(params.get("hang_status", "warn") or "warn").strip()
        if hang_status not in ("pass", "warn", "fail"):
            raise ParamError(f"param hang_status = {hang_status!r}: expected pass, warn or fail")
        return cls(
            seed=seed,
            fuzz_count=_int(params, "fuzz_count", 100000, 0),
            skip_devices=str(params.get("skip_devices", "") or ""),
            skip_ports=skip_ports,
            extra_ioports=extra,
            only_devices=str(params.get("only_devices", "") or ""),
            report_every=_int(params, "report_every", 16384, 1),
            hang_timeout=_float(params, "hang_timeout", 20.0, 0.0),
            max_hangs=_int(params, "max_hangs", 10, 1),
            hang_status=hang_status,
            login_timeout=_float(params, "login_timeout", 60.0, 0.0),
            accel=accel,
            guest=str(params.get("iofuzz_guest", "busybox") or "busybox").strip(),
            kernel=str(params.get("iofuzz_kernel", "") or "").strip(),
            debug_hang_at=_position(params, "iofuzz_debug_hang_at"),
            progress_interval=_float(params, "iofuzz_progress_interval", 5.0, 0.0),
            plot=yes_no(params, "iofuzz_plot", True),
            shard=_shard(params),
        )
