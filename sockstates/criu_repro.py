"""Standalone reproducers for states that CRIU does not restore intact.

The script written for a state needs python3, criu and root, and nothing of
this package. It performs the state's syscalls twice, each time in a fresh
process in a network namespace of its own: once straight through, and once
with the same ``criu dump`` / ``criu restore`` in between. After that, each
process reports what it can read from its sockets (pending errors,
connections it can accept, every queued message and the descriptors they
carry, in a fixed traversal order and with payloads naming the sender by
handle; names, peers, and whether each socket may still send), and the
script prints both reports and their difference. Exit status 0 when they
are the same, 1 when they differ, 2 when CRIU fails, 3 when it cannot
run (no criu found: it says where it looked and how to name one; not root).
Whatever happens, the target it started is killed before it exits.

The script's code lives in `sockstates.reproducer` as ordinary modules;
`render` concatenates their source: a docstring naming the state, the
imports, one block of the state's values, the state's part (``unix`` or
``inet``) and the ``driver``.
"""

from __future__ import annotations

import ast
import re
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sockstates.criu_types import CriuConfig, StateResult
from sockstates.inet.run import is_inet
from sockstates.syscall import parse_line

PARTS_PACKAGE = "sockstates.reproducer"
# the lines around each part's block of typed defaults (see sockstates/reproducer/__init__.py)
BLOCK_START = "# --- state values"
BLOCK_END = "# --- end of state values ---"

# filled with str.format: the only text of the script that is not taken from the parts' source
HEADER = '''#!/usr/bin/env python3
"""sockstates --criu reproducer: does CRIU bring back this state intact?

state:  {description}
verdict when found: {verdict} at {stage}: {reason}
syscalls:
{syscall_lines}
Run as root: python3 THIS_FILE [path to criu]  (else $CRIU, the sweep's criu, criu on PATH)
Exit status 0: same; 1: different; 2: CRIU failed; 3: cannot run here (no criu, not root).
"""
from __future__ import annotations

'''


class PartError(ValueError):
    """A part of the reproducer breaks the rules `render` relies on (a bug of this package, not of a state)."""


@dataclass(frozen=True)
class Part:
    name: str
    imports: list[str]  # the source of each import it needs in the script (not __future__, not ours)
    block: list[str]  # its block of defaults, one line each
    defaults: list[tuple[str, int, int]]  # per block line: the name, where its default starts and ends (bytes)
    body: str  # everything after the block


def read_part(name: str) -> Part:
    """A module of `sockstates.reproducer`, split at its block of defaults."""
    source = resources.files(PARTS_PACKAGE).joinpath(f"{name}.py").read_text(encoding="utf-8")
    lines = source.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(BLOCK_START)]
    ends = [i for i, line in enumerate(lines) if line.rstrip() == BLOCK_END]
    if len(starts) != 1 or len(ends) != 1 or starts[0] > ends[0]:
        raise PartError(f"{name}.py: expected one block from {BLOCK_START!r} to {BLOCK_END!r}")
    start, end = starts[0] + 1, ends[0] + 1  # ast's line numbers count from 1
    imports, block, defaults = [], [], []
    for node in ast.parse(source).body:
        if node.end_lineno is not None and node.end_lineno < start:  # the preamble: docstring and imports
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue
            if isinstance(node, ast.ImportFrom) and node.module is not None:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                raise PartError(f"{name}.py:{node.lineno}: only a docstring and imports may precede the block")
            if modules[0] == "__future__" or any(m.split(".")[0] == "sockstates" for m in modules):
                continue  # the header has the __future__ import; ours are there for checking only
            imports.append(ast.get_source_segment(source, node) or "")
        elif node.lineno < end:
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value
                    and node.lineno == node.end_lineno):
                raise PartError(f"{name}.py:{node.lineno}: the block holds one-line `NAME: type = default` only")
            block.append(lines[node.lineno - 1])
            defaults.append((node.target.id, node.value.col_offset, node.value.end_col_offset or 0))
    return Part(name, imports, block, defaults, "\n".join(lines[end:]).strip("\n"))


def constants(parts: list[Part], values: dict[str, object]) -> str:
    """The parts' blocks as ``NAME = value`` lines (the state's value, its repr), comments kept.

    The annotations are left out: mypy checks them in the parts, and the lines
    stay what scripts always held (``CRIU_USED = ...``, which users edit).
    """
    out = []
    for part in parts:
        for line, (name, _, end) in zip(part.block, part.defaults, strict=True):
            if name not in values:
                raise PartError(f"{part.name}.py: render() has no value for {name}")
            comment = line.encode()[end:].decode()  # after the default; ast's column offsets count UTF-8 bytes
            out.append(f"{name} = {values[name]!r}{comment}")
    names = [name for part in parts for name, _, _ in part.defaults]
    if len(names) != len(set(names)) or set(names) != set(values):
        raise PartError(f"the parts' blocks define {sorted(names)}, render() gives {sorted(values)}")
    return "\n".join([BLOCK_START + " ---", *out, BLOCK_END])


def script_name(result: StateResult) -> str:
    safe = re.sub(r"[^A-Za-z0-9@._-]+", "-", result.description)[:60]
    return f"{result.index:05d}-{safe}.py"


def render(result: StateResult, config: CriuConfig) -> str:
    parsed = [parse_line(line) for line in result.syscalls]
    inet = is_inet(parsed)
    calls = []
    for call in parsed:
        calls.append({k: v for k, v in {
            "op": call.op, "fd": call.fd, "type": call.type, "name": call.name, "how": call.how,
            "passes": call.passes, "result": list(call.result) or None, "error": call.error,
        }.items() if v is not None})
    parts = [read_part("inet" if inet else "unix"), read_part("driver")]
    values: dict[str, object] = {
        "SYSCALLS": calls,
        "NETWORK_LOCK": config.network_lock,
        "CRIU_USED": shutil.which(config.criu) or config.criu,
        "CRIU_OPTIONS": ["--tcp-established"] if inet else [],
    }
    header = HEADER.format(
        description=result.description,
        verdict=result.verdict,
        stage=result.stage,
        reason=(result.reasons[0] if result.reasons else "").replace('"""', "'''")[:300],
        syscall_lines="\n".join(f"    {line}" for line in result.syscalls) or "    (none)",
    )
    imports = sorted(dict.fromkeys(i for part in parts for i in part.imports),
                     key=lambda line: (line.startswith("from "), line))
    return "\n\n\n".join([header + "\n".join(imports) + "\n\n" + constants(parts, values),
                          *(part.body for part in parts)]) + "\n"


def write_reproducer(directory: Path, result: StateResult, config: CriuConfig) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / script_name(result)
    path.write_text(render(result, config))
    path.chmod(0o755)
    return path
