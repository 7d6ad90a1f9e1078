"""Replay a hang in a guest; when the executor stops, ask QEMU over QMP whether its main loop still answers.

The q35 variant of docs/results/hang-triage-2026-12-06/guestqmp.py: one QMP command at a time (a
command that gets no answer in 60 s ends the questions, so no second one races it on the socket),
six rounds 2 s apart, each timed."""

import sys
import threading
import time
from pathlib import Path

from avocado_iofuzz.repro.cli import recorded_guest
from avocado_iofuzz.repro.extract import extract
from avocado_iofuzz.repro.guest_replay import GuestReplayer, regenerating_command

trace, occ, idx, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
ex = extract(trace, kind="hang", occurrence=occ)
cand = ex.candidates[idx]
print("finding:", ex.finding.describe(), "candidate", cand.name, len(cand.ops), cand.spans, flush=True)


def ask(vm, cmd, **args):
    box = {}

    def run():
        try:
            box["r"] = vm.qmp(cmd, **args)
        except Exception as err:
            box["r"] = f"error: {err}"

    t0 = time.monotonic()
    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(60)
    return (f"{time.monotonic() - t0:.2f}s", box.get("r", "NO ANSWER in 60 s"))


with recorded_guest(ex.header, out / "guest") as vm:
    rep = GuestReplayer(vm, hang_timeout=20.0)
    cmd = regenerating_command(ex.plans, cand.spans, rep.executor, rep.report_every)
    print("command:", cmd, flush=True)
    # QEMU's own trace of the lsi's SCRIPTS timer and block moves, switched on over QMP before the ops
    vm.restart()
    for event in ("lsi_scripts_timer_*", "lsi_memcpy", "lsi_execute_script_stop"):
        print("trace on:", event, vm.qmp("trace-event-set-state", name=event, enable=True), flush=True)
    o = rep.run_command(cmd, len(cand.ops), fresh=False)
    print("outcome:", o, flush=True)
    if o.signature.kind == "hang":
        # which QEMU thread is busy where, while QMP may not answer: gdb, bounded, QEMU resumed after
        import subprocess

        gdb = ["timeout", "90", "gdb", "-p", str(vm.pid), "-batch", "-ex", "thread apply all bt 12"]
        t0 = time.monotonic()
        bt = subprocess.run(gdb, capture_output=True, text=True, check=False)
        print(f"gdb ({time.monotonic() - t0:.1f}s):", flush=True)
        print("\n".join(row for row in bt.stdout.splitlines() if row.startswith(("#", "Thread"))), flush=True)
    for _ in range(6):
        status = ask(vm, "query-status")
        print("query-status:", status, flush=True)
        if status[1] == "NO ANSWER in 60 s":
            break
        r = ask(vm, "human-monitor-command", **{"command-line": "info registers"})
        print("info registers:", str(r)[:400].replace("\\n", " | "), flush=True)
        time.sleep(2)
    print("alive:", vm.is_alive(), flush=True)
