"""Putting a pci range's header back: what is written, in what order, how the host records it and replays make it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from avocado_iofuzz.campaign.runner import Campaign, CampaignConfig
from avocado_iofuzz.campaign.trace import TraceWriter, read_trace
from avocado_iofuzz.executor.protocol import ExecError, Restore, Saved, executor_command, parse_line
from avocado_iofuzz.model.pci import config_address
from avocado_iofuzz.model.pci_restore import (
    HEADER_REGISTERS,
    RESTORE_EVENT,
    ConfigWrite,
    RestoreError,
    header_registers,
    parse_writes,
    plan_restore,
    restore_ops,
)
from avocado_iofuzz.model.program import SPACE_PCI, Op, RangePlan
from avocado_iofuzz.repro.extract import extract
from avocado_iofuzz.repro.guest_replay import regenerating_command
from avocado_iofuzz.repro.qtest_ops import format_script
from avocado_iofuzz.vt.iofuzz_params import IofuzzParams
from avocado_iofuzz.vt.params import ParamError

UHCI = config_address(0, 2, 0)  # piix3-usb-uhci on pc: 00:02.0
BARS = {register: 0 for register, _ in header_registers(0)} | {0x20: 0xC001}
SOURCE = Path(__file__).parents[2] / "avocado_iofuzz" / "executor" / "iofuzz_exec.c"


def test_an_untouched_header_gets_no_write():
    assert plan_restore(0, 0x0107, BARS, 0x0107, BARS) == []


def test_a_moved_bar_is_written_back_with_decoding_off_then_the_command_register():
    moved = BARS | {0x20: 0xD4177AA1}
    assert plan_restore(0, 0x0107, BARS, 0x0507, moved) == [
        ConfigWrite(0x04, 2, 0x0504),  # decoding off, the other bits as they are
        ConfigWrite(0x20, 4, 0xC001),
        ConfigWrite(0x04, 2, 0x0107),
    ]


def test_a_bar_moved_with_decoding_already_off_needs_no_extra_write():
    moved = BARS | {0x10: 0xFFFFFFF0, 0x30: 0xFFFE0001}
    assert plan_restore(0, 0x0003, BARS, 0x0000, moved) == [
        ConfigWrite(0x10, 4, 0),
        ConfigWrite(0x30, 4, 0),
        ConfigWrite(0x04, 2, 0x0003),
    ]


def test_decoding_turned_off_alone_is_one_write():
    assert plan_restore(0, 0x0001, BARS, 0x0000, BARS) == [ConfigWrite(0x04, 2, 0x0001)]


def test_both_halves_of_a_64_bit_bar_are_put_back():
    saved = BARS | {0x18: 0xFE00000C, 0x1C: 0x1}
    moved = saved | {0x18: 0x1234000C, 0x1C: 0xABCD}
    writes = plan_restore(0, 0x0002, saved, 0x0002, moved)
    assert writes == [
        ConfigWrite(0x04, 2, 0x0000),
        ConfigWrite(0x18, 4, 0xFE00000C),
        ConfigWrite(0x1C, 4, 0x1),
        ConfigWrite(0x04, 2, 0x0002),
    ]


def test_a_bridge_gets_its_bus_numbers_windows_and_bridge_control_back_but_not_its_status():
    registers = dict(header_registers(1))
    assert registers[0x18] == 4 and registers[0x1C] == 2 and registers[0x3E] == 2  # not status 0x1e, not 0x3c
    saved = dict.fromkeys(registers, 0) | {0x18: 0x00010100, 0x20: 0xFE00FE00}
    moved = saved | {0x18: 0x00FFFF00, 0x3E: 0x40}  # secondary bus number moved, secondary bus held in reset
    assert plan_restore(0x81, 0x0007, saved, 0x0007, moved) == [  # 0x81: a multi-function bridge
        ConfigWrite(0x04, 2, 0x0004),
        ConfigWrite(0x18, 4, 0x00010100),
        ConfigWrite(0x3E, 2, 0),
        ConfigWrite(0x04, 2, 0x0007),
    ]


def test_other_header_types_get_their_command_register_back_only():
    assert header_registers(2) == ()
    assert plan_restore(2, 0x0003, {}, 0x0000, {}) == [ConfigWrite(0x04, 2, 0x0003)]


def test_the_executor_saves_the_same_registers_as_the_model():
    """The C tables and plan_restore's rule are one rule in two languages: the tables at least must agree."""
    source = SOURCE.read_text()
    for header_type in (0, 1):
        table = re.search(rf"type{header_type}_registers\[\] = \{{(.*?)\}};", source, re.S)
        assert table is not None
        entries = [(int(r, 16), int(w)) for r, w in re.findall(r"\{ (0x[0-9a-f]+), (\d) \}", table[1])]
        assert tuple(entries) == HEADER_REGISTERS[header_type]


def test_the_restore_line_is_parsed_into_its_writes():
    message = parse_line("\x1b[6n@RESTORE 3 1408 0x4:2:0x104 0x20:4:0xc001 0x4:2:0x107\r\n")
    assert message == Restore(
        3, 1408, (ConfigWrite(0x04, 2, 0x104), ConfigWrite(0x20, 4, 0xC001), ConfigWrite(0x04, 2, 0x107))
    )
    assert parse_line("@RESTORE 3 1408") is None  # no write: not a restore line
    assert parse_line("@RESTORE 3 1408 0x4:2:0x10007") is None  # garbled: a value wider than its register
    assert isinstance(parse_line("@ERR range 0: putting config register 0x20 back failed: EIO"), ExecError)


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["0x20:4"], "is not 0xREGISTER:WIDTH:0xVALUE"),
        (["0x22:4:0x1"], "not an aligned access"),
        (["0x4:2:0x10000"], "does not fit 2 byte(s)"),
        (["0x4:3:0x1"], "not an aligned access"),
    ],
)
def test_bad_restore_writes_are_named(words, message):
    with pytest.raises(RestoreError, match=re.escape(message)):
        parse_writes(words)


def test_the_executor_is_told_to_leave_headers_alone_only_for_pci_ranges():
    pci = RangePlan(0, UHCI, UHCI + 0xFF, "uhci config", 1, 2, 4, SPACE_PCI)
    ports = RangePlan(1, 0xC000, 0xC01F, "uhci", 1, 2, 2)
    assert "--no-pci-restore" in shlex.split(executor_command([pci, ports], pci_restore=False))
    assert "--no-pci-restore" not in executor_command([pci, ports])
    # a run without pci ranges gets the command it always got
    assert executor_command([ports], pci_restore=False) == executor_command([ports])


def test_the_executor_accepts_the_option_and_refuses_it_with_a_script(executor, tmp_path):
    import subprocess

    run = [
        str(executor),
        "--dry-run",
        "--no-pci-restore",
        "--seed",
        "1",
        "--fuzz-count",
        "0",
        f"pci:{UHCI:#x}-{UHCI + 3:#x}/4",
    ]
    assert subprocess.run(run, capture_output=True, text=True, timeout=30).stdout.splitlines()[-1] == "@DONE 2"
    script = tmp_path / "s.qtest"
    script.write_text("inb 0x80\n")
    refused = subprocess.run([str(executor), "--no-pci-restore", "--script", str(script)], capture_output=True,
                             text=True, timeout=30)  # fmt: skip
    assert refused.returncode == 2 and "--script combines only with" in refused.stdout


class RestoringSession:
    """Answers the executor command as a real executor leaving a pci range whose BAR4 moved would."""

    def __init__(self, plan: RangePlan, line: str):
        self.commands: list[str] = []
        self.plan, self.line, self.pending = plan, line, ""

    def sendline(self, command: str) -> None:
        self.commands.append(command)
        n = self.plan.op_count
        self.pending = f"@IOFUZZ READY 1 1\n@P 0 0\n@P 0 {n}\n{self.line}\n@DONE {n}\n"

    def read_nonblocking(self, internal_timeout=None, timeout=None) -> str:
        data, self.pending = self.pending, ""
        return data

    def close(self) -> None:
        pass


class AliveGuest:
    def is_alive(self) -> bool:
        return True

    def exit_info(self):
        return None


def pci_plan() -> RangePlan:
    return RangePlan(0, UHCI, UHCI + 0xFF, "uhci config", 1, 2, 4, SPACE_PCI)


def run_restoring_campaign(path: Path, pci_restore: bool = True) -> RestoringSession:
    plan = pci_plan()
    session = RestoringSession(plan, f"@RESTORE 0 {plan.op_count} 0x4:2:0x0 0x20:4:0xc001 0x4:2:0x5")
    with TraceWriter(path, {"seed": 1}, mark_interval=0) as trace:
        config = CampaignConfig(report_every=64, done_linger=0.0, pci_restore=pci_restore)
        Campaign(AliveGuest(), [plan], trace, config, session=session).run()
    return session


def test_the_campaign_records_the_restore_writes_at_their_config_addresses(tmp_path):
    run_restoring_campaign(tmp_path / "trace")
    trace = read_trace(tmp_path / "trace")
    (start,) = [e for e in trace.events if e.kind == "start"]
    assert start.data["pci_restore"] is True
    (restore,) = [e for e in trace.events if e.kind == RESTORE_EVENT]
    assert {k: v for k, v in restore.data.items() if k != "t"} == {
        "range": 0,
        "op": pci_plan().op_count,
        "writes": [[UHCI | 0x04, 2, 0], [UHCI | 0x20, 4, 0xC001], [UHCI | 0x04, 2, 5]],
    }
    assert restore_ops(restore.data) == [
        Op("w", UHCI | 0x04, 2, 0, SPACE_PCI),
        Op("w", UHCI | 0x20, 4, 0xC001, SPACE_PCI),
        Op("w", UHCI | 0x04, 2, 5, SPACE_PCI),
    ]


def test_a_campaign_without_restore_says_so_to_the_executor_and_the_trace(tmp_path):
    session = run_restoring_campaign(tmp_path / "trace", pci_restore=False)
    assert "--no-pci-restore" in session.commands[0]
    (start,) = [e for e in read_trace(tmp_path / "trace").events if e.kind == "start"]
    assert start.data["pci_restore"] is False


def write_finding_trace(path: Path, restore: bool) -> Path:
    """A pci range that ran whole (and was put back, if ``restore``), then a crash in the port range after it."""
    config, ports = pci_plan(), RangePlan(1, 0xC000, 0xC01F, "uhci", 1, 2, 2)
    with TraceWriter(path, {"seed": 1}, [config, ports], mark_interval=0) as trace:
        trace.write_batches([(config, 0, config.op_count), (ports, 0, ports.op_count)])
        trace.event("start", range=0, op=0, **({"pci_restore": True} if restore else {}))
        if restore:
            trace.event(RESTORE_EVENT, range=0, op=config.op_count, writes=[[UHCI | 0x20, 4, 0xC001], [UHCI | 4, 2, 5]])
        trace.event("crash", range=1, window=[0, 16], qemu_exit={"status": None, "signal": 6, "stderr_tail": ""})
    return path


def test_replays_make_the_restore_writes_right_after_the_range_and_qtest_writes_them_through_cf8(tmp_path):
    extracted = extract(write_finding_trace(tmp_path / "trace", restore=True))
    assert extracted.pci_restore is True
    config, ports = extracted.plans[0], extracted.plans[1]
    history = next(c for c in extracted.candidates if c.name == "since-reset")
    restore = [Op("w", UHCI | 0x20, 4, 0xC001, SPACE_PCI), Op("w", UHCI | 4, 2, 5, SPACE_PCI)]
    assert history.ops == [*config.ops(), *restore, *ports.ops(0, 16)]
    script = format_script(history.ops).splitlines()
    at = 2 * config.op_count
    assert script[at : at + 4] == [
        "outl 0xcf8 0x80001020",
        "outl 0xcfc 0xc001",
        "outl 0xcf8 0x80001004",
        "outw 0xcfc 0x5",
    ]
    # the window alone (the port range) has no restore in it
    assert next(c for c in extracted.candidates if c.name == "window").ops == list(ports.ops(0, 16))


def test_an_older_trace_without_restore_records_reads_and_replays_without_them(tmp_path):
    extracted = extract(write_finding_trace(tmp_path / "trace", restore=False))
    assert extracted.pci_restore is False
    history = next(c for c in extracted.candidates if c.name == "since-reset")
    assert history.ops == [*extracted.plans[0].ops(), *extracted.plans[1].ops(0, 16)]
    command = regenerating_command(extracted.plans, history.spans, pci_restore=extracted.pci_restore)
    assert command is not None and "--no-pci-restore" in command


def test_the_param_is_yes_or_no():
    base = {"fuzz_count": "1"}
    assert IofuzzParams.from_params(base).pci_restore is True
    assert IofuzzParams.from_params(base | {"pci_restore": "no"}).pci_restore is False
    with pytest.raises(ParamError, match=r"param pci_restore = 'off': expected yes or no"):
        IofuzzParams.from_params(base | {"pci_restore": "off"})


SAVED_LINE = "@SAVED 0 0 0x5 0x0 0x0 0x0 0x0 0xc001 0x0 0x0"


def test_the_saved_line_is_parsed_and_handed_back_as_the_executor_reads_it():
    saved = parse_line(f"junk {SAVED_LINE}")
    assert saved == Saved(0, 0, 0x5, (0, 0, 0, 0, 0xC001, 0, 0))
    assert saved.argument() == "0:0:0x5:0x0:0x0:0x0:0x0:0xc001:0x0:0x0"
    plan = pci_plan()
    command = shlex.split(executor_command([plan], resume=(0, 64), pci_saved=saved))
    assert command[command.index("--pci-saved") + 1] == saved.argument()
    with pytest.raises(ValueError, match="pci_saved is for a resume into that range"):
        executor_command([plan], pci_saved=saved)


def test_the_host_executor_checks_the_saved_header_it_is_handed(executor):
    import subprocess

    def run(*options: str) -> str:
        argv = [
            str(executor),
            "--dry-run",
            *options,
            "--seed",
            "1",
            "--fuzz-count",
            "0",
            f"pci:{UHCI:#x}-{UHCI + 3:#x}/4",
        ]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.splitlines()[-1]

    assert run("--pci-saved", "0:0:0x5:0x0:0x0:0x0:0x0:0xc001:0x0:0x0") == "@DONE 2"
    assert "7 register value(s) for header type 0" in run("--pci-saved", "0:0:0x5:0x0")
    assert "not with --no-pci-restore" in run("--no-pci-restore", "--pci-saved", "0:2:0x5")


class HangingOnceSession:
    """First command: enters the pci range, saves its header, then hangs; second: runs to the end."""

    def __init__(self, plan: RangePlan):
        self.plan, self.commands, self.pending = plan, [], ""

    def sendline(self, command: str) -> None:
        self.commands.append(command)
        n = self.plan.op_count
        if len(self.commands) == 1:
            self.pending = f"@IOFUZZ READY 1 1\n@P 0 0\n{SAVED_LINE}\n@P 0 64\n"
        else:
            self.pending = f"@IOFUZZ READY 1 1\n@P 0 128\n{SAVED_LINE}\n@P 0 {n}\n@DONE {n - 128}\n"

    def read_nonblocking(self, internal_timeout=None, timeout=None) -> str:
        data, self.pending = self.pending, ""
        return data

    def close(self) -> None:
        pass


class AnsweringGuest(AliveGuest):
    def __init__(self, session):
        self.session = session

    def login(self, timeout=None):
        return self.session


def test_a_resume_into_a_pci_range_hands_back_the_header_saved_when_it_was_entered(tmp_path):
    plan = pci_plan()
    session = HangingOnceSession(plan)
    with TraceWriter(tmp_path / "trace", {"seed": 1}, mark_interval=0) as trace:
        config = CampaignConfig(report_every=64, hang_timeout=0.3, relogin_timeout=0.1, done_linger=0.0)
        result = Campaign(AnsweringGuest(session), [plan], trace, config, session=session).run()
    assert [f.kind for f in result.findings] == ["hang"]
    first, second = (shlex.split(c) for c in session.commands)
    assert "--pci-saved" not in first
    assert second[second.index("--resume") + 1] == "0:128"
    assert second[second.index("--pci-saved") + 1] == "0:0:0x5:0x0:0x0:0x0:0x0:0xc001:0x0:0x0"
