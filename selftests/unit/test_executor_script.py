"""The executor's ``--script`` mode reads reproducers exactly as the host's parser does.

Only ``--dry-run`` runs here (the ops are printed, no port is touched); the
real accesses run in guests (test_repro_guest).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avocado_iofuzz.executor.protocol import Done, ExecError, Progress, parse_dry_run_op, parse_line
from avocado_iofuzz.model.dma import SCRATCH_BASE
from avocado_iofuzz.model.pci import config_address
from avocado_iofuzz.model.program import MASK64, SPACE_MMIO, SPACE_PCI, Op
from avocado_iofuzz.repro.guest_replay import guest_script, guest_script_command
from avocado_iofuzz.repro.qtest import parse_script
from avocado_iofuzz.repro.qtest_ops import format_script


def dry_run(executor: Path, script: str, report_every: int = 4096) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(executor), "--dry-run", "--report-every", str(report_every), "--script", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
    )


port_ops = st.builds(
    lambda kind, port, width, value: Op(kind, port, width, 0 if kind == "r" else value & ((1 << (8 * width)) - 1)),
    st.sampled_from("rw"),
    st.integers(0, 0xFFFF),
    st.sampled_from([1, 2, 4]),
    st.integers(0, 0xFFFFFFFF),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(port_ops, min_size=1, max_size=50))
def test_the_executor_replays_the_ops_the_host_wrote(executor, ops):
    result = dry_run(executor, format_script(ops))
    assert result.returncode == 0, result.stdout
    printed = [parse_dry_run_op(line)[2] for line in result.stdout.splitlines() if not line.startswith("@")]
    assert printed == ops == parse_script(format_script(ops))


def _fits(width: int, value: int) -> int:
    return value & ((1 << (8 * width)) - 1)


mmio_ops = st.sampled_from([1, 2, 4, 8]).flatmap(
    lambda width: st.builds(
        lambda kind, slot, value: Op(kind, slot * width, width, 0 if kind == "r" else _fits(width, value), SPACE_MMIO),
        st.sampled_from("rw"),
        st.integers(0, MASK64 // width),  # the executor replays aligned accesses only, as the campaign makes them
        st.integers(0, MASK64),
    )
)
pci_ops = st.sampled_from([1, 2, 4]).flatmap(
    lambda width: st.builds(
        lambda kind, bus, device, function, dword, offset, value: Op(
            kind,
            config_address(bus, device, function, 4 * dword + offset * width),
            width,
            0 if kind == "r" else _fits(width, value),
            SPACE_PCI,
        ),
        st.sampled_from("rw"),
        st.integers(0, 0xFF),
        st.integers(0, 0x1F),
        st.integers(0, 7),
        st.integers(0, 0x3F),
        st.integers(0, 4 // width - 1),  # within its dword: a type-1 cycle cannot straddle one
        st.integers(0, 0xFFFFFFFF),
    )
)


def _as_accesses(ops: list[Op]) -> list[tuple[str, int, int, int]]:
    return [(op.kind, op.port, op.width, op.value) for op in ops]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.one_of(port_ops, mmio_ops, pci_ops), min_size=1, max_size=60))
def test_every_kind_and_width_the_writer_writes_the_executor_reads_back(executor, ops):
    """Port I/O, MMIO of every width (writeq too), PCI config cycles: writer and parser agree, line for line.

    The executor's --dry-run is its parse-only mode: the whole script is parsed and checked, the
    accesses printed, none performed (no marker check, no iopl, no mapping).
    """
    script = guest_script(ops)
    result = dry_run(executor, script)
    assert result.returncode == 0, result.stdout
    printed = [parse_dry_run_op(line)[2] for line in result.stdout.splitlines() if not line.startswith("@")]
    # the host reads a config op back as its two port ops: the executor must see the same accesses
    assert _as_accesses(printed) == _as_accesses(parse_script(script))
    assert len(printed) == len(script.splitlines())
    messages = [m for m in map(parse_line, result.stdout.splitlines()) if m is not None]
    assert messages[-1] == Done(len(printed))


def test_a_scratch_memory_fill_reaches_the_executor_as_the_words_it_is(executor):
    """A DMA-aware range fills the scratch memory with 8-byte writes.

    QEMU gets them as ``write`` lines; the guest as ``writeq``, which its parser reads.
    """
    fill = [Op("w", SCRATCH_BASE + 8 * n, 8, (0x0123456789ABCDEF * (n + 1)) & MASK64, SPACE_MMIO) for n in range(600)]
    ops = [Op("w", 0x80, 1, 1), *fill, Op("r", SCRATCH_BASE, 4, 0, SPACE_MMIO)]
    assert any(line.startswith("write ") for line in format_script(ops).splitlines())  # QEMU's form
    result = dry_run(executor, guest_script(ops))
    assert result.returncode == 0, result.stdout
    printed = [parse_dry_run_op(line)[2] for line in result.stdout.splitlines() if not line.startswith("@")]
    assert _as_accesses(printed) == _as_accesses(ops)


def test_progress_marks_come_every_k_ops_as_one_range(executor):
    result = dry_run(executor, "# a reproducer\n\noutb 0x70 0x1\ninb 0x71\noutw 0x1f0 0xffff\n", report_every=2)
    messages = [m for m in map(parse_line, result.stdout.splitlines()) if m is not None]
    assert [m for m in messages if isinstance(m, Progress)] == [Progress(0, 0), Progress(0, 2), Progress(0, 3)]
    assert messages[-1] == Done(3)


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("outb 0x70\n", "script line 1: outb takes 2 argument(s)"),
        ("outb 0x70 0x1\noutb 0x70 0x100\n", "script line 2: bad value '0x100'"),
        ("writel 0xfe000001 0x1\n", "writel at 0xfe000001 is not aligned"),
        ("outq 0x80 0x1\n", "unknown command 'outq'"),
        ("readx 0xfe000000\n", "unknown command 'readx'"),
        ("outl 0x10000 0x1\n", "bad address '0x10000'"),
        ("# only a comment\n", "no I/O command"),
    ],
)
def test_bad_scripts_are_refused_before_any_access(executor, script, message):
    result = dry_run(executor, script)
    assert result.returncode == 2
    errors = [m for m in map(parse_line, result.stdout.splitlines()) if isinstance(m, ExecError)]
    assert errors and message in errors[0].message
    assert not any(parse_line(line) for line in result.stdout.splitlines() if "READY" in line)


def test_script_mode_does_not_mix_with_fuzzing_options(executor):
    result = subprocess.run(
        [str(executor), "--dry-run", "--seed", "1", "--script", "-"], input="inb 0x70\n", capture_output=True, text=True
    )
    assert result.returncode == 2 and "--script combines only with" in result.stdout


def test_the_guest_command_is_a_here_document_the_shell_feeds_to_the_executor(executor):
    ops = [Op("w", 0x505, 1, 1), Op("r", 0x61, 1, 0)]
    command = guest_script_command(ops, executor=f"{executor} --dry-run", report_every=1)
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    printed = [parse_dry_run_op(line)[2] for line in result.stdout.splitlines() if not line.startswith("@")]
    assert printed == ops


def test_mmio_and_config_ops_replay_in_order_with_port_io(executor):
    """Every kind a reproducer holds: PCI config cycles (port I/O), MMIO of every width, port I/O."""
    script = "outl 0xcf8 0x80001010\noutl 0xcfc 0xfea00000\nwritel 0xfea00098 0x1\nreadq 0xfea00080\ninb 0x80\n"
    result = dry_run(executor, script)
    assert result.returncode == 0, result.stdout
    printed = [line.split()[2:] for line in result.stdout.splitlines() if not line.startswith("@")]
    assert printed == [
        ["w", "0xcf8", "4", "0x80001010"],
        ["w", "0xcfc", "4", "0xfea00000"],
        ["w", "0xfea00098", "4", "0x1"],
        ["r", "0xfea00080", "8", "0x0"],
        ["r", "0x80", "1", "0x0"],
    ]
