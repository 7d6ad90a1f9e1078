"""Crash signatures from QEMU's stderr: what counts, what is ignored, what compares equal."""

from __future__ import annotations

import signal

import pytest

from avocado_iofuzz.repro.signature import (
    HANG,
    KIND_CRASH,
    NO_CRASH,
    CrashSignature,
    crash_signature,
    group_by_signature,
    signature_of_exit,
)
from avocado_iofuzz.vm.interface import QemuExit

GLIBC = "qemu-system-x86_64: ../../hw/ide/core.c:{line}: ide_dma_cb: Assertion `prep_size >= 0' failed.\n"
GLIB = (
    "**\nERROR:../hw/scsi/esp.c:{line}:esp_do_dma: assertion failed: (len > 0)\n"
    "Bail out! ERROR:../hw/scsi/esp.c:{line}:esp_do_dma: assertion failed: (len > 0)\n"
)
ASAN = """=================================================================
==12345==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x602000001234 at pc 0x55d1 bp 0x7ffd sp 0x7ffc
WRITE of size 1 at 0x602000001234 thread T0
    #0 0x55d1c0de in gus_write_dma ../hw/audio/gusemu_hal.c:{line}:9
    #1 0x55d1c0df in GUS_read_DMA ../hw/audio/gus.c:201:5
SUMMARY: AddressSanitizer: heap-buffer-overflow ../hw/audio/gusemu_hal.c:{line}:9 in gus_write_dma
"""
HW_ERROR = (
    "qemu: hardware error: EDU: DMA range 0x{a:016x}-0x{b:016x} out of bounds (0x40000-0x40fff)!\nCPU #0:\nEAX=0\n"
)


def test_glibc_assertion_gives_path_function_expression_and_location():
    signature = crash_signature(None, 6, GLIBC.format(line=939))
    assert signature.kind == KIND_CRASH
    assert signature.message == "hw/ide/core.c: ide_dma_cb: Assertion `prep_size >= 0' failed."
    assert signature.location == "hw/ide/core.c:939"
    assert "SIGABRT" in signature.describe() and "ide_dma_cb" in signature.describe()


def test_the_same_assertion_moved_by_a_rebuild_keeps_its_key():
    one = crash_signature(None, 6, GLIBC.format(line=939))
    other = crash_signature(None, 6, "noise before\n" + GLIBC.format(line=951))
    assert one.key == other.key and one.same_bug(other)
    assert one.location != other.location


def test_glib_assertion_and_its_bail_out_line_are_one_message():
    signature = crash_signature(None, 6, GLIB.format(line=270))
    assert signature.message == "hw/scsi/esp.c: esp_do_dma: assertion failed: (len > 0)"
    assert signature.location == "hw/scsi/esp.c:270"


def test_sanitizer_report_names_bug_kind_and_first_frame():
    signature = crash_signature(1, None, ASAN.format(line=77))
    assert signature.message == "AddressSanitizer: heap-buffer-overflow"
    assert signature.frame == "gus_write_dma hw/audio/gusemu_hal.c"
    assert signature.same_bug(crash_signature(1, None, ASAN.format(line=80)))
    assert not signature.same_bug(crash_signature(1, None, ASAN.replace("gus_write_dma", "other").format(line=77)))


def test_hardware_error_values_do_not_split_one_bug_into_many():
    one = crash_signature(None, 6, HW_ERROR.format(a=1, b=0x10))
    other = crash_signature(None, 6, HW_ERROR.format(a=0x56AEBDC6, b=0x14CAD1A49))
    assert one.message != other.message  # people see the values
    assert one.key == other.key  # grouping and minimization do not


def test_signal_and_status_are_part_of_the_key():
    text = GLIBC.format(line=1)
    assert crash_signature(None, 6, text).key != crash_signature(None, 11, text).key
    assert crash_signature(0, None, "").key != crash_signature(1, None, "").key


@pytest.mark.parametrize(
    "noise",
    [
        "qemu-system-x86_64: GLib: g_timer_elapsed: assertion 'timer != NULL' failed",
        "qemu-system-x86_64: -chardev socket,id=s: info: QEMU waiting for connection on: disconnected:unix:/x",
        "qemu-system-x86_64: warning: host doesn't support requested feature",
    ],
)
def test_non_fatal_lines_are_no_crash_message(noise):
    assert crash_signature(0, None, noise + "\n").message == ""


def test_qemu_error_line_is_the_fallback_message():
    signature = crash_signature(1, None, "qemu-system-x86_64: failed to set up device 42: Invalid argument\n")
    assert signature.message == "failed to set up device 42: Invalid argument"
    assert "N" in signature.key  # the number is not part of the comparison


def test_exactly_one_of_status_and_signal():
    with pytest.raises(ValueError, match="exactly one"):
        crash_signature(1, 6, "")
    with pytest.raises(ValueError, match="exactly one"):
        crash_signature(None, None, "")


def test_signature_of_a_qemu_exit_and_of_its_dict_agree():
    exit_info = QemuExit(status=None, signal=6, stderr_tail=GLIBC.format(line=3))
    assert signature_of_exit(exit_info) == signature_of_exit(
        {"status": None, "signal": 6, "stderr_tail": GLIBC.format(line=3)}
    )


def test_lost_exit_status_is_still_a_crash():
    signature = signature_of_exit({"status": None, "signal": None, "stderr_tail": ""})
    assert signature.kind == KIND_CRASH and signature.is_failure


def test_hang_and_nothing_are_signatures_of_their_own():
    assert HANG.key == "hang" and HANG.is_failure
    assert NO_CRASH.key == "none" and not NO_CRASH.is_failure


def test_round_trip_through_dict():
    signature = crash_signature(None, 6, GLIBC.format(line=5))
    assert CrashSignature.from_dict(signature.as_dict()) == signature


def test_findings_with_the_same_signature_are_grouped():
    abort = crash_signature(None, 6, GLIBC.format(line=1)).as_dict()
    moved = crash_signature(None, 6, GLIBC.format(line=2)).as_dict()
    segv = crash_signature(None, 11, "").as_dict()
    groups = group_by_signature([{"signature": abort}, {"signature": segv}, {"signature": moved}])
    assert [(g["count"], g["members"]) for g in groups] == [(2, [0, 2]), (1, [1])]


def test_shards_crashing_on_the_same_assertion_are_one_group_in_the_merged_summary():
    from avocado_iofuzz.results.report import merge_summaries

    def shard(line: int, sig: int = 6) -> dict:
        crash = {"signature": "x", "detail": "", "reproducer": {}}
        crash["crash_signature"] = crash_signature(None, sig, GLIBC.format(line=line)).as_dict()
        return {"seed": 1, "fuzz_count": 1, "accelerator": "tcg", "ranges": [], "findings": [], "crashes": [crash]}

    merged = merge_summaries([shard(939), shard(951), shard(939, sig=11)])
    assert [(g["count"], g["members"]) for g in merged["crash_groups"]] == [(2, [0, 1]), (1, [2])]


# the tail of one outside kill in two runs: aexpect's temp script and the PID differ
KILLED_TAILS = [
    "qemu-system-x86_64: warning: nic e1000e.0 has no peer\n"
    f"/tmp/aexpect_{token}/aexpect-{script}.sh: line 1: {pid} Killed  /usr/bin/qemu-system-x86_64 -S -name 'vm1'\n"
    for token, script, pid in (("R9jmX2Bi", "roql2nvg", 30990), ("Ab12Cd34", "xyzw1234", 4711))
]


@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGTERM])
def test_an_outside_kill_has_one_key_across_runs_and_says_where_it_came_from(signal_number):
    first, second = (crash_signature(None, signal_number, tail) for tail in KILLED_TAILS)
    assert first.key == second.key == f"crash | signal {int(signal_number)}"
    assert first.from_outside and second.from_outside


def test_an_abort_is_not_from_outside_and_its_message_key_has_no_host_path():
    assert not crash_signature(None, signal.SIGABRT, KILLED_TAILS[0]).from_outside
    first, second = (
        crash_signature(1, None, f"qemu-system-x86_64: cannot open {p}: busy\n") for p in ("/tmp/a1/x", "/run/b2/y")
    )
    assert first.key == second.key and "PATH" in first.key


@pytest.mark.parametrize(
    "line",
    [
        "(qemu-system-x86_64:1234): Spice-CRITICAL **: 12:00:01.234: ../server/red-worker.cpp:367:handle_dev_x: "
        "condition `ok' failed",
        "Spice: ../server/red-worker.cpp:367:handle_dev_x: condition `ok' failed",
    ],
)
def test_spice_condition_failures_carry_their_location(line):
    signature = crash_signature(None, signal.SIGABRT, line + "\n")
    assert signature.location == "server/red-worker.cpp:367"
    assert signature.message == "server/red-worker.cpp: handle_dev_x: condition `ok' failed"
    assert signature.key == "crash | signal 6 | server/red-worker.cpp: handle_dev_x: condition `ok' failed"


def test_a_spice_message_with_run_time_values_keeps_one_key():
    surfaces = (
        crash_signature(
            None, signal.SIGABRT,
            f"Spice-CRITICAL **: 1:2:3.4: ../server/display-channel.cpp:2356:display_channel_validate_surface: "
            f"surface {n} is NULL\n",
        )
        for n in (48, 7)
    )  # fmt: skip
    first, second = surfaces
    assert first.location == "server/display-channel.cpp:2356" and first.key == second.key


def test_a_hardware_error_cut_off_by_its_register_dump_stays_in_the_tail():
    from avocado_iofuzz.vm.interface import stderr_tail

    output = "qemu: hardware error: EDU: DMA range 0x0-0x0 out of bounds\n" + "RAX=0000 RBX=0000\n" * 60
    tail = stderr_tail(output, output[-200:])
    assert crash_signature(None, signal.SIGABRT, tail).message.startswith("hardware error: EDU: DMA range")
    assert stderr_tail("x\nshort tail\n", "short tail\n") == "short tail\n"


def test_spice_warnings_before_the_abort_are_not_its_signature():
    # the stderr of the qxl-vga abort of the q35 findings run (QEMU 7.2.22): two SPICE conditions
    # logged as warnings, QEMU's own notes, then the CRITICAL condition that aborts
    stderr = (
        "qemu-system-x86_64: warning: Spice: ../server/red-worker.cpp:389:dev_create_primary_surface: "
        "condition `surface.height != 0' failed\n"
        "qemu-system-x86_64: warning: Spice: ../server/red-worker.cpp:396:dev_create_primary_surface: "
        "wrong primary surface creation request\n"
        "qxl_render_resize: unhandled format: 0\n"
        "qxl_send_events: spice-server bug: guest stopped, ignoring\n"
        "qemu-system-x86_64: Spice: ../server/red-worker.cpp:367:handle_dev_destroy_surface_wait: "
        "condition `msg->surface_id == 0' failed\n"
    )
    signature = crash_signature(None, signal.SIGABRT, stderr)
    assert signature.location == "server/red-worker.cpp:367"
    assert signature.message == (
        "server/red-worker.cpp: handle_dev_destroy_surface_wait: condition `msg->surface_id == 0' failed"
    )
    # with the warnings only, no SPICE line is the fatal message
    warnings_only = "".join(stderr.splitlines(keepends=True)[:2])
    assert crash_signature(None, signal.SIGABRT, warnings_only).message == ""


def test_a_segfault_is_known_by_its_signal_not_by_the_warning_printed_before_it():
    """QEMU 7.2's AHCI row: the run's last line and its replay's differ, the SIGSEGV is the same."""
    run = "qemu-system-x86_64: ahci: PRDT length for NCQ command (0x400) is smaller than the requested size (0x1e800)\n"
    replay = "qemu-system-x86_64: AHCI: Failed to start DMA engine: bad command list buffer address\n"
    first, second = (crash_signature(None, signal.SIGSEGV, tail) for tail in (run, replay))
    assert first.message == second.message == "" and first.key == second.key == f"crash | signal {int(signal.SIGSEGV)}"
    assert not first.from_outside  # a fault of QEMU's own, not a kill
    # a sanitizer's report still names the bug
    asan = (
        "==1==ERROR: AddressSanitizer: SEGV on unknown address 0x000000000000\n"
        "    #0 0x55 in ahci_foo ../hw/ide/ahci.c:12\n"
    )
    assert crash_signature(None, signal.SIGSEGV, asan).message != ""
