"""The sockstates test's params, read from the cartesian dict and checked before anything boots.

Each value maps to an option of the ``sockstates`` CLI, which runs in the
Debian guest (or on the host, ``sockstates_where = host``); a bad value ends
the test with an error naming the param.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from avocado_iofuzz.shards import SHARD_PARAM, ShardError, parse_shard

MODES = ("gen", "run", "criu")
TYPES = ("stream", "dgram", "seqpacket", "tcp", "udp")
UNIX_TYPES = TYPES[:3]  # the default: tcp,udp only when asked for (the inet variants)
NAMES = ("abstract", "path")
WHERE = ("guest", "host")
FAILURE_STATUSES = ("fail", "warn", "pass")
MAX_DEPTH = 12  # the state space grows about fourfold per level; 12 is already days of C/R


class SockstatesParamError(ValueError):
    """A sockstates param with a value we cannot use; the message names it."""


def _text(params: Mapping[str, Any], key: str, default: str = "") -> str:
    return str(params.get(key, "") or "").strip() or default


def _choice(params: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value = _text(params, key, default)
    if value not in choices:
        raise SockstatesParamError(f"param {key} = {value!r}: expected one of {', '.join(choices)}")
    return value


def _words(params: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str) -> tuple[str, ...]:
    raw = _text(params, key, default)
    words = [w for w in raw.replace(",", " ").split() if w]
    bad = [w for w in words if w not in allowed]
    if bad or not words:
        raise SockstatesParamError(
            f"param {key} = {raw!r}: expected a comma-separated list of {', '.join(allowed)}"
            + (f"; {', '.join(bad)} is not one" if bad else "")
        )
    return tuple(w for w in allowed if w in words)


def _int(params: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    raw = _text(params, key, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise SockstatesParamError(f"param {key} = {raw!r}: not an integer") from None
    if not low <= value <= high:
        raise SockstatesParamError(f"param {key} = {raw!r}: must be between {low} and {high}")
    return value


def _seconds(params: Mapping[str, Any], key: str, default: float) -> float:
    raw = _text(params, key, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise SockstatesParamError(f"param {key} = {raw!r}: not a number of seconds") from None
    if value <= 0:
        raise SockstatesParamError(f"param {key} = {raw!r}: must be > 0")
    return value


@dataclass(frozen=True)
class SockstatesParams:
    mode: str
    depth: int
    types: tuple[str, ...]
    names: tuple[str, ...]
    max_sockets: int
    max_queue: int
    state: str
    shard: str  # "K/N", or "" for the whole sweep
    where: str
    criu: str
    timeout: float
    failure_status: str
    login_timeout: float
    accel: str
    kernel: str
    guest: str = "debian"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SockstatesParams:
        state = _text(params, "sockstates_state")
        if state:
            from sockstates import canon
            from sockstates.inet import canon as inet_canon

            try:
                state = (inet_canon.canonical if inet_canon.is_inet(state) else canon.canonical)(state)
            except (canon.DescriptionError, inet_canon.DescriptionError) as err:
                raise SockstatesParamError(f"param sockstates_state = {state!r}: {err}") from None
        try:
            shard = parse_shard(_text(params, SHARD_PARAM))
        except ShardError as err:
            raise SockstatesParamError(str(err)) from None
        accel = _text(params, "iofuzz_accel", "auto")
        if accel not in ("auto", "kvm", "tcg"):
            raise SockstatesParamError(f"param iofuzz_accel = {accel!r}: expected auto, kvm or tcg")
        return cls(
            mode=_choice(params, "sockstates_mode", MODES, "criu"),
            depth=_int(params, "sockstates_depth", 3, 0, MAX_DEPTH),
            types=_words(params, "sockstates_types", TYPES, ",".join(UNIX_TYPES)),
            names=_words(params, "sockstates_names", NAMES, "abstract"),
            max_sockets=_int(params, "sockstates_max_sockets", 3, 1, 8),
            max_queue=_int(params, "sockstates_max_queue", 1, 0, 8),
            state=state,
            shard="" if shard.count == 1 else str(shard),
            where=_choice(params, "sockstates_where", WHERE, "guest"),
            criu=_text(params, "sockstates_criu", "criu"),
            timeout=_seconds(params, "sockstates_timeout", 3600.0),
            failure_status=_choice(params, "sockstates_failure_status", FAILURE_STATUSES, "fail"),
            login_timeout=_seconds(params, "login_timeout", 60.0),
            accel=accel,
            kernel=_text(params, "iofuzz_kernel"),
            guest=_text(params, "iofuzz_guest", "debian"),
        )

    def cli_args(self, out_dir: str) -> list[str]:
        """The ``sockstates`` command line (without the program) for these params."""
        args = [f"--{self.mode}", "--depth", str(self.depth), "--types", ",".join(self.types),
                "--names", ",".join(self.names), "--max-sockets", str(self.max_sockets),
                "--max-queue", str(self.max_queue)]
        if self.state:
            args += ["--state", self.state]
        if self.shard:
            args += ["--shard", self.shard]
        if self.mode == "criu":
            args += ["--out", out_dir]
            if self.criu != "criu":
                args += ["--criu-bin", self.criu]
        return args

    def command(self, program: str, out_dir: str) -> str:
        return shlex.join([program, *self.cli_args(out_dir)])
