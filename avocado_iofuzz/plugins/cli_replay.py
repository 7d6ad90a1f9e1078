"""``avocado iofuzz``: replay, triage and export of iofuzz findings from the command line.

``avocado iofuzz replay TRACE``
    runs the trace's plans again in a fresh guest of the recorded machine
    (command line from the trace header, current build of its guest) and
    says whether the finding (crash signature or hang) comes back.
    ``--qtest``: replay the finding's ops under ``-qtest`` instead, no guest.
    ``--minimize``: the whole triage pipeline (qtest replay, in-guest
    fallback, ddmin, simplification) and the reproducer files.
``avocado iofuzz replay SCRIPT.qtest --machine-from TRACE`` (or ``--qemu-args "ARGS"``)
    runs a reproducer (qtest script) on the trace's machine (or on the
    machine ARGS give): under qtest, or in a guest with ``--in-guest``
    (traces only). ``--minimize`` minimizes the script: same signature,
    smallest script, reproducer files in ``--output``.
``avocado iofuzz export TRACE``
    writes the finding's window (or its range, or everything since the
    devices' last reset) as a qtest script, PCI setup in front.

Exit status: 0 reproduced (export: written), 1 not reproduced, 4 bad input
or a replay that could not run; the message names what is wrong.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from avocado.core import exit_codes
from avocado.core.output import LOG_UI
from avocado.core.plugin_interfaces import CLICmd

COMMAND = "iofuzz"


def _add_finding_options(parser: Any) -> None:
    parser.add_argument(
        "--finding", dest="iofuzz_finding", choices=("crash", "hang", "reboot"), default=None,
        help="which finding of the trace to reproduce (default: the last one)",
    )  # fmt: skip
    parser.add_argument(
        "--occurrence", dest="iofuzz_occurrence", type=int, default=None, metavar="N",
        help="the N-th finding (of --finding's kind, if given) in the trace, 1 for the first, -1 for the last "
        "(default); a run that survived several hangs records each one",
    )  # fmt: skip
    parser.add_argument("--qemu", dest="iofuzz_qemu", default=None, help="QEMU binary (default: the recorded one)")


class IofuzzCLI(CLICmd):
    name = COMMAND
    description = "Replay, minimize and export iofuzz findings (traces and qtest reproducers)"

    def configure(self, parser: Any) -> None:
        parser = super().configure(parser)
        commands = parser.add_subparsers(dest="iofuzz_subcommand", metavar="sub-command")
        commands.required = True

        replay = commands.add_parser("replay", help="replay a trace or a qtest reproducer and say if it reproduces")
        replay.add_argument("iofuzz_path", metavar="TRACE_OR_SCRIPT", help="trace.iofuzz, or a .qtest reproducer")
        mode = replay.add_mutually_exclusive_group()
        mode.add_argument("--qtest", dest="iofuzz_qtest", action="store_true", help="replay under -qtest, no guest")
        mode.add_argument(
            "--minimize", dest="iofuzz_minimize", action="store_true",
            help="triage: qtest replay (in-guest fallback), ddmin, simplify, reproducer files",
        )  # fmt: skip
        mode.add_argument(
            "--in-guest", dest="iofuzz_in_guest", action="store_true",
            help="(qtest scripts) run the script in a guest of the trace's machine instead of under -qtest",
        )  # fmt: skip
        replay.add_argument(
            "--machine-from", dest="iofuzz_machine_from", default=None, metavar="TRACE",
            help="(qtest scripts) the trace whose machine and devices to replay on",
        )  # fmt: skip
        replay.add_argument(
            "--qemu-args", dest="iofuzz_qemu_args", default=None, metavar="ARGS",
            help='(qtest scripts) the machine and device args, as a reproducer line carries them '
            '(e.g. "-machine q35 -device qxl-vga"); instead of --machine-from',
        )  # fmt: skip
        replay.add_argument("--output", dest="iofuzz_output", default=None, help="directory for the results")
        _add_finding_options(replay)
        replay.add_argument("--budget", dest="iofuzz_budget", type=float, default=300.0, help="qtest minimization, s")
        replay.add_argument(
            "--guest-budget", dest="iofuzz_guest_budget", type=float, default=900.0, help="in-guest replays, seconds"
        )
        replay.add_argument(
            "--hang-timeout", dest="iofuzz_hang_timeout", type=float, default=20.0,
            help="in a guest: seconds without progress that make a hang",
        )  # fmt: skip
        replay.add_argument(
            "--no-guest-fallback", dest="iofuzz_no_guest", action="store_true",
            help="with --minimize: never boot a guest, qtest replays only",
        )  # fmt: skip
        replay.add_argument(
            "--outside-kills", dest="iofuzz_outside_kills", action="store_true",
            help="with --minimize: triage a QEMU killed by another process's signal too (no fatal message)",
        )  # fmt: skip
        replay.add_argument(
            "--no-qtest", dest="iofuzz_no_qtest", action="store_true",
            help="with --minimize: in-guest replays only (for findings qtest cannot show, or shows wrongly)",
        )  # fmt: skip

        export = commands.add_parser("export", help="write a trace's finding as a qtest script")
        export.add_argument("iofuzz_path", metavar="TRACE")
        export.add_argument(
            "--part", dest="iofuzz_part", choices=("window", "range", "since-reset"), default="window",
            help="the finding's window (default), its range's history, or everything since the last reset",
        )  # fmt: skip
        export.add_argument("--output", dest="iofuzz_output", default=None, help="file to write (default: stdout)")
        _add_finding_options(export)

    def run(self, config: dict[str, Any]) -> int:
        from avocado_iofuzz.repro.cli import CliError, export_command, replay_command

        _log_to_ui()
        try:
            if config.get("iofuzz_subcommand") == "export":
                return export_command(config, LOG_UI.info)
            reproduced = replay_command(config, LOG_UI.info)
        except CliError as err:
            LOG_UI.error("avocado iofuzz: %s", err)
            return exit_codes.AVOCADO_FAIL
        return exit_codes.AVOCADO_ALL_OK if reproduced else exit_codes.AVOCADO_TESTS_FAIL


def _log_to_ui() -> None:
    """Show the triage stages' progress (logged under avocado.test.iofuzz) on the terminal."""
    logger = logging.getLogger("avocado.test.iofuzz")
    if not any(getattr(h, "_iofuzz_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._iofuzz_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
