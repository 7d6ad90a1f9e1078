"""Fixed-value steps in a real guest: QEMU's own trace shows exactly the program's writes, in order.

One busybox guest on ``pc`` with ``-device pc-testdev``: ports 0xe0-0xe3 are
one register that takes 1-, 2- and 4-byte writes whole and that no guest
driver touches, so every write QEMU logs there (``memory_region_ops_write``,
the observer outside the guest) is one of the executor's.

A program of fixed steps (:func:`~avocado_iofuzz.guided.program.fixed_step`)
at every port width, one of them writing three times and one ``+dma`` with
the virtio layout, runs as a guided round runs its elements: each element's
plan a range of one executor command. The writes QEMU logged must be those
the program names -- address, size and value, in order, written down here
by hand, not computed by the op model -- then again from the middle of the
three-write step after a resume. QEMU's ``pmemsave`` shows the scratch
memory holding the virtio layout's fill for the ``+dma`` step: the fixed
value points at memory laid out as usual.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator

import pytest

from avocado_iofuzz.executor.protocol import Done, ExecError, executor_command, parse_line
from avocado_iofuzz.guest.build import default_guest
from avocado_iofuzz.guided.batch import Base
from avocado_iofuzz.guided.program import fixed_step
from avocado_iofuzz.model.dma import SCRATCH_BASE, SCRATCH_SIZE, VALUES_DMA, scratch_fill
from avocado_iofuzz.model.program import RangePlan
from avocado_iofuzz.vm.bare import BareQemu

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]

TESTDEV = Base("pio", 0xE0, 0xE3, 1, "pc-testdev 0xe0-0xe3", VALUES_DMA, "virtio")
PROGRAM = (
    fixed_step(TESTDEV, 0xE0, 1, 0x5A),
    fixed_step(TESTDEV, 0xE0, 4, SCRATCH_BASE >> 12, values=VALUES_DMA, seed=0x7F1),  # a page frame, memory laid out
    fixed_step(TESTDEV, 0xE2, 2, 0xBEEF, count=3, seed=5),
    fixed_step(TESTDEV, 0xE1, 1, 0x00),
    fixed_step(TESTDEV, 0xE0, 4, 0xFFFFFFFF),
    fixed_step(TESTDEV, 0xE3, 1, 0x80),
)
# (port, size, value) of every write, as the program above names them
EXPECTED = [
    (0xE0, 1, 0x5A),
    (0xE0, 4, 0x7000),
    (0xE2, 2, 0xBEEF), (0xE2, 2, 0xBEEF), (0xE2, 2, 0xBEEF),
    (0xE1, 1, 0x00),
    (0xE0, 4, 0xFFFFFFFF),
    (0xE3, 1, 0x80),
]  # fmt: skip
RESUME = (2, 1)  # the second write of the three-write step
WRITE = re.compile(
    r"memory_region_ops_write .*?addr 0x(?P<addr>[0-9a-f]+) value 0x(?P<value>[0-9a-f]+) size (?P<size>\d)"
)
RUN_TIMEOUT = 120


def qemu_writes(text: str) -> list[tuple[int, int, int]]:
    """The writes QEMU logged to ports 0xe0-0xe3, in order."""
    seen = []
    for match in WRITE.finditer(text):
        if 0xE0 <= int(match["addr"], 16) <= 0xE3:
            seen.append((int(match["addr"], 16), int(match["size"]), int(match["value"], 16)))
    return seen


def run_executor(session, command: str) -> None:
    output = session.cmd_output(command, timeout=RUN_TIMEOUT)
    messages = [parse_line(line) for line in output.splitlines()]
    assert not [m for m in messages if isinstance(m, ExecError)], output[-2000:]
    assert any(isinstance(m, Done) for m in messages), output[-2000:]


def plans() -> list[RangePlan]:
    return [element.plan(index) for index, element in enumerate(PROGRAM)]  # as a guided round numbers them


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Iterator[dict[str, object]]:
    run_dir = tmp_path_factory.mktemp("fixed-steps")
    vm = BareQemu(
        default_guest(), run_dir / "vm", accel="tcg", extra_args=["-device", "pc-testdev"],
        trace_events=["memory_region_ops_write"],
    )  # fmt: skip
    result: dict[str, object] = {}
    with vm:
        session = vm.login(120)
        log = vm.trace_log_path
        before = log.stat().st_size if log.exists() else 0
        command = executor_command(plans())
        result["command"] = command
        run_executor(session, command)
        vm.qmp("pmemsave", val=SCRATCH_BASE, size=SCRATCH_SIZE, filename=str(run_dir / "scratch.bin"))
        result["scratch"] = (run_dir / "scratch.bin").read_bytes()
        middle = log.stat().st_size
        run_executor(session, executor_command(plans(), resume=RESUME))
        after = log.stat().st_size
    text = log.read_bytes()
    result["run"] = text[before:middle].decode(errors="replace")
    result["resumed"] = text[middle:after].decode(errors="replace")
    yield result


def test_the_command_names_each_fixed_value():
    command = executor_command(plans())
    for word in ("0:0xe0-0xe0,1!0x5a", "1:0xe0-0xe3/4,1!0x7000+dma=virtio@2033", "2:0xe2-0xe3/2,3!0xbeef@5"):
        assert word in command, command


def test_qemu_saw_exactly_the_programs_writes_in_order(run):
    seen = qemu_writes(str(run["run"]))
    print(f"QEMU logged {len(seen)} pc-testdev writes: {[(hex(p), s, hex(v)) for p, s, v in seen]}")
    assert seen == EXPECTED


def test_a_resume_in_the_middle_of_a_step_writes_the_rest(run):
    assert qemu_writes(str(run["resumed"])) == EXPECTED[3:]  # writes 2 and 3 of the step, then the steps after it


def test_the_dma_step_left_the_scratch_memory_laid_out_for_its_pointer(run):
    plan = plans()[1]
    assert (plan.values, plan.layout, plan.fixed) == (VALUES_DMA, "virtio", 0x7000)
    assert run["scratch"] == scratch_fill(plan.range_seed, 0, "virtio")  # the uniform steps after it left it alone
