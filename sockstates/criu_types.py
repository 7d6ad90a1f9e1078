"""What `sockstates.criu` checks with and what it finds, one state at a time.

A leaf module (it imports nothing of this package), so that both the sweep
(`sockstates.criu`) and the reproducer writer (`sockstates.criu_repro`) can use
these types without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class CriuConfig:
    criu: str = "criu"
    # nftables: the default (iptables) locking wants xt_mark and iptables-restore
    # in the target's network namespace; nf_tables is what our guest loads.
    network_lock: str = "nftables"
    command_timeout: float = 120.0  # one criu dump or restore
    target_timeout: float = 60.0  # the target reaching its state, or checking itself after restore
    keep_images: bool = False

    def dump_argv(self, pid: int, images: Path, tcp: bool = False) -> list[str]:
        # --tcp-established: without it CRIU refuses any connected TCP socket (it dumps them in repair mode)
        return [self.criu, "dump", "-t", str(pid), "-D", str(images), "-o", "dump.log", "-v4",
                "--network-lock", self.network_lock, *(["--tcp-established"] if tcp else [])]

    def restore_argv(self, images: Path, pidfile: Path, tcp: bool = False) -> list[str]:
        # the lock method is recorded in the images: restore takes it from there
        return [self.criu, "restore", "-d", "-D", str(images), "-o", "restore.log", "-v4", "--pidfile", str(pidfile),
                *(["--tcp-established"] if tcp else [])]


@dataclass
class StateResult:
    index: int
    description: str
    depth: int
    syscalls: list[str]
    verdict: str = "intact"  # intact | failed | error | skipped
    stage: str | None = None  # reach | dump | restore | verify: where it went wrong
    reasons: list[str] = field(default_factory=list)
    before: list[str] = field(default_factory=list)  # the twin's descriptions
    after: list[str] = field(default_factory=list)  # the restored target's
    commands: list[str] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)
    reproducer: str | None = None
    seconds: float = 0.0
    # a refused or crashed dump/restore: its cause from CRIU's log (criu_log.fatal), numbers blanked
    criu_failure: str | None = None
    crashed: bool = False
    # who reaches each bound name (sockstates.strangers), without C/R and after
    strangers_before: list[str] = field(default_factory=list)
    strangers_after: list[str] = field(default_factory=list)

    def fail(self, stage: str, reason: str, verdict: str = "failed") -> StateResult:
        self.verdict, self.stage = verdict, stage
        self.reasons.append(reason)
        return self
