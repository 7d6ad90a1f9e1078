"""The reproducer script `criu_repro.render` builds from the modules of `sockstates.reproducer`."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sockstates import criu_repro
from sockstates.criu_types import CriuConfig, StateResult

UNIX = StateResult(7, "DA-CX", 2, ["socketpair(D) = 1, 2", "close(1)"], verdict="failed", stage="verify",
                   reasons=["restored as DA, was DA-CX"])
INET = StateResult(3, "U:1-M1", 3, ["socket(U) = 1", "bind(1, :1)", "sendto(1, :1)"], verdict="failed",
                   stage="verify", reasons=["restored as U:1, was U:1-M1"])
CONFIG = CriuConfig(criu="/nonexistent/criu", network_lock="iptables")


def assigned(tree: ast.Module) -> dict[str, list[object]]:
    """The module-level constants the script assigns, each with every value it is given."""
    values: dict[str, list[object]] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            values.setdefault(node.target.id, []).append(ast.literal_eval(node.value))
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values.setdefault(node.targets[0].id, []).append(ast.literal_eval(node.value))
            except ValueError:  # KINDS = {...socket.SOCK_STREAM...} and the like: not a literal
                values.setdefault(node.targets[0].id, []).append(None)
    return values


@pytest.mark.parametrize("result", [UNIX, INET], ids=["unix", "inet"])
def test_the_script_compiles_and_imports_nothing_of_ours(result: StateResult) -> None:
    text = criu_repro.render(result, CONFIG)
    compile(text, "repro.py", "exec")
    assert text.startswith("#!/usr/bin/env python3\n")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(text)):  # anywhere, not only at the top
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert not imported & {"sockstates", "avocado_iofuzz", "avocado"}, imported
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


@pytest.mark.parametrize(("result", "part", "calls", "options"), [
    (UNIX, "unix", [{"op": "socketpair", "type": "D", "result": [1, 2]}, {"op": "close", "fd": 1}], []),
    (INET, "inet", [{"op": "socket", "type": "U", "result": [1]}, {"op": "bind", "fd": 1, "name": ":1"},
                    {"op": "sendto", "fd": 1, "name": ":1"}], ["--tcp-established"]),
], ids=["unix", "inet"])
def test_the_block_of_defaults_is_replaced_by_the_states_values(result: StateResult, part: str, calls: list[dict],
                                                                options: list[str]) -> None:
    text = criu_repro.render(result, CONFIG)
    values = assigned(ast.parse(text))  # each assigned once: the parts' defaults are gone
    assert values["SYSCALLS"] == [calls]
    assert values["NETWORK_LOCK"] == ["iptables"] and values["CRIU_USED"] == ["/nonexistent/criu"]
    assert values["CRIU_OPTIONS"] == [options]
    assert text.count(criu_repro.BLOCK_START) == 1 and text.count(criu_repro.BLOCK_END) == 1
    assert "render() replaces" not in text  # the parts' own block markers are gone
    # the state's part is the one chosen, and comes before the driver
    body = criu_repro.read_part(part).body
    assert body in text and text.index(body) < text.index(criu_repro.read_part("driver").body)
    other = criu_repro.read_part("inet" if part == "unix" else "unix").body
    assert other not in text
    assert f"state:  {result.description}\n" in text and result.reasons[0] in text


def test_each_part_declares_what_render_fills() -> None:
    names = {part: [name for name, _, _ in criu_repro.read_part(part).defaults] for part in ("unix", "inet", "driver")}
    assert names == {"unix": ["SYSCALLS"], "inet": ["SYSCALLS"],
                     "driver": ["NETWORK_LOCK", "CRIU_USED", "CRIU_OPTIONS"]}
    with pytest.raises(criu_repro.PartError, match="no value for CRIU_USED"):
        criu_repro.constants([criu_repro.read_part("driver")], {"NETWORK_LOCK": "x", "CRIU_OPTIONS": []})
    with pytest.raises(criu_repro.PartError, match="render\\(\\) gives"):
        criu_repro.constants([criu_repro.read_part("unix")], {"SYSCALLS": [], "EXTRA": 1})


def test_the_writer_does_not_import_the_sweep() -> None:
    """criu.py imports criu_repro; criu_repro takes its types from the leaf criu_types: no cycle."""
    code = "import sys, sockstates.criu_repro; print('sockstates.criu' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_an_inet_reproducers_reference_run_performs_the_sequence(tmp_path: Path) -> None:
    """Its --reference mode runs anywhere a network namespace can be made; here only if we may."""
    path = criu_repro.write_reproducer(tmp_path, INET, CONFIG)
    names = tmp_path / "names"
    names.mkdir()
    proc = subprocess.run([sys.executable, str(path), "--reference", str(names)], capture_output=True, text=True,
                          timeout=60, check=False)
    if proc.returncode != 0 and "network namespace" in proc.stderr + proc.stdout:
        pytest.skip("cannot make a network namespace here")
    assert json.loads(proc.stdout) == ["h1 UDP port=:1 peer=ENOTCONN error=0", "h1 reads payload 3 of h1 (from :1)",
                                       "h1 send: EDESTADDRREQ", "h1 then reads: EAGAIN"]


def test_without_criu_the_script_says_how_to_name_one(tmp_path: Path) -> None:
    path = criu_repro.write_reproducer(tmp_path, UNIX, CONFIG)
    proc = subprocess.run([sys.executable, str(path), str(tmp_path / "no-criu")], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.startswith(f"cannot find criu: tried {tmp_path / 'no-criu'} (the argument).\nGive its path:")
