"""The sockstates test's params, read from the cartesian dict and checked before anything boots.

Each value maps to an option of the ``sockstates`` CLI, which runs in the
Debian guest (or on the host, ``sockstates_where = host``); a bad value ends
the test with an error naming the param.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

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
    words,
)

MODES = ("gen", "run", "criu")
TYPES = ("stream", "dgram", "seqpacket", "tcp", "udp")
UNIX_TYPES = TYPES[:3]  # the default: tcp,udp only when asked for (the inet variants)
NAMES = ("abstract", "path")
WHERE = ("guest", "host")
FAILURE_STATUSES = ("fail", "warn", "pass")
MAX_DEPTH = 12  # the state space grows about fourfold per level; 12 is already days of C/R


def _state(params: Params) -> str:
    """``sockstates_state``, in its canonical spelling (empty: the whole sweep)."""
    state = text(params, "sockstates_state")
    if not state:
        return ""
    from sockstates import canon  # the guest's package: imported only when a state is named
    from sockstates.inet import canon as inet_canon

    try:
        return (inet_canon.canonical if inet_canon.is_inet(state) else canon.canonical)(state)
    except (canon.DescriptionError, inet_canon.DescriptionError) as err:
        raise ParamError(f"param sockstates_state = {state!r}: {err}") from None


def _shard(params: Params) -> str:
    """``iofuzz_shard`` as the CLI's ``--shard`` takes it, or "" for the whole sweep."""
    shard = read_shard(params)
    return "" if shard.count == 1 else str(shard)


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
    extra_kernel_params: str = ""

    @classmethod
    def from_params(cls, params: Params) -> SockstatesParams:
        return cls(
            mode=choice(params, "sockstates_mode", MODES, "criu"),
            depth=integer(params, "sockstates_depth", 3, 0, MAX_DEPTH, base=10),
            types=words(params, "sockstates_types", TYPES, ",".join(UNIX_TYPES)),
            names=words(params, "sockstates_names", NAMES, "abstract"),
            max_sockets=integer(params, "sockstates_max_sockets", 3, 1, 8, base=10),
            max_queue=integer(params, "sockstates_max_queue", 1, 0, 8, base=10),
            state=_state(params),
            shard=_shard(params),
            where=choice(params, "sockstates_where", WHERE, "guest"),
            criu=text(params, "sockstates_criu", "criu"),
            timeout=number(params, "sockstates_timeout", 3600.0, unit="seconds"),
            failure_status=choice(params, "sockstates_failure_status", FAILURE_STATUSES, "fail"),
            login_timeout=number(params, "login_timeout", 60.0, unit="seconds"),
            accel=choice(params, "iofuzz_accel", ACCELERATORS, "auto"),
            kernel=text(params, "iofuzz_kernel"),
            guest=text(params, "iofuzz_guest", "debian"),
            extra_kernel_params=text(params, "iofuzz_extra_kernel_params"),
        )

    @property
    def vm(self) -> VmChoice:
        """The guest, kernel and accelerator the sweep's VM starts with."""
        return VmChoice(self.guest, self.kernel, self.accel, self.extra_kernel_params)

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
